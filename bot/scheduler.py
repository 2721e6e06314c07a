"""The scheduler: reminders and heartbeats fired from the database, with APScheduler's asyncio
scheduler as the clock.

Nothing is an APScheduler job per agent or per reminder: reminders and heartbeat times live in
membot's own tables (storage/reminders.py, storage/heartbeats.py) with indexed due times, and a
sweep reads a bounded batch of what is due, in due order. Two APScheduler jobs start a sweep:
a date job armed at the earliest time due (re-armed after each sweep and whenever a tool of
this process changes the schedule), and a one-second tick that sweeps when the senders
registered in this process change and every `sweep_seconds` (to find what another process
wrote). The sweeps run in one task, so a burst of arm requests costs one sweep.

A process fires only what it can deliver: rows whose platform (and channel, where a sender is
limited to some) has a sender registered here. Each due row is claimed with a conditional
update inside the transaction that puts its event in the inbox (`Runtime.wake`'s `claim`), so
with two processes on one file it fires exactly once, and a crash after the claim leaves an
inbox item that the next start answers (`Runtime.recover`). An agent that is busy is tried
again a second later (its own lock would only queue a second turn behind the first).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import proactive, reminder_tools
from bot.delivery import conversation_of
from bot.events import Conversation, Event, Kind, Person
from bot.runtime import Runtime
from storage import agents, conversations, heartbeats, outbox, reminders
from storage.clock import from_iso, to_iso
from storage.db import Connection
from storage.heartbeats import Heartbeat
from storage.reminders import Reminder

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
SWEEP_SECONDS = 30.0
BATCH = 1000  # due rows read per platform and kind in one sweep
CONCURRENCY = 64  # wake-ups running at once (the rest wait, unclaimed; more only crowds the loop)
RETRY = timedelta(seconds=1)  # a busy agent's heartbeat or reminder is tried again this soon


def _identity(conn: Connection, agent_id: int, platform: str) -> Person | None:
    row = conn.execute(
        "SELECT platform_user_id, display_name FROM identities WHERE agent_id = ? AND platform = ? "
        "ORDER BY created_at LIMIT 1",
        (agent_id, platform),
    ).fetchone()
    return Person(platform, str(row[0]), str(row[1])) if row else None


class Scheduler:
    def __init__(
        self,
        runtime: Runtime,
        now: Callable[[], datetime] | None = None,
        sweep_seconds: float = SWEEP_SECONDS,
        batch: int = BATCH,
        concurrency: int = CONCURRENCY,
        seed: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.now = now or (lambda: datetime.now(UTC))
        if self.settings.heartbeat_minutes > 0:  # a new agent's first heartbeat is set at a sweep
            sweep_seconds = min(sweep_seconds, self.settings.heartbeat_minutes * 30)
        self.sweep_seconds = sweep_seconds
        self.batch = batch
        self.rng = random.Random(seed)
        self._slots = asyncio.Semaphore(concurrency)
        self._aps: AsyncIOScheduler | None = None
        self._armed: datetime | None = None
        self._wanted = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._firing: dict[str, asyncio.Task[None]] = {}
        self._served: dict[str, frozenset[str] | None] = {}
        self._last_sweep = 0.0
        self.fired = 0  # wake-ups that ran in this process (for tests and the benchmark)
        self.sweeps = 0  # sweeps finished

    async def start(self) -> None:
        """Start the clock and sweep now (what came due while no process ran fires first)."""
        if self._aps is not None:
            return
        self._aps = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        self._aps.add_job(
            self._tick, "interval", seconds=TICK_SECONDS, id="tick", coalesce=True, misfire_grace_time=None
        )
        self._aps.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="scheduler-sweeps")
        reminder_tools.listeners.append(self.arm)
        self._wanted.set()

    async def close(self) -> None:
        """Stop the clock; wake-ups under way get a few seconds, then stay for the next start."""
        if self.arm in reminder_tools.listeners:
            reminder_tools.listeners.remove(self.arm)
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.idle(min(5.0, self.settings.shutdown_grace))
        for task in list(self._firing.values()):
            task.cancel()
        await asyncio.gather(*self._firing.values(), return_exceptions=True)

    async def idle(self, seconds: float | None = None) -> bool:
        """Wait until the wake-ups started so far have ended (False after `seconds`)."""
        waiting = list(self._firing.values())
        if not waiting:
            return True
        _, pending = await asyncio.wait(waiting, timeout=seconds)
        return not pending

    def arm(self, at: datetime) -> None:
        """Sweep at `at` (unless a sweep is already armed sooner)."""
        if self._aps is None:
            return
        if self._armed is not None and self._armed <= at and self._aps.get_job("due") is not None:
            return
        self._armed = at
        self._aps.add_job(
            self._due, "date", run_date=at, id="due", replace_existing=True, misfire_grace_time=None
        )

    async def _due(self) -> None:
        self._armed = None
        self._wanted.set()

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        served = self.runtime.delivery.served()
        if served != self._served or loop.time() - self._last_sweep >= self.sweep_seconds:
            self._wanted.set()

    async def _sweep_forever(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.sweep()
            except Exception as exc:  # a sweep that fails is tried again at the next tick
                log.error("scheduler: sweep failed: %s", exc, exc_info=not isinstance(exc, OSError))

    async def sweep(self) -> int:
        """Fire what is due and this process can deliver; arm the next sweep. How many wake-ups
        were started."""
        self._last_sweep = asyncio.get_running_loop().time()
        self._served = served = self.runtime.delivery.served()
        if self.runtime.stopping or not served:
            return 0
        now = self.now()
        at = to_iso(now)
        started, postponed, full = 0, False, False
        hearts = self.settings.heartbeat_minutes > 0
        for platform, channels in served.items():
            if hearts:
                await self._schedule_new(platform, channels, now)
            due: list[Reminder | Heartbeat] = list(
                await self.runtime.db.read(reminders.due, platform, channels, at, self.batch)
            )
            if hearts:
                due += await self.runtime.db.read(heartbeats.due, platform, channels, at, self.batch)
            full = full or len(due) >= self.batch
            for row in due:
                key = _key(row)
                if key in self._firing:
                    continue
                if self.runtime.locks.busy(row.agent_id):
                    postponed = True
                    continue
                job = self._reminder(row, now) if isinstance(row, Reminder) else self._heartbeat(row, now)
                self._start(key, job)
                started += 1
        await self._arm_next(served, now, postponed, full and started > 0)
        self.sweeps += 1
        return started

    async def _schedule_new(self, platform: str, channels: frozenset[str] | None, now: datetime) -> None:
        """Give a first heartbeat time to agents that have none (new, or after /quiet off)."""
        found = await self.runtime.db.read(heartbeats.unscheduled, platform, channels, self.batch)
        if found:
            times = [(to_iso(now + proactive.interval(self.settings, self.rng)), a) for a in found]
            await self.runtime.db.run(heartbeats.schedule, times)

    async def _arm_next(
        self, served: dict[str, frozenset[str] | None], now: datetime, postponed: bool, more: bool
    ) -> None:
        at = to_iso(now)
        candidates = [now] if more else []
        if postponed:
            candidates.append(now + RETRY)
        for platform, channels in served.items():
            found = [await self.runtime.db.read(reminders.next_due, platform, channels, at)]
            if self.settings.heartbeat_minutes > 0:
                found.append(await self.runtime.db.read(heartbeats.next_due, platform, channels, at))
            candidates += [from_iso(t) for t in found if t]
        if candidates:
            self.arm(min(candidates))

    def _start(self, key: str, job: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                async with self._slots:
                    await job
            except Exception:
                log.exception("scheduler: wake-up %s failed", key)
            finally:
                self._firing.pop(key, None)
                self._wanted.set()  # what waited behind it may be due

        self._firing[key] = asyncio.create_task(run(), name=f"scheduler-{key}")

    # reminders

    async def _reminder(self, reminder: Reminder, now: datetime) -> None:
        """Wake the agent with its due reminder; deliver the text itself if the agent sends none.
        One that came due longer ago than the grace window is marked missed (and the agent is
        told at its next heartbeat), never fired silently late nor dropped silently."""
        now = max(now, self.now())
        zone = proactive.zone_of(reminder.timezone)
        due = from_iso(reminder.due_at)
        following = None
        if reminder.recurrence:
            following = reminder_tools.next_time(reminder.recurrence, zone, max(now, due))
        next_iso = to_iso(following) if following else None
        if now - due > timedelta(hours=self.settings.reminder_grace_hours):
            if await self.runtime.db.run(
                self._miss, reminder, next_iso, proactive.missed_note(reminder, now)
            ):
                log.warning(
                    "reminder %d of agent %d missed: due %s, past the %.0f h grace window",
                    reminder.id,
                    reminder.agent_id,
                    reminder.due_at,
                    self.settings.reminder_grace_hours,
                )
            return
        row = await self.runtime.db.read(conversations.get, reminder.conversation_id)
        person = await self.runtime.db.read(_identity, reminder.agent_id, reminder.platform)
        if row is None or person is None:
            log.error("reminder %d: its conversation or person is gone; marking it missed", reminder.id)
            await self.runtime.db.run(reminders.miss, reminder, None)
            return
        conversation = conversation_of(row)
        event = Event(
            person,
            conversation,
            proactive.reminder_text(reminder, now),
            Kind.REMINDER,
            message_id=f"reminder:{reminder.id}:{reminder.due_at}",
            sent_at=now,
        )

        def claim(conn: Connection) -> bool:
            return reminders.claim(conn, reminder, to_iso(now), next_iso)

        turn = await self.runtime.wake(reminder.agent_id, event, claim)
        if turn.duplicate or not turn.stored:
            return  # another process took it, or it waits in the inbox for the next start
        self.fired += 1
        late = (now - due).total_seconds()
        log.info("reminder %d of agent %d fired (%.1f s after due)", reminder.id, reminder.agent_id, late)
        if not turn.replies:
            await self._deliver_text(reminder, conversation, person)

    def _miss(self, conn: Connection, reminder: Reminder, next_iso: str | None, note: str) -> bool:
        if not reminders.miss(conn, reminder, next_iso):
            return False
        heartbeats.add_note(conn, reminder.agent_id, note)
        return True

    async def _deliver_text(self, reminder: Reminder, conversation: Conversation, person: Person) -> None:
        """The agent sent nothing for its reminder: the reminder's own text goes out instead."""

        def write(conn: Connection) -> outbox.Entry:
            return outbox.add(
                conn,
                reminder.agent_id,
                reminder.conversation_id,
                conversation.platform,
                proactive.fallback_text(reminder),
                person.user_id,
            )

        entry = await self.runtime.db.run(write)
        self.runtime.delivery.dispatch([entry])
        log.info("reminder %d: the agent sent nothing, so its text was sent", reminder.id)

    # heartbeats

    async def _heartbeat(self, heartbeat: Heartbeat, now: datetime) -> None:
        """Wake the agent unprompted, unless a rule says skip (then only its time moves on). A
        silent heartbeat's turn leaves the context queue: silence costs no context later."""
        now = max(now, self.now())
        try:
            agent = await self.runtime.db.read(agents.get, heartbeat.agent_id)
        except Exception as exc:
            log.warning("heartbeat of agent %d: %s", heartbeat.agent_id, exc)
            return
        skipped = proactive.skip(self.settings, heartbeat, agent, now, self.rng)
        target = None if skipped else await self._target(heartbeat)
        if skipped is None and target is None:
            skipped = proactive.Skip(
                "no conversation to deliver to", now + proactive.interval(self.settings, self.rng)
            )
        if skipped is not None or target is None:
            assert skipped is not None
            next_at = to_iso(skipped.next_at) if skipped.next_at else None
            await self.runtime.db.run(heartbeats.move, heartbeat, next_at, skipped.idle)
            log.debug("heartbeat of agent %d skipped: %s", heartbeat.agent_id, skipped.reason)
            return
        person, conversation = target
        pending = await self.runtime.db.read(reminders.pending_for, agent.id, not conversation.private)
        event = Event(
            person,
            conversation,
            proactive.heartbeat_text(self.settings, heartbeat, agent, now, pending),
            Kind.HEARTBEAT,
            message_id=f"heartbeat:{agent.id}:{heartbeat.next_at}",
            sent_at=now,
        )
        next_at = to_iso(now + proactive.interval(self.settings, self.rng))

        def claim(conn: Connection) -> bool:
            return heartbeats.claim(conn, heartbeat, next_at)

        turn = await self.runtime.wake(agent.id, event, claim)
        if turn.duplicate or not turn.stored:
            return
        self.fired += 1
        log.info("heartbeat of agent %d: %d messages sent", agent.id, len(turn.replies))
        if not turn.replies:
            async with self.runtime.locks.hold(agent.id):
                await self.runtime.db.run(heartbeats.hide_turn, agent.id, event.source_key)

    async def _target(self, heartbeat: Heartbeat) -> tuple[Person, Conversation] | None:
        """Where a heartbeat's messages go: the person's latest private conversation on the
        platform they last used, or their DM there."""
        person = await self.runtime.db.read(_identity, heartbeat.agent_id, heartbeat.platform)
        if person is None:
            return None
        if heartbeat.conversation_id is not None:
            row = await self.runtime.db.read(conversations.get, heartbeat.conversation_id)
            if row is not None and row.platform == heartbeat.platform:
                return person, conversation_of(row)
        return person, Conversation.direct(heartbeat.platform, person.user_id)


def _key(row: Reminder | Heartbeat) -> str:
    if isinstance(row, Reminder):
        return f"reminder:{row.id}:{row.due_at}"
    return f"heartbeat:{row.agent_id}:{row.next_at}"
