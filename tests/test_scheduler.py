"""The scheduler in process, on a real database and a scripted model, with its clock in the test's
hands: `Scheduler(runtime, now=...)` and `sweep()` called directly (the timers are tested by the
process tests in tests/test_scheduler_process.py). What is checked is what the person receives
(the RecordingPlatform sender) and what is on disk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.events import Kind, Person
from bot.runtime import Runtime
from bot.scheduler import Scheduler
from storage import agents, conversations, heartbeats, lifecycle, reminders
from storage.clock import to_iso
from storage.reminders import Reminder
from tests.fake_openai import Answer, FakeOpenAI, say
from tests.platform import RecordingPlatform, dm, eventually

QUIET_NONE = {
    "MEMBOT_QUIET_HOURS": "none",
    "MEMBOT_ACTIVE_SKIP_MINUTES": "0",
    "MEMBOT_HEARTBEAT_MINUTES": "1",
}


def events_of(request: dict[str, Any]) -> str:
    last = request["messages"][-1]
    return str(last["content"]) if last["role"] == "user" else ""


def model(reminder: Any = None, heartbeat: Any = None) -> Any:
    """A model that greets people, answers reminder and heartbeat events as told (default: a
    composed reminder, a silent heartbeat), and stops after a tool result."""

    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        if request["messages"][-1]["role"] == "tool":
            return Answer(content="done")
        text = events_of(request)
        if "Reminder #" in text:
            return reminder(text) if reminder else say("Friendly nudge: " + text.split('"')[1])
        if "Heartbeat:" in text:
            return heartbeat(text) if heartbeat else Answer(content="nothing worth saying")
        return say("hi")

    return script


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


async def setup(runtime_for, fake_server, script: Any = None, **env: str):
    fake: FakeOpenAI = fake_server(script or model())
    runtime: Runtime = await runtime_for(fake, **{**QUIET_NONE, **env})
    platform = RecordingPlatform()
    await runtime.register_sender("chat", platform)
    await runtime.handle(dm("ann", "hello"))
    await runtime.delivery.idle(10)
    platform.sent.clear()
    agent = await runtime.find_agent("chat", "ann")
    assert agent is not None
    return fake, runtime, platform, agent.id


async def add_reminder(
    runtime: Runtime,
    agent_id: int,
    text: str,
    due: datetime,
    platform: str = "chat",
    recurrence: str | None = None,
    channel: str = "D-ann",
) -> Reminder:
    def add(conn: Any) -> Reminder:
        conversation = conversations.ensure(conn, platform, channel, "", True, "a DM")
        return reminders.add(
            conn, agent_id, conversation, platform, True, text, to_iso(due), recurrence, "UTC"
        )

    return await runtime.db.run(add)


async def state(runtime: Runtime, reminder_id: int) -> tuple[str, str, int]:
    def read(conn: Any) -> tuple[str, str, int]:
        row = conn.execute("SELECT state, due_at, fired_count FROM reminders WHERE id = ?", (reminder_id,))
        return tuple(row.fetchone())  # type: ignore[return-value]

    return await runtime.db.read(read)


async def sweep(scheduler: Scheduler) -> int:
    started = await scheduler.sweep()
    assert await scheduler.idle(20)
    return started


async def test_a_due_reminder_wakes_the_agent_who_composes_the_message(runtime_for, fake_server):
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server)
    clock = Clock()
    made = await add_reminder(runtime, agent_id, "water the plants", clock.at + timedelta(seconds=5))
    scheduler = Scheduler(runtime, now=clock)
    assert await sweep(scheduler) == 0  # not due yet
    clock.advance(seconds=6)
    assert await sweep(scheduler) == 1
    assert platform.texts == ["Friendly nudge: water the plants"]
    event = next(r for r in fake.agent_requests if "Reminder #" in events_of(r))
    assert "late" not in events_of(event)
    assert (await state(runtime, made.id))[0] == "fired"
    assert await sweep(scheduler) == 0 and len(platform.texts) == 1  # never twice


async def test_if_the_agent_sends_nothing_the_reminder_text_is_delivered(runtime_for, fake_server):
    script = model(reminder=lambda text: Answer(content="hmm, I'll stay quiet"))
    _, runtime, platform, agent_id = await setup(runtime_for, fake_server, script)
    clock = Clock()
    await add_reminder(runtime, agent_id, "take the cake out", clock.at - timedelta(seconds=1))
    await sweep(Scheduler(runtime, now=clock))
    await eventually(lambda: platform.texts == ["Reminder: take the cake out"])


async def test_a_recurring_reminder_stays_pending_at_its_next_time(runtime_for, fake_server):
    _, runtime, platform, agent_id = await setup(runtime_for, fake_server)
    clock = Clock()
    due = clock.at.replace(hour=9, minute=0, second=0, microsecond=0)
    clock.at = due + timedelta(seconds=2)
    made = await add_reminder(runtime, agent_id, "stand up", due, recurrence="0 9 * * *")
    await sweep(Scheduler(runtime, now=clock))
    assert platform.texts == ["Friendly nudge: stand up"]
    assert (await state(runtime, made.id)) == ("pending", to_iso(due + timedelta(days=1)), 1)


async def test_a_reminder_due_during_downtime_fires_once_and_says_it_is_late(runtime_for, fake_server):
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server)
    clock = Clock()
    await add_reminder(runtime, agent_id, "call mum", clock.at - timedelta(hours=2))
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    await sweep(scheduler)
    assert platform.texts == ["Friendly nudge: call mum"]
    [event] = [events_of(r) for r in fake.agent_requests if "Reminder #" in events_of(r)]
    assert "late by 2 h" in event


async def test_a_reminder_past_the_grace_window_is_missed_and_the_next_heartbeat_says_so(
    runtime_for, fake_server
):
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, MEMBOT_REMINDER_GRACE_HOURS="1")
    clock = Clock()
    made = await add_reminder(runtime, agent_id, "renew passport", clock.at - timedelta(hours=3))
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    assert platform.texts == []
    assert (await state(runtime, made.id))[0] == "missed"
    clock.advance(minutes=5)
    await sweep(scheduler)
    beats = [events_of(r) for r in fake.agent_requests if "Heartbeat:" in events_of(r)]
    assert len(beats) == 1 and "renew passport" in beats[0] and "not running" in beats[0]


async def test_two_runtimes_on_one_file_fire_each_reminder_exactly_once(runtime_for, fake_server):
    """Five people's reminders, both processes sweeping at once. (One agent's turns are serialised
    within a process only: two processes serving the same platform could run two turns of one
    agent at once, so each reminder here belongs to another person.)"""
    fake, first, platform_a, _ = await setup(runtime_for, fake_server)
    second: Runtime = await runtime_for(fake, **QUIET_NONE)
    platform_b = RecordingPlatform()
    await second.register_sender("chat", platform_b)
    clock = Clock()
    made = []
    for i in range(5):
        await first.handle(dm(f"p{i}", "hello"))
        person = await first.find_agent("chat", f"p{i}")
        assert person is not None
        made.append(
            await add_reminder(
                first, person.id, f"thing {i}", clock.at - timedelta(seconds=1), channel=f"D-p{i}"
            )
        )
    await first.delivery.idle(10)
    platform_a.sent.clear()
    a, b = Scheduler(first, now=clock), Scheduler(second, now=clock)
    for _ in range(3):
        await asyncio.gather(a.sweep(), b.sweep())
        await asyncio.gather(a.idle(20), b.idle(20))
    delivered = sorted(platform_a.texts + platform_b.texts)
    assert delivered == sorted(f"Friendly nudge: thing {i}" for i in range(5))
    assert a.fired + b.fired == 5
    assert [(await state(first, r.id))[0] for r in made] == ["fired"] * 5


async def test_a_reminder_for_a_platform_no_sender_serves_stays_pending(runtime_for, fake_server):
    _, runtime, platform, agent_id = await setup(runtime_for, fake_server)
    clock = Clock()
    made = await add_reminder(
        runtime, agent_id, "slack thing", clock.at - timedelta(seconds=1), platform="slack"
    )
    assert await sweep(Scheduler(runtime, now=clock)) == 0
    assert platform.texts == [] and (await state(runtime, made.id))[0] == "pending"


# heartbeats


def chatty(text: str) -> Answer:
    return say("just checking in")


async def heartbeat_row(runtime: Runtime, agent_id: int) -> heartbeats.Heartbeat:
    row = await runtime.db.read(heartbeats.get, agent_id)
    assert row is not None
    return row


async def test_a_heartbeat_wakes_the_agent_with_the_time_and_the_silence(runtime_for, fake_server):
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, model(heartbeat=chatty))
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock, seed=1)
    assert await sweep(scheduler) == 0  # the new agent gets its first time
    first = await heartbeat_row(runtime, agent_id)
    assert first.next_at is not None
    assert timedelta(seconds=53) <= datetime.fromisoformat(first.next_at) - clock.at <= timedelta(seconds=67)
    clock.advance(minutes=2)
    assert await sweep(scheduler) == 1
    assert platform.texts == ["just checking in"]
    [event] = [events_of(r) for r in fake.agent_requests if "Heartbeat:" in events_of(r)]
    assert "they last wrote 2 min ago" in event and "Pending reminders: none" in event
    assert "(UTC)" in event


async def test_missed_heartbeats_are_coalesced_into_one(runtime_for, fake_server):
    fake, runtime, _platform, _agent_id = await setup(
        runtime_for, fake_server, MEMBOT_MAX_UNPROMPTED_PER_DAY="9"
    )
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    clock.advance(hours=5)  # 300 intervals "missed" while down
    assert await sweep(scheduler) == 1
    assert await sweep(scheduler) == 0
    assert len([r for r in fake.agent_requests if "Heartbeat:" in events_of(r)]) == 1


async def test_the_daily_cap_limits_unprompted_messages_even_within_one_turn(runtime_for, fake_server):
    def twice(text: str) -> Answer:
        return Answer(tool_calls=[("send_message", {"message": "one"}), ("send_message", {"message": "two"})])

    fake, runtime, platform, _agent_id = await setup(
        runtime_for, fake_server, model(heartbeat=twice), MEMBOT_MAX_UNPROMPTED_PER_DAY="1"
    )
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    for _ in range(3):
        clock.advance(minutes=2)
        await sweep(scheduler)
    assert platform.texts == ["one"]
    beats = [r for r in fake.agent_requests if "Heartbeat:" in events_of(r)]
    assert len(beats) == 1  # the later ones were skipped: the day's message is used up


@pytest.mark.parametrize("rule", ["active", "quiet"])
async def test_no_heartbeat_while_the_person_is_active_or_in_quiet_hours(runtime_for, fake_server, rule):
    clock = Clock()
    hour = (clock.at + timedelta(minutes=2)).hour
    env = (
        {"MEMBOT_ACTIVE_SKIP_MINUTES": "30"}
        if rule == "active"
        else {"MEMBOT_QUIET_HOURS": f"{hour}-{(hour + 2) % 24}"}
    )
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, model(heartbeat=chatty), **env)
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    clock.advance(minutes=2)
    assert await sweep(scheduler) == 1  # due: looked at, and skipped
    assert platform.texts == []
    assert [r for r in fake.agent_requests if "Heartbeat:" in events_of(r)] == []
    row = await heartbeat_row(runtime, agent_id)
    assert row.next_at is not None and datetime.fromisoformat(row.next_at) > clock.at
    if rule == "quiet":  # moved to the end of the quiet hours
        assert datetime.fromisoformat(row.next_at).hour == (hour + 2) % 24


async def test_quiet_and_quiet_off_switch_heartbeats(runtime_for, fake_server):
    _fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, model(heartbeat=chatty))
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    ann = Person("chat", "ann", "Ann")
    assert "won't message you unprompted" in (await runtime.command(ann, "/quiet") or "")
    clock.advance(minutes=5)
    await sweep(scheduler)
    assert platform.texts == [] and (await heartbeat_row(runtime, agent_id)).next_at is None
    assert "on again" in (await runtime.command(ann, "/quiet off") or "")
    await sweep(scheduler)
    clock.advance(minutes=2)
    await sweep(scheduler)
    assert platform.texts == ["just checking in"]
    assert "/quiet" in (await runtime.command(ann, "/help") or "")


async def test_a_paused_agent_is_not_woken_until_the_pause_ends(runtime_for, fake_server):
    _fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, model(heartbeat=chatty))
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    await runtime.db.run(heartbeats.pause, agent_id, to_iso(clock.at + timedelta(minutes=30)))
    clock.advance(minutes=10)
    await sweep(scheduler)
    assert platform.texts == []
    clock.advance(minutes=25)
    await sweep(scheduler)
    assert platform.texts == ["just checking in"]


async def test_a_heartbeat_waits_while_a_turn_of_its_agent_runs_and_runs_after(runtime_for, fake_server):
    fake, runtime, platform, agent_id = await setup(runtime_for, fake_server, model(heartbeat=chatty))
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    clock.advance(minutes=2)
    async with runtime.locks.hold(agent_id):
        assert await scheduler.sweep() == 0  # postponed, not queued behind the turn
        assert [r for r in fake.agent_requests if "Heartbeat:" in events_of(r)] == []
    assert await sweep(scheduler) == 1
    assert platform.texts == ["just checking in"]


async def test_a_silent_heartbeat_leaves_the_context_queue(runtime_for, fake_server):
    fake, runtime, _platform, agent_id = await setup(runtime_for, fake_server)
    clock = Clock()
    scheduler = Scheduler(runtime, now=clock)
    await sweep(scheduler)
    for _ in range(3):
        clock.advance(minutes=2)
        await sweep(scheduler)
    assert len([r for r in fake.agent_requests if "Heartbeat:" in events_of(r)]) == 3

    def kinds(conn: Any) -> list[tuple[str, int]]:
        rows = conn.execute(
            "SELECT kind, in_context FROM messages WHERE agent_id = ? ORDER BY id", (agent_id,)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    found = await runtime.db.read(kinds)
    assert [k for k, _ in found].count(Kind.HEARTBEAT.value) == 3  # kept in recall memory
    assert all(not shown for k, shown in found[3:])  # but none of the silent turns is in context
    assert all(shown for _, shown in found[:3])  # the conversation before them is
    agent = await runtime.db.read(agents.get, agent_id)
    assert agent.id == agent_id


async def test_forgetting_an_agent_deletes_its_reminders_and_heartbeat_state(runtime_for, fake_server):
    _, runtime, _, agent_id = await setup(runtime_for, fake_server)
    await add_reminder(runtime, agent_id, "secret plan", datetime.now(UTC) + timedelta(days=1))
    await runtime.db.run(lifecycle.delete_agent, agent_id)

    def left(conn: Any) -> list[int]:
        return [
            conn.execute(f"SELECT count(*) FROM {table} WHERE agent_id = ?", (agent_id,)).fetchone()[0]
            for table in ("reminders", "heartbeats")
        ]

    assert await runtime.db.read(left) == [0, 0]
