"""One lock per agent: an agent's turns run one at a time, whichever identity or entry point
(a message, the scheduler, a memory command) they come from; different agents run at once.
A lock lives only while someone holds or waits for it, so the table never grows past the agents
that are busy right now.

With `across` (PostgreSQL's advisory locks, storage/postgres.py) the lock also holds across
every process on the database: the process takes its own asyncio lock first, so it asks the
server once per agent at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol


class Across(Protocol):
    """A lock per agent shared by every process on the database."""

    async def acquire(self, agent_id: int) -> None: ...

    async def release(self, agent_id: int) -> None: ...


class AgentLocks:
    def __init__(self, across: Across | None = None) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._across = across

    @asynccontextmanager
    async def hold(self, agent_id: int) -> AsyncIterator[None]:
        """Hold the agent's lock; waiters get it in the order they asked."""
        lock, users = self._locks.get(agent_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[agent_id] = (lock, users + 1)
        try:
            async with lock:
                if self._across is None:
                    yield
                else:
                    await self._across.acquire(agent_id)
                    try:
                        yield
                    finally:
                        await self._across.release(agent_id)
        finally:
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
