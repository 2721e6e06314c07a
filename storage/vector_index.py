"""PostgreSQL: an HNSW index of its own for each large agent's vectors; exact search for the rest.

Exact search reads every vector of the agent (the b-tree on agent_id, then pgvector's distance
on each): 0.5-1.5 ms up to ~5,000 vectors, 18-25 ms at 20,000-50,000 (measured, 384 dimensions).
One HNSW index over everyone's vectors would not help: filtered by agent after the graph walk,
a person with 0.1% of the rows gets almost nothing back. So an agent with at least `INDEX_AT`
vectors gets a partial index, `{table}_hnsw_{agent}` ... `WHERE agent_id = {agent}`, over its
own rows only: ~1 ms at 50,000, 0.98-1.0 of the exact top 10 (bench/pg_vectors.py).

`sweep` makes the missing ones and drops those no longer wanted (the agent forgotten or shrunk
to half the threshold, or an index a crashed build left invalid), with CREATE / DROP INDEX
CONCURRENTLY, so no write waits on a build. One process sweeps at a time (an advisory lock);
`PgDatabase` runs it in the background. A search asks `VectorIndexes.has` (the valid indexes,
read from the catalog at most once a minute): for an indexed agent the query names the agent as
a literal, so the planner can prove the partial index applies, and pgvector's iterative scan
keeps a public-only search from coming back short; anything it still misses falls back to exact.
An index another process has just built is used within a minute; one just dropped only makes
the literal query exact.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

INDEX_AT = 10_000  # vectors of one agent in one table
EF_SEARCH = 200  # candidates an HNSW search keeps (pgvector: 40); at least 2k
REFRESH_SECONDS = 60.0
SWEEP_LOCK = 0x6D656D626F75  # advisory key: one process sweeps at a time
TABLES = {"messages_vec": "message_count", "passages_vec": "passage_count"}  # and the counter in agents
_NAME = re.compile(r"^(messages_vec|passages_vec)_hnsw_(\d+)$")


def index_name(table: str, agent_id: int) -> str:
    return f"{table}_hnsw_{int(agent_id)}"


def catalog(raw: Any) -> dict[str, bool]:
    """Every per-agent vector index: name -> valid (False: a build that did not finish)."""
    rows = raw.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname IN ('messages_vec', 'passages_vec') "
        "AND c.relname LIKE '%\\_hnsw\\_%'"
    ).fetchall()
    return {str(name): bool(valid) for name, valid in rows if _NAME.match(str(name))}


def plan(raw: Any, at: int) -> tuple[list[tuple[str, int]], list[str]]:
    """(indexes to build as (table, agent), index names to drop), from the agents' counters."""
    found = catalog(raw)
    build: list[tuple[str, int]] = []
    drop = [name for name, valid in found.items() if not valid]
    for table, counter in TABLES.items():
        counts = {
            int(agent): int(count)
            for agent, count in raw.execute(
                f"SELECT id, {counter} FROM agents WHERE {counter} >= %s", (at // 2,)
            )
        }
        for agent, count in counts.items():
            name = index_name(table, agent)
            if count >= at and not found.get(name, False):
                build.append((table, agent))
        for name, valid in found.items():
            match = _NAME.match(name)
            if valid and match and match[1] == table and int(match[2]) not in counts:
                drop.append(name)
    return build, drop


def sweep(raw: Any, at: int, build: bool = True) -> tuple[int, int] | None:
    """Build and drop per-agent indexes on `raw` (an autocommit connection); (built, dropped), or
    None when another process holds the sweep."""
    if not raw.execute("SELECT pg_try_advisory_lock(%s)", (SWEEP_LOCK,)).fetchone()[0]:
        return None
    try:
        raw.execute("SELECT set_config('membot.agent', 'all', false)")
        wanted, unwanted = plan(raw, at)
        for name in unwanted:
            raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        made = 0
        for table, agent in wanted if build else []:
            name = index_name(table, agent)  # (an invalid one of that name was dropped above)
            started = time.perf_counter()
            raw.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} "
                f"USING hnsw (embedding vector_cosine_ops) WHERE agent_id = {int(agent)}"
            )
            made += 1
            log.info("vector index %s built in %.1f s", name, time.perf_counter() - started)
        return made, len(unwanted)
    finally:
        raw.execute("SELECT pg_advisory_unlock(%s)", (SWEEP_LOCK,))


class VectorIndexes:
    """Which agents' vectors have a valid index, as the catalog said at most a minute ago."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._valid: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    def has(self, raw: Any, table: str, agent_id: int) -> bool:
        now = time.monotonic()
        if now - self._read_at > REFRESH_SECONDS:
            valid = frozenset(name for name, ok in catalog(raw).items() if ok)
            with self._lock:
                self._valid, self._read_at = valid, now
        return index_name(table, agent_id) in self._valid

    def forget(self) -> None:
        """Read the catalog again at the next search (after this process built or dropped one)."""
        with self._lock:
            self._read_at = float("-inf")


def nearest(
    raw: Any, table: str, agent_id: int, vector: bytes | str, k: int, scope: str
) -> list[tuple[Any, Any]]:
    """The index's answer for an indexed agent: its `k` nearest (rowid, distance), in order."""
    raw.execute(
        "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', 'strict_order', true)",
        (str(min(1000, max(EF_SEARCH, 2 * k))),),
    )
    return list(
        raw.execute(
            f"SELECT rowid, embedding <=> %s::vector AS distance FROM {table} "
            f"WHERE agent_id = {int(agent_id)}{scope} ORDER BY distance LIMIT %s",
            (vector, k),
        )
    )
