"""Vector tables (sqlite-vec `vec0`) and the record of which embedding model filled them.

Tables `messages_vec` and `passages_vec`: rowid = the message or passage id, `agent_id` as the
partition key (so a KNN query only ever reads one agent's vectors), `private` as a metadata
column (a public search filters on it inside the KNN query), `embedding float[dim]` with
cosine distance. `meta` keys `embedding_model` and `embedding_dim` record what produced them;
opening with another model is refused until `membot reembed` rebuilds them.

Every write to these tables goes through this module: a connection opened by `Database` carries a
`VectorCache` (storage/vector_cache.py) that serves `nearest` for agents with many vectors, and
`put`, `delete`, `delete_all` and `create_tables` keep it in step.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from storage import vector_index
from storage.db import Connection
from storage.errors import EmbeddingMismatchError
from storage.postgres import dialect, protect
from storage.vector_cache import MAX_K, VectorCache

TABLES = ("messages_vec", "passages_vec")
# Each agent's vectors live in chunks of CHUNK_SIZE slots, allocated whole. sqlite-vec's default of
# 1,024 slots cost every new agent 1 MB per table on disk and ~9 ms for its first vector (measured:
# 200 agents, 211 MB); 32 slots cost 32 kB and 0.04 ms, and search is as fast (2.3 ms over 4k vectors).
CHUNK_SIZE = 32
LAYOUT = f"chunk_size={CHUNK_SIZE};private"
COUNTERS = {"messages_vec": "message_count", "passages_vec": "passage_count"}  # columns of `agents`
SOURCES = {"messages_vec": "messages", "passages_vec": "passages"}  # the rows each table embeds


def recorded(conn: Connection) -> tuple[str, int] | None:
    rows = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'embedding_%'").fetchall())
    if "embedding_model" not in rows:
        return None
    return rows["embedding_model"], int(rows["embedding_dim"])


def tables_exist(conn: Connection) -> bool:
    if dialect(conn) == "postgres":
        return all(conn.execute("SELECT to_regclass(?)", (t,)).fetchone()[0] for t in TABLES)
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)", TABLES
    ).fetchone()[0]
    return bool(found == len(TABLES))


def _cache(conn: Connection) -> VectorCache | None:
    found: VectorCache | None = getattr(conn, "vector_cache", None)
    return found


def _create(conn: Connection, table: str, dim: int) -> None:
    if dialect(conn) == "postgres":
        # pgvector: `rowid` named as in vec0, so the same statements serve both. Exact search over
        # the agent's rows (the index on agent_id), the same answers sqlite-vec gives; a large
        # agent gets an HNSW index of its own (storage/vector_index.py).
        conn.execute(
            f"CREATE TABLE {table} (rowid bigint PRIMARY KEY, agent_id bigint NOT NULL, "
            f"private integer NOT NULL, embedding vector({int(dim)}) NOT NULL)"
        )
        conn.execute(f"CREATE INDEX {table}_by_agent ON {table} (agent_id, private)")
        protect(conn, table)
        return
    conn.execute(
        f"CREATE VIRTUAL TABLE {table} USING vec0(agent_id INTEGER PARTITION KEY, private INTEGER, "
        f"embedding FLOAT[{dim}] distance_metric=cosine, chunk_size={CHUNK_SIZE})"
    )


def create_tables(conn: Connection, model: str, dim: int) -> None:
    cache = _cache(conn)
    if cache is not None:
        cache.clear()
    for table in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        _create(conn, table, dim)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('embedding_model', ?), ('embedding_dim', ?), "
        "('vector_layout', ?)",
        (model, str(dim), LAYOUT),
    )


def _relayout(conn: Connection, dim: int) -> None:
    """Copy vectors from tables made before `LAYOUT` (1,024-slot chunks, no `private` column) into
    the current layout; `private` comes from the rows they embed."""
    cache = _cache(conn)
    if cache is not None:
        cache.clear()
    for table in TABLES:
        conn.execute("DROP TABLE IF EXISTS temp.moving")
        conn.execute(f"CREATE TEMP TABLE moving AS SELECT rowid AS id, agent_id, embedding FROM {table}")
        conn.execute(f"DROP TABLE {table}")  # (vec0 cannot be renamed: its shadow tables keep their names)
        _create(conn, table, dim)
        conn.execute(
            f"INSERT INTO {table} (rowid, agent_id, private, embedding) SELECT moving.id, moving.agent_id, "
            f"coalesce(source.private, 1), embedding FROM moving LEFT JOIN {SOURCES[table]} AS source "
            "ON source.id = moving.id"
        )
        conn.execute("DROP TABLE temp.moving")
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('vector_layout', ?)", (LAYOUT,))


def ensure(conn: Connection, model: str, dim: int) -> None:
    """Make the vector tables for `model`, or refuse if the file was embedded with another one."""
    record = recorded(conn)
    if record is None:
        create_tables(conn, model, dim)
        return
    if record != (model, dim):
        raise EmbeddingMismatchError(
            f"This database was embedded with {record[0]} ({record[1]} dimensions) but MEMBOT_EMBEDDER "
            f"gives {model} ({dim} dimensions). Run `membot reembed` to re-embed it with the new "
            "model, or set MEMBOT_EMBEDDER back."
        )
    if not tables_exist(conn):
        create_tables(conn, model, dim)
        return
    layout = conn.execute("SELECT value FROM meta WHERE key = 'vector_layout'").fetchone()
    if (layout is None or layout[0] != LAYOUT) and dialect(conn) == "sqlite":
        _relayout(conn, dim)


def put(conn: Connection, table: str, agent_id: int, rowid: int, vector: bytes, private: bool = True) -> None:
    conn.execute(
        f"INSERT INTO {table} (rowid, agent_id, private, embedding) VALUES (?, ?, ?, ?)",
        (rowid, agent_id, int(private), as_parameter(conn, vector)),
    )
    cache = _cache(conn)
    if cache is not None:
        cache.added(table, agent_id, rowid, vector)


def delete(conn: Connection, table: str, agent_id: int, rowids: Iterable[int]) -> int:
    """Delete these rows of this agent (rowids of other agents are left alone); how many went.

    sqlite-vec zeroes a deleted vector's slot in its chunk and drops a chunk once it is empty."""
    if not tables_exist(conn):
        return 0
    gone = [
        rowid
        for rowid in rowids
        if conn.execute(f"DELETE FROM {table} WHERE rowid = ? AND agent_id = ?", (rowid, agent_id)).rowcount
    ]
    cache = _cache(conn)
    if cache is not None and gone:
        cache.removed(table, agent_id, gone)
    return len(gone)


