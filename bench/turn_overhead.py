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
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
logging.basicConfig(level=logging.WARNING)  # before wordllama, which would set INFO on import

from bot.embedding import WordLlamaEmbedder, to_blob  # noqa: E402
from bot.runtime import Incoming, Runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from storage import messages, passages  # noqa: E402
from tests.fake_openai import Answer, FakeOpenAI, call, last_message, say  # noqa: E402

SYLLABLES = "ka lo mi nu pe ra si to vu ze ba do fi gu he ja ko li mo na".split()
TOPICS = "garden dog trip Lisbon birthday sister concert guitar marathon recipe soup bike office".split()


def vocabulary(size: int = 5000) -> list[str]:
    rng = random.Random(3)
    return [rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(size)]


VOCABULARY = vocabulary()
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(VOCABULARY))]  # Zipf, like real text


def sentence(rng: random.Random) -> str:
    words = rng.choices(VOCABULARY, weights=WEIGHTS, k=rng.randint(6, 18))
    return " ".join([*words, rng.choice(TOPICS)])


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
        settings = load_settings(
            {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "x", "MEMBOT_DB": f"{tmp}/bench.db"},
            dotenv_path=None,
        )
        runtime = await Runtime.start(settings)
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
            turn = await runtime.handle(Incoming("bench", "user", text))
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
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))  # noqa: ASYNC240


if __name__ == "__main__":
    asyncio.run(main())
