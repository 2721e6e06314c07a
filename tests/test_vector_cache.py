"""The in-memory vector cache on a real SQLite file: same answers as sqlite-vec's own KNN, always."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage import agents, messages, migrations, passages, vectors
from storage.db import Database, connect
from storage.vector_cache import VectorCache

DIM = 8
TABLE = "passages_vec"
RNG = np.random.default_rng(11)


def unit(rows: int) -> np.ndarray:
    m = RNG.standard_normal((rows, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def open_db(path: Path, max_bytes: int = 1 << 30, min_vectors: int = 100) -> Database:
    db = Database(path, vector_cache_bytes=max_bytes)
    assert db.vector_cache is not None
    db.vector_cache.min_vectors = min_vectors
    db.call(migrations.migrate)
    db.call(vectors.ensure, "test-model", DIM)
    return db


def cache_of(db: Database) -> VectorCache:
    assert db.vector_cache is not None
    return db.vector_cache


def fill(db: Database, agent_id: int, first_rowid: int, rows: np.ndarray, table: str = TABLE) -> list[int]:
    ids = list(range(first_rowid, first_rowid + len(rows)))

    def write(conn) -> None:
        for rowid, row in zip(ids, rows, strict=True):
            vectors.put(conn, table, agent_id, rowid, row.tobytes())

    db.call(write)
    return ids


def same_as_sqlite_vec(db: Database, agent_id: int, query: bytes, k: int, table: str = TABLE) -> list[int]:
    """Ask through the cache and straight from sqlite-vec; they must agree. Returns the rowids.

    Agree means: the same distances position by position (to float32 rounding), each row at the
    same distance in both, and rows found by only one side tied at the k-th distance; so two rows
    may swap places only where their distances tie."""
    ours = db.call(vectors.nearest, table, agent_id, query, k)
    theirs = db.call(vectors.knn, table, agent_id, query, k)
    assert len(ours) == len(theirs)
    assert [d for _, d in ours] == pytest.approx([d for _, d in theirs], abs=1e-6)
    mine = dict(ours)
    for rowid, distance in theirs:
        assert mine.get(rowid, theirs[-1][1]) == pytest.approx(distance, abs=1e-6)
    return [i for i, _ in ours]


def test_answers_equal_sqlite_vec_over_several_chunks_and_agents(tmp_path: Path):
    db = open_db(tmp_path / "v.db")
    fill(db, 1, 1, unit(2600))  # three vec0 chunks of 1024
    fill(db, 2, 5000, unit(300))
    fill(db, 3, 9000, unit(40))  # below min_vectors: served by sqlite-vec
    fill(db, 1, 20000, unit(10), table="messages_vec")
    for query in unit(12):
        for agent_id in (1, 2, 3):
            for k in (1, 10, 100, 3000):
                same_as_sqlite_vec(db, agent_id, query.tobytes(), k)
        same_as_sqlite_vec(db, 1, query.tobytes(), 5, table="messages_vec")
    assert cache_of(db).loads == 2  # agents 1 and 2 of passages_vec, once each
    db.close()


def test_a_query_never_returns_another_agents_rows(tmp_path: Path):
    db = open_db(tmp_path / "iso.db")
    a_ids = fill(db, 1, 1, unit(500))
    b_ids = fill(db, 2, 1000, unit(400))
    query = unit(1)[0]
    fill(db, 1, 5000, query[None, :])  # agent 1 gets the exact query vector
    found_b = same_as_sqlite_vec(db, 2, query.tobytes(), 4096)
    found_a = same_as_sqlite_vec(db, 1, query.tobytes(), 4096)
    assert set(found_b) == set(b_ids)
    assert set(found_a) == {*a_ids, 5000} and found_a[0] == 5000
    db.close()


def test_put_after_loading_is_seen_at_once(tmp_path: Path):
    db = open_db(tmp_path / "put.db")
    fill(db, 1, 1, unit(300))
    query = unit(1)[0]
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)
    assert cache_of(db).loads == 1
    fill(db, 1, 400, np.stack([query] * 3))  # grows past the loaded capacity too
    fill(db, 1, 500, unit(1500))
    found = same_as_sqlite_vec(db, 1, query.tobytes(), 10)
    assert set(found[:3]) == {400, 401, 402}
    assert cache_of(db).loads == 1  # appended, not reloaded
    db.close()


def test_rollback_leaves_no_phantom_vectors(tmp_path: Path):
    db = open_db(tmp_path / "rb.db")
    fill(db, 1, 1, unit(300))
    fill(db, 2, 1000, unit(80))  # small: only its count is remembered
    query = unit(1)[0]
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)
    same_as_sqlite_vec(db, 2, query.tobytes(), 10)

    def write_then_fail(conn) -> None:
        vectors.put(conn, TABLE, 1, 777, query.tobytes())
        vectors.put(conn, TABLE, 2, 778, query.tobytes())
        vectors.put(conn, TABLE, 3, 779, query.tobytes())
        assert vectors.nearest(conn, TABLE, 1, query.tobytes(), 1)[0][0] == 777  # seen inside
        raise RuntimeError("tool failed")

    with pytest.raises(RuntimeError):
        db.call(write_then_fail)
    for agent_id in (1, 2, 3):
        found = same_as_sqlite_vec(db, agent_id, query.tobytes(), 1000)
        assert not {777, 778, 779} & set(found)
    db.close()


def test_another_connection_writing_the_file_invalidates_the_cache(tmp_path: Path):
    path = tmp_path / "two.db"
    db = open_db(path)
    ids = fill(db, 1, 1, unit(2100))
    query = unit(1)[0]
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)

    other = connect(path)  # a second bot, or `membot reembed`, on the same file
    other.execute("BEGIN")
    other.execute(
        f"INSERT INTO {TABLE} (rowid, agent_id, private, embedding) VALUES (9999, 1, 1, ?)",
        (query.tobytes(),),
    )
    gone = ids[::3]  # leaves holes in every chunk's validity bitmap
    other.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(i,) for i in gone])
    other.execute("COMMIT")
    other.close()

    found = same_as_sqlite_vec(db, 1, query.tobytes(), 3000)
    assert found[0] == 9999 and not set(gone) & set(found)
    assert len(found) == len(ids) - len(gone) + 1
    assert cache_of(db).loads == 2
    db.close()


def test_reembedding_clears_the_cache(tmp_path: Path):
    path = tmp_path / "re.db"
    db = open_db(path)
    fill(db, 1, 1, unit(300))
    query = unit(1)[0]
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)
    db.call(vectors.mark_rebuilding, "test-model", DIM)  # same connection
    assert cache_of(db).nbytes == 0
    assert db.call(vectors.nearest, TABLE, 1, query.tobytes(), 10) == []
    fill(db, 1, 1, unit(300))  # same rowids, new vectors
    db.call(vectors.finish_rebuilding, "test-model", DIM)
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)

    other = Database(path)  # `membot reembed` in another process
    other.call(vectors.mark_rebuilding, "test-model", DIM)
    fill(other, 1, 1, unit(300))
    other.call(vectors.finish_rebuilding, "test-model", DIM)
    other.close()
    same_as_sqlite_vec(db, 1, query.tobytes(), 10)
    db.close()


def test_least_recently_used_agents_are_evicted_by_bytes(tmp_path: Path):
    one_agent = 300 * (DIM * 4 + 8)
    db = open_db(tmp_path / "lru.db", max_bytes=int(one_agent * 2.5))
    for agent_id in (1, 2, 3):
        fill(db, agent_id, agent_id * 1000, unit(300))
    fill(db, 4, 5000, unit(800))  # alone bigger than the whole budget
    cache = cache_of(db)
    query = unit(1)[0].tobytes()
    for agent_id in (1, 2, 1, 3):
        same_as_sqlite_vec(db, agent_id, query, 10)
        assert cache.nbytes <= cache.max_bytes
    assert cache.loads == 3  # agent 2 was least recently used when 3 came in
    same_as_sqlite_vec(db, 1, query, 10)
    assert cache.loads == 3
    same_as_sqlite_vec(db, 2, query, 10)
    assert cache.loads == 4
    same_as_sqlite_vec(db, 4, query, 10)
    assert cache.loads == 4 and cache.nbytes <= cache.max_bytes
    db.close()


def test_each_database_file_has_its_own_cache(tmp_path: Path):
    first, second = open_db(tmp_path / "1.db"), open_db(tmp_path / "2.db")
    fill(first, 1, 1, unit(300))
    fill(second, 1, 1, unit(300))
    query = unit(1)[0].tobytes()
    a = first.call(vectors.nearest, TABLE, 1, query, 5)
    b = second.call(vectors.nearest, TABLE, 1, query, 5)
    assert a != b
    assert [i for i, _ in a] == same_as_sqlite_vec(first, 1, query, 5)
    assert [i for i, _ in b] == same_as_sqlite_vec(second, 1, query, 5)
    assert cache_of(first) is not cache_of(second)
    first.close()
    second.close()


def test_small_agents_stay_on_sqlite_vec_by_their_counters(tmp_path: Path):
    db = open_db(tmp_path / "agents.db")
    big = db.call(agents.create, "terminal", "big", "Big", "UTC")
    small = db.call(agents.create, "terminal", "small", "Small", "UTC")

    def write(conn) -> None:
        for agent, n in ((big, 150), (small, 30)):
            for i, row in enumerate(unit(n)):
                passages.insert(conn, agent.id, f"passage {i}", row.tobytes())
                messages.append(
                    conn, agent.id, "user", "user", f"m {i}", search_text=f"m {i}", embedding=row.tobytes()
                )

    db.call(write)
    for query in unit(3):
        for agent in (big, small):
            for table in vectors.TABLES:
                same_as_sqlite_vec(db, agent.id, query.tobytes(), 20, table=table)
    assert cache_of(db).loads == 2  # the big agent's two tables
    db.close()
