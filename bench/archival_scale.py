"""Archival search at scale: top-10 latency with many agents, and with one agent holding a lot.

    python bench/archival_scale.py                  # 100k passages / 1,000 agents + 20k in one agent
    python bench/archival_scale.py --full           # 1M passages / 10,000 agents + 100k in one agent
    python bench/archival_scale.py --spread 200000 --agents 2000 --single 50000 --json out.json
    python bench/archival_scale.py --random-vectors # unit random vectors instead of WordLlama

One SQLite file holds both populations (the big agent's searches run next to everyone else's rows,
as in production). Passages are synthetic (Zipf words, 6-18 per passage, plus a topic word), in
agent-by-agent order (--interleave: random agent order, as in real life, ~20x slower to load at 10k
agents), written with storage.passages.insert (FTS5 and vec0 through their triggers and
storage.vectors) in transactions of --batch rows on the calling thread; vectors come from the real
WordLlama embedder in batches (or --random-vectors). Load time, rows per second and the file size
(database + WAL) are reported.

Searches are the bot's archival path: AgentMemory.search_passages (embed the query, then
bot.retrieval.rank_passages and passages.get_many on the database thread), top 10, a fresh query
each time: 1-5 words drawn like the text's (--skip-common N avoids the N most frequent) plus one of
13 topic words (each in ~1/13 of all passages). Reported per population: end-to-end p50/p95,
rank_passages alone, and its two halves (BM25 text_matches and vec0 nearest, depth 100). For the
many-agents population every agent is searched twice: "first" is its first search in this process,
"again" the second (caches warm; the OS page cache is warm for both, as the file was just written).
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import VOCABULARY, sentence, start_runtime, summary_ms, write_json
from bot import retrieval
from bot.embedding import WordLlamaEmbedder, to_blob
from bot.runtime import Runtime
from storage import passages
from storage.agents import Agent as AgentRecord
from storage.db import Connection
from tests.fake_openai import FakeOpenAI, say

TOP = 10


def file_size(path: str, wal: bool = True) -> int:
    """Bytes of the database file (and its WAL, which keeps its largest size after a checkpoint)."""
    names = (path, f"{path}-wal") if wal else (path,)
    return sum(os.path.getsize(p) for p in names if os.path.exists(p))


def vectors_for(runtime: Runtime, texts: list[str], random_vectors: bool, rng: np.random.Generator) -> Any:
    if random_vectors:
        matrix = rng.standard_normal((len(texts), runtime.embedder.dim)).astype(np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    embedder = runtime.embedder
    assert isinstance(embedder, WordLlamaEmbedder)
    return embedder.embed_now(texts)


def load(
    runtime: Runtime,
    owners: list[int],
    batch: int,
    random_vectors: bool,
    seed: int,
    progress: Callable[[int], None],
) -> dict[str, float]:
    """Insert one passage per entry of `owners` (agent ids, in that order); timings in seconds."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    spent = {"text": 0.0, "embed": 0.0, "insert": 0.0}
    for start in range(0, len(owners), batch):
        chunk = owners[start : start + batch]
        t0 = time.perf_counter()
        texts = [sentence(rng) for _ in chunk]
        t1 = time.perf_counter()
        matrix = vectors_for(runtime, texts, random_vectors, nrng)
        t2 = time.perf_counter()

        def write(
            conn: Connection, chunk: list[int] = chunk, texts: list[str] = texts, matrix: Any = matrix
        ) -> None:
            for agent_id, text, vector in zip(chunk, texts, matrix, strict=True):
                passages.insert(conn, agent_id, text, to_blob(vector), "import")

        runtime.db.call(write)
        t3 = time.perf_counter()
        spent["text"] += t1 - t0
        spent["embed"] += t2 - t1
        spent["insert"] += t3 - t2
        progress(start + len(chunk))
    return spent


async def search_once(runtime: Runtime, agent: AgentRecord, query: str) -> dict[str, float]:
    """One archival search the way the tool runs it, and its parts measured separately after."""
    memory = runtime.memory(agent)
    t0 = time.perf_counter()
    found = await memory.search_passages(query, TOP)
    end_to_end = time.perf_counter() - t0
    assert len(found) <= TOP
    vector = to_blob((await runtime.embedder.embed([retrieval.dense_query(query)]))[0])  # cached now
    depth = max(retrieval.CANDIDATES, TOP * 2)

    def parts(conn: Connection) -> dict[str, float]:
        a = time.perf_counter()
        retrieval.rank_passages(conn, agent.id, query, vector, TOP)
        b = time.perf_counter()
        passages.text_matches(conn, agent.id, query, depth)
        c = time.perf_counter()
        passages.nearest(conn, agent.id, vector, depth)
        d = time.perf_counter()
        return {"rank": b - a, "bm25": c - b, "knn": d - c}

    return {"end_to_end": end_to_end, **(await runtime.db.run(parts))}


def query(rng: random.Random, skip_common: int) -> str:
    """1-5 words drawn like the passages' words (minus the `skip_common` most frequent) and a topic."""
    words = sentence(rng, 1, 5).split()
    while skip_common and any(VOCABULARY.index(w) < skip_common for w in words[:-1]):
        words = sentence(rng, 1, 5).split()
    return " ".join(words)


