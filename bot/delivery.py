"""Delivery: the outbox's messages handed to the platforms' senders, in order, once across processes.

An agent's message is in the outbox (storage/outbox.py) before anything is sent. `dispatch`
hands it to the sender its platform registered, at once; each conversation has one worker, so
its messages arrive in the order they were written. A send that fails is retried with backoff,
then marked failed with its cause; a `DeliveryError(permanent=True)` (no access, DMs closed) is
marked failed at once and logged.

Several processes may deliver from one database (PostgreSQL, or one SQLite file). Each
`Delivery` has a holder id of its own and claims a row before sending it, for a lease of
`lease` seconds, renewed before each retry: a row another process holds is left to it, and so is
a later message of a conversation whose earlier one another process holds (the order is kept).
Messages for a platform with no sender in this process stay pending and go out when one
registers: `register` claims and sends what is pending, and while any sender is registered a
sweep does so again every `sweep_seconds`, so what another process wrote without sending, or
held when it died, goes out once its lease ends: nothing stays claimed for ever. `close` gives
back the claims of what it did not send. What is marked sent is never sent again; a crash
between the platform taking a message and our mark (or a send that outlasts its lease) can
repeat it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.events import Conversation, DeliveryError, Outgoing, Sender, SenderClosed
from storage import conversations, outbox
from storage.clock import to_iso
from storage.db import Database
from storage.errors import StorageError

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)  # seconds before each retry; then the message is marked failed
LEASE = 120.0  # seconds a claim on a row lasts (renewed before each retry)
SWEEP_SECONDS = 30.0  # how often pending rows are claimed again while a sender is registered
BATCH = 500  # rows claimed by one sweep of one platform
SETTLE = 2.0  # seconds the end of a turn waits for its messages to go out


@dataclass(frozen=True)
class _Registered:
    sender: Sender
    channels: frozenset[str] | None  # only these channel ids (None: every channel of the platform)


def conversation_of(row: conversations.Row) -> Conversation:
    return Conversation(row.platform, row.channel_id, row.private, row.thread_id, row.name, row.place)


class Delivery:
    def __init__(
        self,
        db: Database,
        log_content: bool = False,
        backoff: Iterable[float] = BACKOFF,
        lease: float = LEASE,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.db = db
        self.log_content = log_content
        self.backoff = tuple(backoff)
        self.lease = lease
        self.sweep_seconds = sweep_seconds
        self.holder = secrets.token_hex(8)  # this process's name on the rows it claims
        self._senders: dict[str, _Registered] = {}
        self._queues: dict[int, deque[outbox.Entry]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._queued: set[int] = set()
        self._places: dict[int, Conversation] = {}
        self._platforms: set[str] = set()  # every platform served since the start (for close)
        self._sweeper: asyncio.Task[None] | None = None

    def register(
        self, platform: str, sender: Sender, channels: Collection[str] | None = None
    ) -> asyncio.Task[int]:
        """Deliver `platform`'s messages through `sender` from now on (only to `channels`, if
        given); what is pending for it is sent now, and swept again every `sweep_seconds`.
        Returns the task sending the pending ones."""
        self._senders[platform] = _Registered(sender, frozenset(channels) if channels is not None else None)
        self._platforms.add(platform)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="outbox-sweep")
        return asyncio.create_task(self.send_pending(platform))

    def unregister(self, platform: str) -> None:
        self._senders.pop(platform, None)
        if not self._senders and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def served(self) -> dict[str, frozenset[str] | None]:
        """What this process delivers: platform -> its channel ids (None: every channel of it)."""
        return {platform: registered.channels for platform, registered in self._senders.items()}

    def serves(self, platform: str, channel_id: str) -> bool:
        """Whether a message to this platform's channel would be delivered by this process."""
        registered = self._senders.get(platform)
        return registered is not None and (registered.channels is None or channel_id in registered.channels)

    def _lease(self) -> tuple[str, str]:
        """(now, when a claim made now ends), as stored."""
        now = datetime.now(UTC)
        return to_iso(now), to_iso(now + timedelta(seconds=self.lease))

    async def send_pending(self, platform: str) -> int:
        """Claim the pending messages of `platform` this process may send (no other live holder
        has them) and hand them over; how many were claimed."""
        registered = self._senders.get(platform)
        if registered is None:
            return 0
        now, until = self._lease()
        try:
            entries = await self.db.run(
                outbox.claim_pending, platform, self.holder, now, until, BATCH, registered.channels
            )
        except StorageError as exc:
            log.error("cannot claim the pending %s messages: %s", platform, exc)
            return 0
        self.dispatch(entries)
        return len(entries)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            for platform in list(self._senders):
                try:
                    found = await self.send_pending(platform)
                except Exception:  # the next sweep tries again
                    log.exception("outbox sweep of %s failed", platform)
                    continue
                if found:
                    log.info("outbox sweep: %d pending %s messages claimed", found, platform)

    def dispatch(self, entries: list[outbox.Entry]) -> None:
        """Start delivering these outbox entries (already on disk), each conversation in order."""
        for entry in entries:
            if entry.id in self._queued or entry.platform not in self._senders:
                continue
            self._queued.add(entry.id)
            self._queues.setdefault(entry.conversation_id, deque()).append(entry)
            if entry.conversation_id not in self._workers:
                task = asyncio.create_task(self._work(entry.conversation_id))
                self._workers[entry.conversation_id] = task

    async def _work(self, conversation_id: int) -> None:
        queue = self._queues[conversation_id]
        try:
            while queue:
                entry = queue[0]
                try:
                    await self._deliver(entry)
                except StorageError as exc:
                    log.error("outbox %d: cannot record the delivery: %s", entry.id, exc)
                finally:
                    queue.popleft()
                    self._queued.discard(entry.id)
        finally:
            del self._workers[conversation_id]
            if not queue:
                del self._queues[conversation_id]

    async def _conversation(self, conversation_id: int) -> Conversation | None:
        found = self._places.get(conversation_id)
        if found is None:
            row = await self.db.read(conversations.get, conversation_id)
            if row is None:
                return None
            found = self._places[conversation_id] = conversation_of(row)
        return found

    async def _claim(self, entry: outbox.Entry) -> bool:
        now, until = self._lease()
        return await self.db.run(outbox.claim, entry.agent_id, entry.id, self.holder, now, until)

    async def _release(self, entry: outbox.Entry) -> None:
        await self.db.run(outbox.release, entry.agent_id, entry.id, self.holder)

    async def _deliver(self, entry: outbox.Entry) -> None:
        registered = self._senders.get(entry.platform)
        conversation = await self._conversation(entry.conversation_id)
        if (
            registered is None
            or conversation is None
            or (registered.channels is not None and conversation.channel_id not in registered.channels)
        ):
            await self._release(entry)  # stays pending, for whichever process serves it
            return
        if not await self._claim(entry):
            log.info(
                "outbox %d: another process holds it (or an earlier message of its conversation)", entry.id
            )
            return
        message = Outgoing(
            entry.id,
            entry.agent_id,
            conversation,
            entry.text,
            entry.recipient,
            entry.reply_to,
            entry.attempts,
        )
        await self._send(entry, registered, message)

    async def _send(self, entry: outbox.Entry, registered: _Registered, message: Outgoing) -> None:
        """Send a claimed row, retrying with backoff (the claim renewed before each retry)."""
        for attempt, pause in enumerate((*self.backoff, None)):
            if attempt > 0 and not await self._claim(entry):
                log.info("outbox %d: another process took it over between retries", entry.id)
                return
            try:
                await registered.sender.send(message)
            except SenderClosed as exc:
                log.info("the %s sender closed (%s); outbox %d stays pending", entry.platform, exc, entry.id)
                await self._release(entry)
                if self._senders.get(entry.platform) is registered:
                    self.unregister(entry.platform)
                return
            except DeliveryError as exc:
                cause, permanent = str(exc), exc.permanent
            except Exception as exc:  # a sender bug must not stop delivery to everyone else
                log.exception("outbox %d: the %s sender failed", entry.id, entry.platform)
                cause, permanent = f"{type(exc).__name__}: {exc}", False
            else:
                await self.db.run(outbox.mark_sent, entry.agent_id, entry.id)
                log.info("outbox %d: delivered to %s (agent %d)", entry.id, entry.platform, entry.agent_id)
                if self.log_content:
                    log.info("outbox %d text: %s", entry.id, entry.text)
                return
            final = permanent or pause is None
            await self.db.run(outbox.mark_attempt, entry.agent_id, entry.id, cause, final)
            if final:
                log.error(
                    "outbox %d: not delivered to %s after %d attempts (%s): %s",
                    entry.id,
                    entry.platform,
                    attempt + 1,
                    "permanent" if permanent else "gave up",
                    cause,
                )
                return
            log.warning("outbox %d: send failed (%s); retrying in %.0f s", entry.id, cause, pause or 0)
            await asyncio.sleep(pause or 0)

    async def send_now(self, conversation: Conversation, recipient: str, text: str) -> None:
        """Send without the outbox: only for telling a person that their message could not be
        stored (the database itself is failing). Best effort; a failure is logged."""
        registered = self._senders.get(conversation.platform)
        if registered is None:
            return
        try:
            await registered.sender.send(Outgoing(0, 0, conversation, text, recipient))
        except Exception as exc:
            log.error(
                "could not tell %s user %s that their message was lost: %s",
                conversation.platform,
                recipient,
                exc,
            )

    async def turn_started(self, conversation: Conversation) -> None:
        await self._signal(conversation, started=True)

    async def turn_ended(self, conversation: Conversation) -> None:
        """Signalled once the messages handed over for `conversation` are out (waiting at most
        `SETTLE` s): a typing indicator stays until the reply shows, and a turn that returns has
        its replies delivered, as it had before claiming took a round trip to the database."""
        await self._settle(conversation)
        await self._signal(conversation, started=False)

    async def _settle(self, conversation: Conversation) -> None:
        where = (conversation.platform, conversation.channel_id, conversation.thread_id)
        waiting = []
        for conversation_id, task in self._workers.items():
            place = self._places.get(conversation_id)  # (unknown yet: its worker has not started)
            if place is None or (place.platform, place.channel_id, place.thread_id) == where:
                waiting.append(task)
        if waiting:
            await asyncio.wait(waiting, timeout=SETTLE)

    async def _signal(self, conversation: Conversation, started: bool) -> None:
        registered = self._senders.get(conversation.platform)
        if registered is None:
            return
        try:
            if started:
                await registered.sender.turn_started(conversation)
            else:
                await registered.sender.turn_ended(conversation)
        except Exception:
            log.exception("the %s sender's turn signal failed", conversation.platform)

    async def idle(self, seconds: float | None = None) -> bool:
        """Wait until every handed-over message is delivered or given up; False after `seconds`."""
        waiting = list(self._workers.values())
        if not waiting:
            return True
        _, pending = await asyncio.wait(waiting, timeout=seconds)
        return not pending

    async def close(self, seconds: float = 5.0) -> None:
        """Let deliveries under way finish for up to `seconds`; the rest stays pending on disk,
        its claims given back so another process may send it at once."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if not await self.idle(seconds):
            log.warning(
                "stopping with %d conversations still delivering; their messages stay pending",
                len(self._workers),
            )
        for task in list(self._workers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        platforms, self._platforms = sorted(self._platforms), set()  # (a second close: nothing)
        for platform in platforms:
            try:
                await self.db.run(outbox.release_all, platform, self.holder)
            except StorageError as exc:
                log.warning(
                    "could not give back the %s outbox claims (they end with their lease): %s", platform, exc
                )
