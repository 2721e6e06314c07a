"""One lock per agent: an agent's turns run one at a time, whichever identity or entry point
(a message, the scheduler, a memory command) they come from; different agents run at once.
A lock lives only while someone holds or waits for it, so the table never grows past the agents
that are busy right now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AgentLocks:
    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, agent_id: int) -> AsyncIterator[None]:
        """Hold the agent's lock; waiters get it in the order they asked."""
        lock, users = self._locks.get(agent_id, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[agent_id] = (lock, users + 1)
        try:
            async with lock:
                yield
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
