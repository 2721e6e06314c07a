"""PostgreSQL vector search: exact vs the per-agent HNSW index (storage/vector_index.py).

    python bench/pg_vectors.py                      # agents of 1k, 5k, 20k, 50k vectors
    python bench/pg_vectors.py --sizes 2000,10000 --queries 100 --json out.json

One database on the embedded PostgreSQL 18 + pgvector (tests/postgres.py) holds every agent's
vectors side by side in `messages_vec`, as in production: synthetic sentences (bench/common.py),
embedded by the real WordLlama embedder, loaded with COPY (as the superuser). Each agent is searched through the
storage function the bot uses (storage.vectors.knn, through PgDatabase.read) twice, by a database
with indexes off (exact) and after `PgDatabase.index_vectors` has built every agent's index (the
threshold set below the smallest agent for the run): top-k latency p50/p95, the overlap of the
index's top k with the exact top k (recall against exact), for all rows and for public-only
searches (a third of the rows public), and the indexes' build time. Exact search runs without
parallel workers unless --parallel (a loaded server has no idle cores to lend it). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import numpy as np
from common import percentile, sentence, write_json

from bot.embedding import to_blob
from bot.runtime import open_database
from storage import agents as agents_table
from storage import vectors
from storage.postgres import PgConnection, PgDatabase
from tests.conftest import shared_embedder
from tests.postgres import fresh_database, superuser_url


def load(url: str, sizes: list[int], dim: int, rng: random.Random) -> list[int]:
    import psycopg

    embedder = shared_embedder()
    agents = []
    database = url.split("/")[3].split("?")[0]
    with psycopg.connect(superuser_url(database), autocommit=True) as conn:  # (COPY skips row-level security)
        conn.execute("SELECT set_config('membot.agent', 'all', false)")
        next_id = 1
        for n in sizes:
            agent = agents_table.create(PgConnection(conn), "bench", f"a{n}", f"a{n}", "UTC").id
            agents.append(int(agent))
            texts = [sentence(rng) for _ in range(n)]
            matrix = np.asarray(embedder.embed_now(texts), dtype=np.float32)
            with (
                conn.cursor() as cur,
                cur.copy("COPY messages_vec (rowid, agent_id, private, embedding) FROM STDIN") as copy,
            ):
                for row in matrix:
                    copy.write_row(
                        (
                            next_id,
                            agent,
                            int(rng.random() < 0.67),
                            "[" + ",".join(f"{x:.7g}" for x in row) + "]",
                        )
                    )
                    next_id += 1
            conn.execute(
                "UPDATE agents SET message_count = %s WHERE id = %s", (n, agent)
            )  # (no messages rows)
        conn.execute("ANALYZE messages_vec")
    return agents


async def search(
    db: PgDatabase, agent: int, probes: list[bytes], k: int, public: bool
) -> tuple[list[list[int]], list[float]]:
    found, took = [], []
    await db.read(vectors.knn, "messages_vec", agent, probes[0], k, public)  # (warm: pool, catalog)
    for probe in probes:
        started = time.perf_counter()
        rows = await db.read(vectors.knn, "messages_vec", agent, probe, k, public)
        took.append((time.perf_counter() - started) * 1000)
        found.append([rowid for rowid, _ in rows])
    return found, took


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,20000,50000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--parallel", action="store_true", help="let exact search use parallel workers")
    parser.add_argument("--json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(1)
    url = fresh_database()
    embedder = shared_embedder()
    (await open_database(url, embedder.name, embedder.dim)).close()
    agents = load(url, sizes, embedder.dim, rng)
    probes = [to_blob(v) for v in embedder.embed_now([sentence(rng) for _ in range(args.queries)])]

    # Serial by default: under load a busy server has no idle cores for parallel workers, so a
    # query's cost is its single-core CPU time (--parallel: what an idle machine gives one query).
    searched = url if args.parallel else f"{url}&options=-c%20max_parallel_workers_per_gather%3D0"
    exact_db = PgDatabase(searched, vector_index_at=0)
    index_db = PgDatabase(searched, vector_index_at=min(sizes), index_in_background=False)
    started = time.perf_counter()
    built = index_db.index_vectors()
    print(f"built {built} indexes in {time.perf_counter() - started:.1f} s")
    results: dict[str, Any] = {"k": args.k, "queries": args.queries, "parallel": args.parallel, "agents": []}
    for agent, n in zip(agents, sizes, strict=True):
        row: dict[str, Any] = {"vectors": n}
        for public in (False, True):
            exact, exact_ms = await search(exact_db, agent, probes, args.k, public)
            approx, index_ms = await search(index_db, agent, probes, args.k, public)
            overlap = [len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(approx, exact, strict=True)]
            label = "public" if public else "all"
            row[label] = {
                "exact_p50_ms": round(percentile(exact_ms, 0.5), 2),
                "exact_p95_ms": round(percentile(exact_ms, 0.95), 2),
                "index_p50_ms": round(percentile(index_ms, 0.5), 2),
                "index_p95_ms": round(percentile(index_ms, 0.95), 2),
                "recall_vs_exact": round(float(np.mean(overlap)), 3),
            }
            print(
                f"{n:>7} vectors, {label:>6}: exact p50 {row[label]['exact_p50_ms']} ms, index p50 "
                f"{row[label]['index_p50_ms']} ms, recall@{args.k} vs exact {row[label]['recall_vs_exact']}"
            )
        results["agents"].append(row)
    exact_db.close()
    index_db.close()
    write_json(args.json, results)


if __name__ == "__main__":
    asyncio.run(main())
