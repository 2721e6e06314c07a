"""Prompt tokens per LLM call as one conversation grows: flat under the window, whatever the length.

    python bench/tokens_growth.py                       # 1,000 turns, buckets of 100
    python bench/tokens_growth.py --full                # 10,000 turns, buckets of 1,000
    python bench/tokens_growth.py --turns 3000 --window 8192 --plot tokens.png --json out.json

The real Runtime (MEMBOT_CONTEXT_WINDOW = --window, WordLlama, real openai client) talks to a fake
model on 127.0.0.1 that answers at once: a one-sentence reply to each user message, and every 10th
turn an archival_memory_insert with request_heartbeat first; the summariser's no-tools call gets a
short summary. Every --long-every turns the user pastes a 100 kB message. User text is synthetic
(Zipf words, 6-18 per message).

Tokens are counted with bot/tokens.py (o200k) on the request as the fake server received it:
3 per request + each message (framing + fields) + the tool schemas as JSON. The "full context"
line is what the prompt would be if every message were kept: the first call's system message and
tool schemas plus the cumulative tokens of every stored message (none clipped) up to that turn.
Prints max, p50 per bucket of turns, and how many requests (agent and summariser) exceeded the
window (must be 0); --plot writes a PNG. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import percentile, sentence, start_runtime, summary_ms, write_json
from bot.events import Event
from bot.pressure import Budget
from bot.prompt import render_message
from bot.runtime import Runtime
from bot.tokens import PER_REQUEST, count_message, count_tools
from storage import messages
from storage.agents import Agent as AgentRecord
from storage.db import Connection
from tests.fake_openai import Answer, FakeOpenAI, call, last_message, say

LONG_BYTES = 100_000


@dataclass
class Recorder:
    """What the fake server saw: (turn, prompt tokens, is_summariser) per request."""

    turn: int = 0
    calls: list[tuple[int, int, bool]] = field(default_factory=list)
    first_base: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, request: dict[str, Any]) -> Answer:
        tools = request.get("tools") or []
        size = PER_REQUEST + sum(count_message(m) for m in request["messages"]) + count_tools(tools)
        with self.lock:
            self.calls.append((self.turn, size, not tools))
            if tools and self.first_base is None:
                self.first_base = PER_REQUEST + count_message(request["messages"][0]) + count_tools(tools)
        if not tools:
            return Answer(content="Summary: the user chatted about daily life, plans and people.")
        rng = random.Random(len(self.calls))
        if last_message(request)["role"] == "tool":
            return say("Saved that. " + sentence(rng, 4, 10))
        if self.turn % 10 == 0:
            return call("archival_memory_insert", content=sentence(rng), request_heartbeat=True)
        return say(sentence(rng, 4, 14))


def long_text(rng: random.Random) -> str:
    parts: list[str] = []
    size = 0
    while size < LONG_BYTES:
        parts.append(sentence(rng))
        size += len(parts[-1]) + 1
    return " ".join(parts)[:LONG_BYTES]


async def full_context(runtime: Runtime, agent: AgentRecord, base: int, turns: int) -> list[int]:
    """Tokens of the prompt if nothing were ever evicted, at each turn's end (index = turn)."""

    def read(conn: Connection) -> list[messages.Message]:
        """Every message of the agent (ids are global; page through them until all are found)."""
        found: list[messages.Message] = []
        total, start = messages.count(conn, agent.id), 1
        while len(found) < total:
            found.extend(messages.get_many(conn, agent.id, list(range(start, start + 900))))
            start += 900
        return found

    stored = await runtime.db.run(read)
    user_ids = [m.id for m in stored if m.kind == "user"]
    cumulative, running = [0] * turns, base
    marks = [*user_ids[1:], 10**18]
    turn = 0
    for message in stored:
        if message.role == "system":  # summaries live in the system message, not as messages
            continue
        while turn < turns - 1 and message.id >= marks[turn]:
            cumulative[turn] = running
            turn += 1
        running += render_message(message, agent.timezone, 10**9)[1]
    for t in range(turn, turns):
        cumulative[t] = running
    return cumulative


