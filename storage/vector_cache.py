"""In-memory copies of large agents' vectors, so a KNN query is one matrix product, not a table scan.

sqlite-vec answers a query by reading every vector of the agent's partition (~0.4 µs each: ~20 ms
for 50k). For an agent with at least `MIN_VECTORS` vectors in a table, the first query reads the
partition once straight from vec0's shadow tables (`<table>_chunks`, `<table>_vector_chunks00`)
into a normalised float32 matrix; later queries are a matrix-vector product and an argpartition
(~2 ms for 50k). The vec0 tables stay the durable store; this is a cache of them, owned by one
connection (never shared between database files), and it is dropped or corrected whenever they
change:

- `vectors.put` appends to a loaded matrix and `vectors.delete` takes rows out of it;
  `vectors.delete_all` (an agent deleted or moved) forgets that agent; `vectors.create_tables`
  (re-embedding) clears it all;
- a transaction that rolls back drops every agent it wrote to or loaded;
- another connection's commit (a second bot, `membot reembed`) changes `PRAGMA data_version`,
  which is checked before every query, and clears it all;
- each load is checked against sqlite-vec's own answer to the same query; if they disagree (a
  sqlite-vec release with another storage layout) the table is served by sqlite-vec from then on.

Memory is bounded by `max_bytes` (least recently used agents are evicted first); an agent that
alone would not fit stays on sqlite-vec. Every entry is keyed by (table, agent id).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024 * 1024
MIN_VECTORS = 2048  # below this sqlite-vec answers in < 1 ms; not worth the memory
BLOCK_VALUES = 1 << 18  # rows per matrix product = this / dim: small enough for single-threaded BLAS
MAX_COUNTS = 100_000  # remembered sizes of agents not loaded
MAX_K = 4096  # sqlite-vec refuses a larger k; so do we (by asking it)

Connection = Any
Key = tuple[str, int]
Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]
KnnQuery = Callable[[], list[tuple[int, float]]]
Bound = Callable[[], int | None]


@dataclass
class _Entry:
    ids: Ids  # capacity-sized; the first `size` are in use
    matrix: Floats  # rows normalised to length 1 (a zero vector stays zero)
    size: int

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.matrix.nbytes)

    def append(self, rowid: int, row: Floats) -> None:
        if self.size == len(self.ids):
            capacity = self.size + max(1024, self.size // 8)
            self.ids = np.resize(self.ids, capacity)
            self.matrix = np.resize(self.matrix, (capacity, self.matrix.shape[1]))
        self.ids[self.size] = rowid
        self.matrix[self.size] = row
        self.size += 1


def _normalised(rows: Floats) -> Floats:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Floats = (rows / norms).astype(np.float32, copy=False)
    return normalised


def _top(entry: _Entry, query: Floats, k: int) -> list[tuple[int, float]]:
    """Exact cosine top-k (the rows and the query are normalised): (rowid, 1 - cosine), nearest first."""
    n, dim = entry.size, entry.matrix.shape[1]
    if n == 0:
        return []
    similarity = np.empty(n, dtype=np.float32)
    block = max(1, BLOCK_VALUES // dim)
    for start in range(0, n, block):
        stop = min(n, start + block)
        np.matmul(entry.matrix[start:stop], query, out=similarity[start:stop])
    if k < n:
        best = np.argpartition(-similarity, k - 1)[:k]
        best = best[np.argsort(-similarity[best], kind="stable")]
    else:
        best = np.argsort(-similarity, kind="stable")
    distances = 1.0 - similarity[best]
    return [(int(i), float(d)) for i, d in zip(entry.ids[best], distances, strict=True)]


def _agrees(ours: list[tuple[int, float]], theirs: list[tuple[int, float]]) -> bool:
    """Same answer up to float rounding and which of several rows tied at the k-th distance."""
    if len(ours) != len(theirs):
        return False
    mine = dict(ours)
    last = ours[-1][1] if ours else 0.0
    for (_, a), (rowid, b) in zip(ours, theirs, strict=True):
        if abs(a - b) > 1e-4:
            return False
        if rowid in mine and abs(mine[rowid] - b) > 1e-4:
            return False
        if rowid not in mine and abs(last - b) > 1e-4:
            return False
    return True


class VectorCache:
    """Per-(table, agent) matrices of one connection's vec0 tables, bounded by bytes (LRU)."""

    def __init__(self, max_bytes: int = MAX_BYTES, min_vectors: int = MIN_VECTORS) -> None:
        self.max_bytes = max_bytes
        self.min_vectors = min_vectors
        self.loads = 0  # how many partitions were read into memory (for tests and logs)
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._counts: dict[Key, int] = {}  # vectors of agents known but not loaded
        self._touched: set[Key] = set()  # written or loaded in the open transaction
        self._unsupported: set[str] = set()
        self._data_version: int | None = None
        self.nbytes = 0

    def clear(self) -> None:
        """Forget everything (the tables were rebuilt, or the connection is new)."""
        self._entries.clear()
        self._counts.clear()
        self._touched.clear()
        self._data_version = None
        self.nbytes = 0

    def finish(self, committed: bool) -> None:
        """End of a transaction: on rollback, drop whatever it wrote to or loaded."""
        if not committed:
            for key in self._touched:
                self._drop(key)
                self._counts.pop(key, None)
        self._touched.clear()

    def added(self, table: str, agent_id: int, rowid: int, vector: bytes) -> None:
        """`vectors.put` inserted this row (in the open transaction)."""
        key = (table, agent_id)
        entry = self._entries.get(key)
        if entry is not None:
            row = np.frombuffer(vector, dtype=np.float32)
            if row.shape[0] != entry.matrix.shape[1]:
                self._drop(key)
                return
            self._touched.add(key)
            before = entry.nbytes
            entry.append(rowid, _normalised(row))
            self.nbytes += entry.nbytes - before
            self._evict()
        elif key in self._counts:
            self._touched.add(key)
            self._counts[key] += 1

    def removed(self, table: str, agent_id: int, rowids: Collection[int]) -> None:
        """`vectors.delete` deleted these rows of this agent (in the open transaction)."""
        key = (table, agent_id)
        entry = self._entries.get(key)
        if entry is not None:
            self._touched.add(key)
            gone = np.fromiter(rowids, dtype=np.int64, count=len(rowids))
            keep = ~np.isin(entry.ids[: entry.size], gone)
            size = int(keep.sum())
            entry.ids[:size] = entry.ids[: entry.size][keep]
            entry.matrix[:size] = entry.matrix[: entry.size][keep]
            entry.size = size
        self._counts.pop(key, None)  # counted again when next needed

    def invalidate(self, table: str, agent_id: int) -> None:
        """Forget this agent's rows of `table` (moved or deleted wholesale); read again when needed."""
        self._drop((table, agent_id))
        self._counts.pop((table, agent_id), None)

    def nearest(
        self, conn: Connection, key: Key, vector: bytes, k: int, knn: KnnQuery, most: Bound
    ) -> list[tuple[int, float]]:
        """The `k` rows of agent `key[1]` in table `key[0]` nearest to `vector`.

        `knn` asks sqlite-vec (for agents not cached); `most` is a cheap upper bound on the agent's
        vectors (None if unknown), so small agents are not counted chunk by chunk."""
        self._check_version(conn)
        query = self._query(vector)
        table = key[0]
        entry = self._entries.get(key)
        if entry is not None and query is not None and k <= MAX_K and query.shape[0] == entry.matrix.shape[1]:
            self._entries.move_to_end(key)
            return _top(entry, query, k)
        if query is None or k > MAX_K or table in self._unsupported:
            return knn()
        if not self._worth_loading(conn, key, query, most):
            return knn()
        theirs = knn()
        loaded = self._load(conn, key, query.shape[0])
        if loaded is None:
            return theirs
        ours = _top(loaded, query, k)
        if not _agrees(ours, theirs):
            log.warning("vector cache disagrees with sqlite-vec on %s; serving it from sqlite-vec", table)
            self._unsupported.add(table)
            self._drop(key)
        return theirs

    def _check_version(self, conn: Connection) -> None:
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            if self._data_version is not None:
                log.info("database changed by another connection: vector cache cleared")
            self.clear()
            self._data_version = version

    @staticmethod
    def _query(vector: bytes) -> Floats | None:
        if not isinstance(vector, bytes) or len(vector) % 4:
            return None  # JSON text or a malformed blob: sqlite-vec parses (or rejects) it
        query = np.frombuffer(vector, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        if not np.isfinite(norm) or norm == 0:
            return None
        return (query / norm).astype(np.float32)

    def _worth_loading(self, conn: Connection, key: Key, query: Floats, most: Bound) -> bool:
        count = self._counts.get(key)
        if count is None:
            bound = most()
            if bound is not None and bound < self.min_vectors:
                return False
            count = self._count(conn, key)
            if count is None:
                return False
            if len(self._counts) >= MAX_COUNTS:
                self._counts.clear()
            self._counts[key] = count
            self._touched.add(key)
        fits = count * (query.shape[0] * 4 + 8) <= self.max_bytes
        return count >= self.min_vectors and fits

    def _count(self, conn: Connection, key: Key) -> int | None:
        table, agent_id = key
        try:
            rows = conn.execute(
                f"SELECT size, validity FROM {table}_chunks WHERE partition00 = ?", (agent_id,)
            ).fetchall()
        except Exception as exc:  # another vec0 storage layout
            log.warning("vector cache cannot read %s_chunks (%s); serving it from sqlite-vec", table, exc)
            self._unsupported.add(table)
            return None
        bits = (np.unpackbits(np.frombuffer(v, np.uint8), bitorder="little")[:s] for s, v in rows)
        return sum(int(b.sum()) for b in bits)

    def _load(self, conn: Connection, key: Key, dim: int) -> _Entry | None:
        """Read the agent's partition from the shadow tables (one query per chunk of 1024 slots)."""
        table, agent_id = key
        chunks = conn.execute(
            f"SELECT chunk_id, size, validity, rowids FROM {table}_chunks WHERE partition00 = ? "
            "ORDER BY chunk_id",
            (agent_id,),
        ).fetchall()
        masks = [
            np.unpackbits(np.frombuffer(v, np.uint8), bitorder="little")[:s].astype(bool)
            for _, s, v, _ in chunks
        ]
        total = sum(int(mask.sum()) for mask in masks)
        entry = _Entry(np.empty(total, dtype=np.int64), np.empty((total, dim), dtype=np.float32), 0)
        for (chunk_id, size, _, rowids), mask in zip(chunks, masks, strict=True):
            if not mask.any():
                continue
            found = conn.execute(
                f"SELECT vectors FROM {table}_vector_chunks00 WHERE rowid = ?", (chunk_id,)
            ).fetchone()
            if (
                found is None
                or len(rowids) != size * 8
                or len(found[0]) != size * dim * 4
                or len(mask) != size
            ):
                self._unsupported.add(table)
                return None
            stop = entry.size + int(mask.sum())
            entry.ids[entry.size : stop] = np.frombuffer(rowids, dtype=np.int64)[mask]
            block = np.frombuffer(found[0], dtype=np.float32).reshape(size, dim)[mask]
            entry.matrix[entry.size : stop] = _normalised(block)
            entry.size = stop
        self.loads += 1
        self._counts.pop(key, None)
        self._touched.add(key)
        self._entries[key] = entry
        self.nbytes += entry.nbytes
        self._evict()
        return entry

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry.nbytes

    def _evict(self) -> None:
        while self.nbytes > self.max_bytes and self._entries:
            key, entry = self._entries.popitem(last=False)
            self.nbytes -= entry.nbytes
            self._counts[key] = entry.size
