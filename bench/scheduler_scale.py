"""The scheduler at scale: cold start over many persisted reminders and heartbeat-enabled agents,
and how late a burst of due reminders fires.

    python bench/scheduler_scale.py                 # 10,000 agents/reminders, 300 due at once
    python bench/scheduler_scale.py --full          # 100,000 agents and reminders, 2,000 due at once
    python bench/scheduler_scale.py --agents 50000 --due 1000 --json out.json

The database is built with bulk SQL (no LLM): N agents, each with an identity, a DM and a
heartbeat row scheduled somewhere in the next 4 hours, and N pending reminders spread over the
next 30 days; `--due` of them (each for a different agent) come due 2 to 4 s after the scheduler
starts. Then the real Runtime and Scheduler start (WordLlama, the real openai client, a fake model
with no delay that composes each reminder) with one sender registered for the platform:
- start_to_armed: Scheduler.start() until its first sweep has run and the next one is armed;
- rss: resident memory before and after that start;
- lateness: delivery time (the sender got the agent's message) minus due time, p50/p99/max,
  and wake lateness: when the scheduler handed the reminder to `Runtime.wake`, minus due time
  (the difference is the agent's turn: the model call, the database, the embedder);
- sweep: one sweep's time with nothing due (what the periodic sweep costs at this size).
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RoomyFakeOpenAI, start_runtime, summary_ms, write_json
from bot.events import Conversation, Event, Outgoing
from bot.scheduler import Scheduler
from bot.steps import Turn
from storage.clock import to_iso
from storage.db import Connection, Database
from storage.migrations import migrate
from tests.fake_openai import Answer, last_message, say

PLATFORM = "bench"


def script(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="summary")
    last = last_message(request)
    if last["role"] == "tool":
        return Answer(content="done")
    text = str(last["content"])
    if "Reminder #" in text:
        return say("due: " + text.split('"')[1])
    return Answer(content="nothing to say")


def build(path: str, agents: int, due: int) -> dict[str, float]:
    """The database, by bulk SQL: agents, identities, DMs, heartbeats, reminders."""
    rng = random.Random(7)
    started = time.perf_counter()
    db = Database(path, vector_cache_bytes=0)
    now = datetime.now(UTC)
    stamp = to_iso(now)

    def fill(conn: Connection) -> None:
        migrate(conn)
        conn.executemany(
            "INSERT INTO agents (id, platform, platform_user_id, display_name, timezone, created_at, "
            "last_active_at, memory_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i, PLATFORM, f"u{i}", f"User {i}", "Europe/Berlin", stamp, stamp, stamp)
                for i in range(1, agents + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO identities (platform, platform_user_id, agent_id, display_name, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ((PLATFORM, f"u{i}", i, f"User {i}", stamp) for i in range(1, agents + 1)),
        )
        conn.executemany(
            "INSERT INTO conversations (id, platform, channel_id, thread_id, private, name, created_at) "
            "VALUES (?, ?, ?, '', 1, 'a DM', ?)",
            ((i, PLATFORM, f"D{i}", stamp) for i in range(1, agents + 1)),
        )
        conn.executemany(  # the agents trigger made the rows; give each a time and a place
            "UPDATE heartbeats SET next_at = ?, conversation_id = ?, last_spoke_at = ? WHERE agent_id = ?",
            (
                (to_iso(now + timedelta(seconds=rng.uniform(600, 4 * 3600))), i, stamp, i)
                for i in range(1, agents + 1)
            ),
        )
        rows = []
        for i in range(1, agents + 1):
            when = now + timedelta(seconds=rng.uniform(3600, 30 * 86400))  # the burst is set later
            rows.append((i, i, PLATFORM, f"r{i}", to_iso(when), "Europe/Berlin", stamp))
        conn.executemany(
            "INSERT INTO reminders (agent_id, conversation_id, platform, private, text, due_at, timezone, "
            "created_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
            rows,
        )

    db.call(fill)
    db.close()
    return {"build_s": round(time.perf_counter() - started, 1)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Recorder:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def send(self, message: Outgoing) -> None:
        self.at.setdefault(message.text.removeprefix("due: "), time.time())

    async def turn_started(self, conversation: Conversation) -> None:
        return None

    async def turn_ended(self, conversation: Conversation) -> None:
        return None


def due_times(due: int, due_from: datetime) -> dict[str, datetime]:
    """The burst: reminders r1..r<due> come due evenly over 2 s from `due_from`."""
    return {f"r{i}": due_from + timedelta(seconds=2 * (i - 1) / max(1, due - 1)) for i in range(1, due + 1)}


async def measure(path: str, due: int) -> dict[str, Any]:
    with RoomyFakeOpenAI(script) as fake:
        runtime = await start_runtime(fake.url, path, MEMBOT_HEARTBEAT_IDLE_DAYS="0")
        recorder = Recorder()
        await runtime.register_sender(PLATFORM, recorder)
        dues = due_times(due, datetime.now(UTC) + timedelta(seconds=2))

        def burst(conn: Connection) -> None:
            conn.executemany(
                "UPDATE reminders SET due_at = ? WHERE text = ? AND agent_id = ?",
                ((to_iso(at), text, int(text[1:])) for text, at in dues.items()),
            )

        await runtime.db.run(burst)
        woken: dict[str, float] = {}
        wake = runtime.wake

        async def timed_wake(agent_id: int, event: Event, claim: Any = None) -> Turn:
            woken.setdefault(f"r{agent_id}", time.time())  # the burst's agent i has reminder r<i>
            return await wake(agent_id, event, claim)

        runtime.wake = timed_wake  # type: ignore[method-assign]
        scheduler = Scheduler(runtime)
        before = rss_mb()
        started = time.perf_counter()
        await scheduler.start()
        while scheduler.sweeps == 0:  # noqa: ASYNC110 (polling the figure being measured)
            await asyncio.sleep(0.001)
        armed = time.perf_counter() - started
        after = rss_mb()
        deadline = time.time() + 120
        while len(recorder.at) < due and time.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await scheduler.idle(30)
        quiet = time.perf_counter()
        await scheduler.sweep()
        sweep_s = time.perf_counter() - quiet
        await scheduler.close()
        await runtime.close()
    late = [recorder.at[k] - at.timestamp() for k, at in dues.items() if k in recorder.at]
    woke = [woken[k] - at.timestamp() for k, at in dues.items() if k in woken]
    return {
        "start_to_armed_ms": round(armed * 1000, 1),
        "rss_mb": {"before_start": before, "after_start": after},
        "delivered": len(late),
        "lateness_ms": summary_ms(late),
        "wake_lateness_ms": summary_ms(woke),
        "idle_sweep_ms": round(sweep_s * 1000, 1),
        "fired": scheduler.fired,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100,000 agents and reminders, 2,000 due")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    agents, due = (100_000, 2_000) if args.full else (args.agents, args.due)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        built = build(path, agents, due)
        result = asyncio.run(measure(path, due))
    write_json(args.json, {"agents": agents, "reminders": agents, "due": due, **built, **result})
    return 0 if result["delivered"] == due else 1


if __name__ == "__main__":
    sys.exit(main())
