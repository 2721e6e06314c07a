"""Many users at once against a slow LLM: throughput, lost messages, per-user order.

    python bench/concurrency.py                       # 100 users x 5 messages, 300 ms per LLM call
    python bench/concurrency.py --full                # 1,000 users x 5 messages
    python bench/concurrency.py --users 500 --mode burst --latency 0.3 --json out.json
    python bench/concurrency.py --profile prof.txt    # cProfile of the event-loop thread, top functions

Every user starts at once (asyncio tasks) through Runtime.handle(Event.direct(...)): the real Runtime,
WordLlama, the real openai client. Two modes, run one after the other on fresh databases:
- sequential: each user sends its next message when the previous reply came back;
- burst: each user's messages are all handed to the runtime at once (the per-agent lock orders them).

The fake model answers every call with send_message("reply to: <text>") after --latency seconds.
It runs in a child process by default (like a remote LLM: its JSON parsing and threads do not share
our GIL); --in-process puts it in this process. Its HTTP server listens with a backlog of 2,048
(stdlib ThreadingHTTPServer: 5, see --small-backlog).

Ideal wall time = messages per user x latency: each user's turns back to back, one LLM call each,
everything else free, all users in parallel. Throughput ratio = ideal / measured wall time (1.0 is
perfect). Lost = user messages not on disk or without their reply on disk or in the returned Turn.
Order kept = on disk, each user's messages in the order sent and each reply after its message.
Also reported: where the time went (database worker thread busy time, embedding, event-loop CPU).
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import multiprocessing
import pstats
import resource
import sys
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RoomyFakeOpenAI, busy_meter, start_runtime, summary_ms, write_json
from bot.embedding import WordLlamaEmbedder
from bot.events import Event
from bot.runtime import Runtime
from storage import messages
from storage.agents import Agent as AgentRecord
from storage.db import Connection
from tests.fake_openai import Answer, FakeOpenAI, last_user_text, say

REPLY = "reply to: {}"


def tcp_counters() -> dict[str, int]:
    """Host-wide TCP counters that show a too-small listen backlog (Linux; empty elsewhere)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            found = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: found.get(k, 0) for k in ("ListenOverflows", "ListenDrops", "TCPSynRetrans")}
    return {}


def make_script(latency: float) -> Any:
    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="Summary.", delay=latency)
        answer = say(REPLY.format(last_user_text(request)))
        answer.delay = latency
        return answer

    return script


def make_fake(latency: float, small_backlog: bool) -> FakeOpenAI:
    script = make_script(latency)
    return FakeOpenAI(script) if small_backlog else RoomyFakeOpenAI(script)


def serve(pipe: Pipe, latency: float, small_backlog: bool) -> None:
    """Child process: run the fake, send its URL, answer 'stats' until 'stop'."""
    with make_fake(latency, small_backlog) as fake:
        pipe.send(fake.url)
        while (command := pipe.recv()) != "stop":
            assert command == "stats"
            pipe.send({"requests": len(fake.requests), "max_in_flight": fake.max_in_flight})
            fake.requests.clear()
            fake.max_in_flight = 0


class RemoteFake:
    """The fake model in a child process (forked before any of our threads start)."""

    def __init__(self, latency: float, small_backlog: bool) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=serve, args=(child, latency, small_backlog), daemon=True
        )
        self.process.start()
        self.url: str = self.pipe.recv()

    def stats(self) -> dict[str, int]:
        self.pipe.send("stats")
        stats: dict[str, int] = self.pipe.recv()
        return stats

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(10)


class LocalFake:
    def __init__(self, latency: float, small_backlog: bool) -> None:
        self.fake = make_fake(latency, small_backlog).__enter__()
        self.url = self.fake.url

    def stats(self) -> dict[str, int]:
        stats = {"requests": len(self.fake.requests), "max_in_flight": self.fake.max_in_flight}
        self.fake.requests.clear()
        self.fake.max_in_flight = 0
        return stats

    def close(self) -> None:
        self.fake.__exit__(None, None, None)


async def user(
    runtime: Runtime, uid: str, texts: list[str], burst: bool, latencies: list[float]
) -> list[Any]:
    async def one(text: str) -> Any:
        t0 = time.perf_counter()
        turn = await runtime.handle(Event.direct("bench", uid, text))
        latencies.append(time.perf_counter() - t0)
        return turn

    if burst:
        return list(await asyncio.gather(*(one(t) for t in texts)))
    return [await one(t) for t in texts]


async def check(runtime: Runtime, users: dict[str, list[str]], turns: dict[str, list[Any]]) -> dict[str, int]:
    """Lost messages and order, read back from disk and from the returned turns."""

    def read(conn: Connection, agent_id: int) -> list[messages.Message]:
        found, total, offset = [], 1, 0
        while offset < total:
            page, total = messages.searchable_between(conn, agent_id, "0", "9", 500, offset)
            found.extend(page)
            offset += 500
        return found

    lost = out_of_order = failed = wrong_reply = 0
    for uid, texts in users.items():
        agent: AgentRecord = await runtime.agent_for("bench", uid)
        stored = await runtime.db.run(read, agent.id)
        said = [m.search_text for m in stored if m.role == "user"]
        replies = [m.search_text for m in stored if m.role == "assistant"]
        expected = [REPLY.format(t) for t in texts]
        lost += sum(1 for t in texts if t not in said or REPLY.format(t) not in replies)
        pairs = [(m.role, m.search_text) for m in stored]
        interleaved = [p for t in texts for p in (("user", t), ("assistant", REPLY.format(t)))]
        if said != texts or replies != expected or pairs != interleaved:
            out_of_order += 1
        for text, turn in zip(texts, turns[uid], strict=True):
            failed += int(turn.failed)
            wrong_reply += int(turn.replies != [REPLY.format(text)])
    return {
        "lost_messages": lost,
        "users_out_of_order": out_of_order,
        "failed_turns": failed,
        "turns_with_wrong_reply": wrong_reply,
    }


