"""One lock per agent: an agent's turns run one at a time, whichever identity or entry point
(a message, the scheduler, a memory command) they come from; different agents run at once.
A lock lives only while someone holds or waits for it, so the table never grows past the agents
that are busy right now.

With `across` (PostgreSQL's advisory locks, storage/postgres.py) the lock also holds across
every process on the database: the process takes its own asyncio lock first, so it asks the
server once per agent at a time. `hold(..., wait=False)` does not queue behind another process:
the caller then stores its event first, so whoever holds the lock answers it in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol


class Across(Protocol):
    """A lock per agent shared by every process on the database."""

    async def acquire(self, agent_id: int) -> None: ...

    async def try_acquire(self, agent_id: int) -> bool: ...

    async def release(self, agent_id: int) -> None: ...


class AgentLocks:
    def __init__(self, across: Across | None = None) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._across = across

    @property
    def shared(self) -> bool:
        """Whether other processes take these locks too (another may have stored events to answer)."""
        return self._across is not None

    @asynccontextmanager
    async def hold(self, agent_id: int, wait: bool = True) -> AsyncIterator[bool]:
        """Hold the agent's lock (True); waiters get it in the order they asked. With `wait`
        False, False at once if another process holds it (this process's own lock is waited for)."""
        lock = self._enter(agent_id)
        try:
            async with lock:
                if self._across is None:
                    yield True
                elif not wait and not await self._across.try_acquire(agent_id):
                    yield False
                else:
                    if wait:
                        await self._across.acquire(agent_id)
                    try:
                        yield True
                    finally:
                        await self._across.release(agent_id)
        finally:
            self._leave(agent_id)

    @contextmanager
    def expecting(self, agent_id: int) -> Iterator[None]:
        """A turn of this agent will ask for the lock once its event is stored: until then too the
        agent is busy, so a later event does not take the lock first and overtake it."""
        release = self.reserve(agent_id)
        try:
            yield
        finally:
            release()

    def reserve(self, agent_id: int) -> Callable[[], None]:
        """`expecting` across tasks: the agent is busy until the returned call (once is enough)."""
        self._enter(agent_id)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._leave(agent_id)

        return release

    def _enter(self, agent_id: int) -> asyncio.Lock:
        lock, users = self._locks.get(agent_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[agent_id] = (lock, users + 1)
        return lock

    def _leave(self, agent_id: int) -> None:
        lock, users = self._locks[agent_id]
        if users <= 1:
            del self._locks[agent_id]
        else:
            self._locks[agent_id] = (lock, users - 1)

    def busy(self, agent_id: int) -> bool:
        """Whether a turn of this agent is running or waiting."""
        return agent_id in self._locks

    def __len__(self) -> int:
        return len(self._locks)