async def measure(
    runtime: Runtime, agents: list[AgentRecord], rng: random.Random, skip_common: int
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"end_to_end": [], "rank": [], "bm25": [], "knn": []}
    for agent in agents:
        for key, value in (await search_once(runtime, agent, query(rng, skip_common))).items():
            samples[key].append(value)
    return {key: summary_ms(values) for key, values in samples.items()} | {"queries": len(agents)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1M passages / 10k agents + 100k in one")
    parser.add_argument("--spread", type=int, default=None, help="passages spread over --agents agents")
    parser.add_argument("--agents", type=int, default=None)
    parser.add_argument("--single", type=int, default=None, help="passages in one more agent")
    parser.add_argument("--queries", type=int, default=300, help="searches per population")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per transaction")
    parser.add_argument("--random-vectors", action="store_true")
    parser.add_argument(
        "--skip-common",
        type=int,
        default=0,
        help="queries avoid the N most frequent words (real text's head is stopwords, which search drops)",
    )
    parser.add_argument("--interleave", action="store_true", help="load in random agent order (slow)")
    parser.add_argument("--db", default=None, help="keep the database at this path (default: temp dir)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    spread = args.spread if args.spread is not None else (1_000_000 if args.full else 100_000)
    n_agents = args.agents or (10_000 if args.full else 1_000)
    single = args.single if args.single is not None else (100_000 if args.full else 20_000)

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(lambda request: say("ok")) as fake:
        path = args.db or f"{tmp}/archival.db"
        runtime = await start_runtime(fake.url, path)
        t0 = time.perf_counter()
        agents = [await runtime.agent_for("bench", f"user{i}") for i in range(n_agents)]
        big = await runtime.agent_for("bench", "hoarder")
        made = time.perf_counter() - t0
        print(f"{n_agents + 1} agents in {made:.1f} s", flush=True)

        rng = random.Random(5)
        owners = sorted(agents[i % n_agents].id for i in range(spread))  # agent by agent: fast
        if args.interleave:
            rng.shuffle(owners)

        def progress(done: int) -> None:
            if done % 100_000 < args.batch:
                print(
                    f"  {done} rows, {time.perf_counter() - t1:.0f} s, {file_size(path) / 1e9:.2f} GB",
                    flush=True,
                )

        t1 = time.perf_counter()
        spread_parts = load(runtime, owners, args.batch, args.random_vectors, 1, progress)
        spread_seconds = time.perf_counter() - t1
        spread_size = file_size(path)
        t1 = time.perf_counter()
        single_parts = load(runtime, [big.id] * single, args.batch, args.random_vectors, 2, progress)
        single_seconds = time.perf_counter() - t1
        total_size, main_size = file_size(path), file_size(path, wal=False)
        print(f"loaded in {spread_seconds + single_seconds:.0f} s, {total_size / 1e9:.2f} GB", flush=True)

        picked = rng.sample(agents, min(args.queries, n_agents))
        first = await measure(runtime, picked, rng, args.skip_common)
        again = await measure(runtime, picked, rng, args.skip_common)
        hoard = await measure(runtime, [big] * args.queries, rng, args.skip_common)
        await runtime.close()

    result = {
        "vectors": "random unit vectors" if args.random_vectors else "WordLlama (real embeddings)",
        "spread": {
            "passages": spread,
            "agents": n_agents,
            "load_seconds": round(spread_seconds, 1),
            "load_parts_seconds": {k: round(v, 1) for k, v in spread_parts.items()},
            "rows_per_second": round(spread / spread_seconds) if spread_seconds else 0,
            "db_and_wal_bytes_after": spread_size,
            "search_first_ms": first,
            "search_again_ms": again,
        },
        "single": {
            "passages": single,
            "load_seconds": round(single_seconds, 1),
            "load_parts_seconds": {k: round(v, 1) for k, v in single_parts.items()},
            "rows_per_second": round(single / single_seconds) if single_seconds else 0,
            "search_ms": hoard,
        },
        "query_words": f"Zipf like the text, minus the {args.skip_common} most frequent, plus a topic word",
        "load_order": "random agents" if args.interleave else "agent by agent",
        "db_and_wal_bytes": total_size,
        "db_main_file_bytes": main_size,
        "db_gb": round(total_size / 1e9, 2),
    }
    write_json(args.json, result)
    print(f"{'population':<34} {'e2e p50':>8} {'e2e p95':>8} {'bm25 p50':>9} {'knn p50':>8}")
    for label, block in (
        (f"{spread} / {n_agents} agents (first)", first),
        (f"{spread} / {n_agents} agents (again)", again),
        (f"{single} in one agent", hoard),
    ):
        e2e, bm25, knn = block["end_to_end"], block["bm25"], block["knn"]
        print(f"{label:<34} {e2e['p50']:>8.2f} {e2e['p95']:>8.2f} {bm25['p50']:>9.2f} {knn['p50']:>8.2f}")
    print(f"db {total_size / 1e9:.2f} GB; load {spread_seconds + single_seconds:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