async def run_mode(
    fake: RemoteFake | LocalFake,
    n_users: int,
    per_user: int,
    latency: float,
    burst: bool,
    profile: bool,
    keepalive: int | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runtime = await start_runtime(
            fake.url,
            f"{tmp}/concurrency.db",
            keepalive,
            MEMBOT_LLM_TIMEOUT="600",
            MEMBOT_LLM_TOTAL_TIMEOUT="600",
        )
        spent: dict[str, float] = {}
        undo = [busy_meter(runtime.db, "call", spent, "db_thread", by_first_argument=True)]
        if isinstance(runtime.embedder, WordLlamaEmbedder):
            undo.append(busy_meter(runtime.embedder, "embed_now", spent, "embedding"))
        users = {f"u{i}": [f"u{i} message {j}" for j in range(per_user)] for i in range(n_users)}
        latencies: list[float] = []
        fake.stats()
        profiler = cProfile.Profile() if profile else None
        cpu0, usage0, tcp0 = time.thread_time(), resource.getrusage(resource.RUSAGE_SELF), tcp_counters()
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(user(runtime, uid, texts, burst, latencies) for uid, texts in users.items())
        )
        wall = time.perf_counter() - started
        if profiler:
            profiler.disable()
        loop_cpu = time.thread_time() - cpu0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        served = fake.stats()
        tcp = {k: v - tcp0.get(k, 0) for k, v in tcp_counters().items()}
        for restore in undo:
            restore()
        checked = await check(runtime, users, dict(zip(users, results, strict=True)))
        await runtime.close()
    total = n_users * per_user
    ideal = per_user * latency
    result: dict[str, Any] = {
        "mode": "burst" if burst else "sequential",
        "users": n_users,
        "messages_per_user": per_user,
        "llm_latency_s": latency,
        "wall_s": round(wall, 2),
        "ideal_wall_s": round(ideal, 2),
        "throughput_ratio": round(ideal / wall, 3),
        "messages_per_s": round(total / wall, 1),
        "ideal_messages_per_s": round(total / ideal, 1),
        "turn_latency_ms": summary_ms(latencies),
        "llm_requests_served": served["requests"],
        "llm_max_in_flight": served["max_in_flight"],
        **checked,
        "tcp_counters_delta_host_wide": tcp,
        "time_split_s": {
            "db_thread_busy": round(spent.get("db_thread", 0.0), 2),
            "db_thread_busy_fraction": round(spent.get("db_thread", 0.0) / wall, 3),
            "embedding_busy": round(spent.get("embedding", 0.0), 2),
            "db_thread_by_function": {
                key.split(":", 1)[1]: round(value, 2)
                for key, value in sorted(spent.items(), key=lambda kv: -kv[1])
                if key.startswith("db_thread:")
            },
            "event_loop_cpu": round(loop_cpu, 2),
            "process_cpu": round(usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime, 2),
        },
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        result["profile_top_tottime"] = out.getvalue()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 users")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--messages", type=int, default=5, help="messages per user")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per LLM call")
    parser.add_argument("--mode", choices=["sequential", "burst", "both"], default="both")
    parser.add_argument("--in-process", action="store_true", help="fake model in this process")
    parser.add_argument("--small-backlog", action="store_true", help="stdlib listen backlog (5)")
    parser.add_argument(
        "--keepalive", type=int, default=None, help="experiment: LLM client keeps N idle connections"
    )
    parser.add_argument("--profile", default=None, help="write cProfile top functions here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n_users = args.users or (1_000 if args.full else 100)
    modes = [False, True] if args.mode == "both" else [args.mode == "burst"]

    fake: RemoteFake | LocalFake = (LocalFake if args.in_process else RemoteFake)(
        args.latency, args.small_backlog
    )
    runs = []
    try:
        for burst in modes:
            runs.append(
                await run_mode(
                    fake, n_users, args.messages, args.latency, burst, bool(args.profile), args.keepalive
                )
            )
    finally:
        fake.close()
    profiles = [r.pop("profile_top_tottime", "") for r in runs]
    if args.profile:
        Path(args.profile).write_text("\n\n".join(profiles))  # noqa: ASYNC240
    result = {
        "fake_model": "in-process" if args.in_process else "child process",
        "listen_backlog": 5 if args.small_backlog else 2048,
        "llm_client_keepalive": args.keepalive or "openai default (100 idle of 1,000)",
        "runs": runs,
    }
    write_json(args.json, result)
    print(
        f"{'mode':<11} {'wall s':>7} {'ideal s':>7} {'ratio':>6} {'msg/s':>7} {'lost':>5} {'order':>5} {'db busy':>8}"
    )
    for r in runs:
        print(
            f"{r['mode']:<11} {r['wall_s']:>7} {r['ideal_wall_s']:>7} {r['throughput_ratio']:>6} "
            f"{r['messages_per_s']:>7} {r['lost_messages']:>5} {r['users_out_of_order']:>5} "
            f"{r['time_split_s']['db_thread_busy_fraction']:>8}"
        )


if __name__ == "__main__":
    asyncio.run(main())