def plot(path: str, rec: Recorder, full: list[int], window: int, limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    agent = [(t, n) for t, n, s in rec.calls if not s]
    summ = [(t, n) for t, n, s in rec.calls if s]
    ax.plot(range(len(full)), full, color="tab:red", label="full context (every message kept)")
    for points, size, color, label in (
        (agent, 2, "tab:blue", "membot prompt, agent calls"),
        (summ, 6, "tab:green", "membot prompt, summariser calls"),
    ):
        if points:
            ax.scatter([t for t, _ in points], [n for _, n in points], s=size, color=color, label=label)
    ax.axhline(window, color="black", linestyle="--", linewidth=1, label=f"window {window}")
    ax.axhline(limit, color="grey", linestyle=":", linewidth=1, label=f"limit before flush {limit}")
    ax.set_yscale("log")
    ax.set_xlabel("turn (user message number)")
    ax.set_ylabel("prompt tokens per LLM call (o200k, log scale)")
    ax.set_title("membot: prompt tokens per call as one conversation grows")
    ax.legend(loc="upper left", markerscale=4)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def run(turns: int, window: int, long_every: int) -> tuple[Recorder, list[int], dict[str, Any]]:
    rec = Recorder()
    rng = random.Random(11)
    turn_seconds: list[float] = []
    mismatch = 0
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(rec.script) as fake:
        runtime = await start_runtime(fake.url, f"{tmp}/tokens.db", MEMBOT_CONTEXT_WINDOW=str(window))
        agent = await runtime.agent_for("bench", "grower")
        started = time.perf_counter()
        for turn in range(turns):
            rec.turn = turn
            text = long_text(rng) if long_every and turn % long_every == long_every - 1 else sentence(rng)
            seen = len(rec.calls)
            t0 = time.perf_counter()
            result = await runtime.handle(Event.direct("bench", "grower", text))
            turn_seconds.append(time.perf_counter() - t0)
            fake.requests.clear()
            if result.failed:
                raise RuntimeError(f"turn {turn} failed: {result.replies}")
            served = [n for _, n, s in rec.calls[seen:] if not s]
            mismatch = max(
                [mismatch, *(abs(a - b) for a, b in zip(served, result.prompt_tokens, strict=False))]
            )
        elapsed = time.perf_counter() - started
        base = rec.first_base or 0
        full = await full_context(runtime, agent, base, turns)
        await runtime.close()
    extra = {
        "seconds": round(elapsed, 1),
        "turn_ms": summary_ms(turn_seconds),
        "bot_estimate_vs_server_count_max_diff": mismatch,
    }
    return rec, full, extra


def report(rec: Recorder, full: list[int], window: int, limit: int, bucket: int) -> dict[str, Any]:
    agent = [(t, n) for t, n, s in rec.calls if not s]
    summ = [n for _, n, s in rec.calls if s]
    buckets = []
    turns = len(full)
    for start in range(0, turns, bucket):
        sizes = [n for t, n in agent if start <= t < start + bucket]
        buckets.append(
            {
                "turns": f"{start + 1}-{min(turns, start + bucket)}",
                "calls": len(sizes),
                "p50": percentile([float(s) for s in sizes], 0.5),
                "max": max(sizes, default=0),
                "full_context_at_end": full[min(turns, start + bucket) - 1],
            }
        )
    every = [n for _, n, _ in rec.calls]
    starts = [t for t, _, s in rec.calls if s]
    return {
        "turns": turns,
        "window": window,
        "limit_before_flush": limit,
        "llm_calls": len(agent),
        "summariser_calls": len(summ),
        "flushes_at_turns_first_10": sorted(set(starts))[:10],
        "max_prompt_tokens": max(n for _, n in agent),
        "max_summariser_tokens": max(summ, default=0),
        "requests_over_window": sum(1 for n in every if n > window),
        "requests_over_limit": sum(1 for n in every if n > limit),
        "full_context_at_end": full[-1],
        "buckets": buckets,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"{'turns':>13} {'calls':>6} {'p50':>6} {'max':>6} {'full ctx':>10}")
    for b in result["buckets"]:
        print(
            f"{b['turns']:>13} {b['calls']:>6} {b['p50']:>6.0f} {b['max']:>6} {b['full_context_at_end']:>10}"
        )
    print(
        f"max {result['max_prompt_tokens']} tokens (summariser max {result['max_summariser_tokens']}); "
        f"over the {result['window']} window: {result['requests_over_window']}; "
        f"{result['summariser_calls']} summariser calls; {result['seconds']} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10,000 turns")
    parser.add_argument("--turns", type=int, default=None)
    parser.add_argument("--window", type=int, default=8192)
    parser.add_argument("--bucket", type=int, default=None, help="turns per p50 bucket")
    parser.add_argument(
        "--long-every", type=int, default=1000, help="a 100 kB message every N turns (0: none)"
    )
    parser.add_argument("--plot", default=None, help="PNG path")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    turns = args.turns or (10_000 if args.full else 1_000)
    bucket = args.bucket or max(1, turns // 10)

    rec, full, extra = await run(turns, args.window, args.long_every)
    limit = Budget(args.window).limit
    result = report(rec, full, args.window, limit, bucket) | extra
    if args.plot:
        plot(args.plot, rec, full, args.window, limit)
        result["plot"] = args.plot
    write_json(args.json, result)
    print_table(result)


if __name__ == "__main__":
    asyncio.run(main())
