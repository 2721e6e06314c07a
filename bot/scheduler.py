"""Placeholder: the scheduler issue replaces this module (heartbeats and reminders)."""

from __future__ import annotations

from bot.runtime import Runtime


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
