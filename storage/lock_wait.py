"""Waiting out another process's lock on the database: one `LockWait` per call.

Each try of a transaction lets SQLite's busy handler wait at most `TRY_MS` for the lock, so the
database thread is never held long; when a try still fails, `backoff` says how long to sleep
before the whole transaction is tried again (doubling up to `MAX_BACKOFF`). Past `limit`
seconds in all (MEMBOT_DB_LOCK_WAIT) it raises DatabaseLockedError. A lock shorter than
`QUIET_WAIT` is waited out silently; a longer one gets one warning when it passes that mark,
naming who holds the lock when /proc/locks says, and one when the call got through.
"""

from __future__ import annotations

import logging
import time

from storage.faults import lock_holder, locked_error

log = logging.getLogger(__name__)

TRY_MS = 250  # the busy timeout of one try
QUIET_WAIT = 5.0  # seconds of waiting before it is worth a warning
MAX_BACKOFF = 0.5


class Busy(Exception):
    """One try met another connection's lock; the caller waits and tries the transaction again."""

    def __init__(
        self, cause: Exception, most_tries: int | None = None, final: Exception | None = None
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.most_tries = most_tries  # None: until the wait is used up; else `final` after this many
        self.final = final


class LockWait:
    """One call's wait for another process's lock: each try's busy timeout, the back-off between
    tries, the deadline, and the two warnings (waiting, got through)."""

    def __init__(self, path: str, limit: float, busy_ms: int) -> None:
        self.path = path
        self.limit = limit
        self.most_ms = min(busy_ms, TRY_MS)
        self.began = time.monotonic()
        self.tries = 0
        self.delay = 0.05
        self.warned = False

    def waited(self) -> float:
        return time.monotonic() - self.began

    def busy_ms(self) -> int:
        """The busy timeout for the next try (never past the deadline)."""
        return max(0, min(self.most_ms, int((self.limit - self.waited()) * 1000)))

    def backoff(self, cause: Exception) -> float:
        """Seconds to sleep before the next try; DatabaseLockedError once the wait is used up."""
        waited = self.waited()
        self.tries += 1
        if waited >= self.limit:
            raise locked_error(self.path, waited) from cause
        if not self.warned and waited >= QUIET_WAIT:
            self.warned = True
            log.warning(
                "database %s is locked by %s; waited %.0f s, waiting up to %.0f s more (MEMBOT_DB_LOCK_WAIT)",
                self.path,
                lock_holder(self.path),
                waited,
                self.limit - waited,
            )
        delay = min(self.delay, self.limit - waited)
        self.delay = min(self.delay * 2, MAX_BACKOFF)
        return delay

    def pause(self, busy: Busy) -> float:
        """Seconds to sleep before trying `busy`'s transaction again; its `final` error once it
        has been tried `most_tries` times."""
        if busy.most_tries is not None and busy.final is not None and self.tries + 1 >= busy.most_tries:
            raise busy.final from busy.cause
        return self.backoff(busy.cause)

    def finished(self) -> None:
        if self.warned:
            log.warning(
                "database %s: got the lock after %.1f s (%d tries)", self.path, self.waited(), self.tries + 1
            )
