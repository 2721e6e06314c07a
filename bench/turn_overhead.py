"""Bot overhead per turn, excluding the LLM: a fake model on 127.0.0.1 answers at once.

    python bench/turn_overhead.py                 # 2,000 messages + 1,000 passages of history
    python bench/turn_overhead.py --full          # 50,000 messages + 20,000 passages
    python bench/turn_overhead.py --json out.json

History is synthetic text with a Zipf word distribution over a 5,000-word vocabulary.
Every 4th turn the model chains conversation_search and archival_memory_search before replying,
so retrieval is in the figures. Overhead = turn wall time - time spent waiting on the LLM call.
Prints p50/p95/p99 in ms; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import percentile, sentence, start_runtime, write_json
from bot.embedding import WordLlamaEmbedder, to_blob
from bot.events import Event
from bot.runtime import Runtime
from storage import messages, passages
from tests.fake_openai import Answer, FakeOpenAI, call, last_message, say


def model(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="Summary of earlier talk.")
    last = last_message(request)
    if last["role"] == "tool":
        if "conversation_search" in json.dumps(request["messages"][-2].get("tool_calls", "")):
            return call("archival_memory_search", query="sister birthday", request_heartbeat=True)
        return say("Here is what I found.")
    if "search" in last["content"]:
        return call("conversation_search", query="trip to Lisbon", request_heartbeat=True)
    return say("Noted, thanks!")


def populate(runtime: Runtime, agent_id: int, n_messages: int, n_passages: int) -> None:
    embedder = runtime.embedder
    assert isinstance(embedder, WordLlamaEmbedder)
    rng = random.Random(7)
    for start in range(0, n_messages, 2000):
        texts = [sentence(rng) for _ in range(min(2000, n_messages - start))]
        vectors = embedder.embed_now(texts)

        def write(conn: Any, texts: list[str] = texts, vectors: Any = vectors) -> None:
            for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
                role = "user" if i % 2 == 0 else "assistant"
                messages.append(
                    conn,
                    agent_id,
                    role,
                    role,
                    text,
                    search_text=text,
                    embedding=to_blob(vector),
                    in_context=False,
                )

        runtime.db.call(write)
    for start in range(0, n_passages, 2000):
        texts = [sentence(rng) for _ in range(min(2000, n_passages - start))]
        vectors = embedder.embed_now(texts)

        def insert(conn: Any, texts: list[str] = texts, vectors: Any = vectors) -> None:
            for text, vector in zip(texts, vectors, strict=True):
                passages.insert(conn, agent_id, text, to_blob(vector))

        runtime.db.call(insert)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n_messages = args.messages or (50_000 if args.full else 2_000)
    n_passages = args.passages or (20_000 if args.full else 1_000)

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(model) as fake:
        runtime = await start_runtime(fake.url, f"{tmp}/bench.db")
        agent = await runtime.agent_for("bench", "user")
        started = time.perf_counter()
        populate(runtime, agent.id, n_messages, n_passages)
        print(
            f"history: {n_messages} messages, {n_passages} passages in {time.perf_counter() - started:.1f} s"
        )

        overheads, llm_waits, steps = [], [], 0
        for i in range(args.turns):
            text = (
                f"search my memory please ({i})"
                if i % 4 == 0
                else f"message {i}: {sentence(random.Random(i))}"
            )
            t0 = time.perf_counter()
            turn = await runtime.handle(Event.direct("bench", "user", text))
            total = time.perf_counter() - t0
            overheads.append((total - turn.llm_seconds) * 1000)
            llm_waits.append(turn.llm_seconds * 1000)
            steps += turn.steps
        await runtime.close()

    result = {
        "messages": n_messages,
        "passages": n_passages,
        "turns": args.turns,
        "llm_calls": steps,
        "overhead_ms": {
            "p50": round(statistics.median(overheads), 2),
            "p95": round(percentile(overheads, 0.95), 2),
            "p99": round(percentile(overheads, 0.99), 2),
            "mean": round(statistics.fmean(overheads), 2),
        },
        "fake_llm_round_trip_ms_p50": round(statistics.median(llm_waits), 2),
    }
    write_json(args.json, result)


if __name__ == "__main__":
    asyncio.run(main())