def delete_all(conn: Connection, table: str, agent_id: int) -> int:
    """Delete every vector in this agent's partition of `table`, also any whose message or passage
    is gone; how many went. Finds them with KNN queries (which read only this partition), not a
    scan of every agent's vectors."""
    record = recorded(conn)
    if record is None or not tables_exist(conn):
        return 0
    if dialect(conn) == "postgres":
        return int(conn.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,)).rowcount)
    probe = struct.pack(f"{record[1]}f", 1.0, *([0.0] * (record[1] - 1)))
    total = 0
    while True:
        found = [rowid for rowid, _ in knn(conn, table, agent_id, probe, MAX_K)]
        deleted = delete(conn, table, agent_id, found)
        total += deleted
        if deleted < MAX_K:
            break
    invalidate(conn, table, agent_id)
    return total


def invalidate(conn: Connection, table: str, agent_id: int) -> None:
    """Tell the vector cache to forget this agent's rows of `table` (after writes it cannot follow)."""
    cache = _cache(conn)
    if cache is not None:
        cache.invalidate(table, agent_id)


def nearest(
    conn: Connection, table: str, agent_id: int, vector: bytes, k: int, public_only: bool = False
) -> list[tuple[int, float]]:
    """The `k` rows of this agent nearest to `vector`, as (rowid, cosine distance); with
    `public_only`, only rows from public conversations (filtered inside sqlite-vec's KNN query;
    the in-memory cache serves unfiltered searches only)."""
    if k <= 0:
        return []
    if public_only:
        return knn(conn, table, agent_id, vector, k, public_only=True)
    cache = _cache(conn)
    if cache is not None:
        return cache.nearest(
            conn,
            (table, agent_id),
            vector,
            k,
            lambda: knn(conn, table, agent_id, vector, k),
            lambda: _most(conn, table, agent_id),
        )
    return knn(conn, table, agent_id, vector, k)


def _most(conn: Connection, table: str, agent_id: int) -> int | None:
    """At most this many vectors: the agent's message or passage counter (one row by primary key)."""
    column = COUNTERS.get(table)
    if column is None:
        return None
    row = conn.execute(f"SELECT {column} FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return int(row[0]) if row else None


def knn(
    conn: Connection, table: str, agent_id: int, vector: bytes, k: int, public_only: bool = False
) -> list[tuple[int, float]]:
    """sqlite-vec's own KNN query (brute force over the agent's partition), bypassing the cache;
    on PostgreSQL, pgvector's cosine distance over the agent's rows."""
    scope = " AND private = 0" if public_only else ""
    if dialect(conn) == "postgres":
        indexes = getattr(conn, "vector_indexes", None)
        if indexes is not None and indexes.has(conn.raw, table, agent_id):  # (storage/vector_index.py)
            found = vector_index.nearest(conn.raw, table, agent_id, as_parameter(conn, vector), k, scope)
            if len(found) == k:
                return [(int(rowid), float(distance)) for rowid, distance in found]
        rows = conn.execute(  # exact: `+ 0` is no index's ordering, so no plan walks an HNSW graph
            f"SELECT rowid, (embedding <=> ?::vector) + 0 AS distance FROM {table} WHERE agent_id = ?{scope} "
            "ORDER BY distance LIMIT ?",
            (as_parameter(conn, vector), agent_id, k),
        )
        return [(int(rowid), float(distance)) for rowid, distance in rows]
    rows = conn.execute(
        f"SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ? AND agent_id = ?{scope} "
        "ORDER BY distance",
        (vector, k, agent_id),
    )
    return [(int(rowid), float(distance)) for rowid, distance in rows]


def as_parameter(conn: Connection, vector: bytes) -> bytes | str:
    """The vector as this database takes it: float32 bytes for sqlite-vec, '[x,y,...]' for pgvector."""
    if dialect(conn) != "postgres":
        return vector
    values = struct.unpack(f"{len(vector) // 4}f", vector)
    return "[" + ",".join(f"{value:.9g}" for value in values) + "]"


def from_column(value: bytes | str) -> bytes:
    """A vector read back from either database, as float32 bytes."""
    if isinstance(value, str):
        numbers = [float(x) for x in value.strip("[]").split(",") if x]
        return struct.pack(f"{len(numbers)}f", *numbers)
    return bytes(value)


def mark_rebuilding(conn: Connection, model: str, dim: int) -> None:
    """Empty the vector tables for `model`; until `create_tables` records it, opening is refused."""
    create_tables(conn, model, dim)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'embedding_model'", (f"unfinished re-embed to {model}",)
    )


def finish_rebuilding(conn: Connection, model: str, dim: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('embedding_model', ?), ('embedding_dim', ?)",
        (model, str(dim)),
    )
