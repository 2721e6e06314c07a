"""Storage on a real SQLite file with sqlite-vec: migrations, limits, isolation, locking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from storage import agents, blocks, messages, migrations, passages, vectors
from storage.db import Database, connect, driver
from storage.errors import BlockLimitError, EmbeddingMismatchError, StorageError


def vec(*values: float) -> bytes:
    v = np.zeros(8, dtype=np.float32)
    v[: len(values)] = values
    return (v / (np.linalg.norm(v) or 1)).tobytes()


def setup(db: Database) -> None:
    db.call(migrations.migrate)
    db.call(vectors.ensure, "test-model", 8)


def test_file_is_wal_with_foreign_keys_and_vec(tmp_path: Path):
    conn = connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("SELECT vec_version()").fetchone()[0].startswith("v")
    conn.close()


def test_driver_can_load_extensions():
    module = driver()
    probe = module.connect(":memory:")
    assert hasattr(probe, "enable_load_extension")
    if not hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        assert module.__name__ == "sqlean"


def test_migrations_from_empty_are_recorded_and_idempotent(tmp_path: Path):
    db = Database(tmp_path / "m.db")
    assert db.call(migrations.migrate) == [m.__name__ for m in migrations.MIGRATIONS]
    assert db.call(migrations.migrate) == []
    db.close()


def test_migration_from_the_previous_schema_keeps_and_indexes_old_data(tmp_path: Path):
    db = Database(tmp_path / "old.db")
    db.call(migrations.migrate, len(migrations.MIGRATIONS) - 1)

    def old_rows(conn):
        conn.execute(
            "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
            "VALUES ('discord', '1', 'UTC', '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')"
        )
        conn.execute(
            "INSERT INTO messages (agent_id, role, kind, content, search_text, created_at) "
            "VALUES (1, 'user', 'user', 'my parrot is called Kiwi', 'my parrot is called Kiwi', "
            "'2024-01-01T00:00:01.000000Z')"
        )

    db.call(old_rows)
    db.close()
    db = Database(tmp_path / "old.db")
    assert db.call(migrations.migrate) == [migrations.MIGRATIONS[-1].__name__]
    found = db.call(messages.text_matches, 1, "what is the parrot called", 5)
    assert [i for i, _ in found] == [1]
    db.close()


def test_database_from_a_newer_membot_is_refused(tmp_path: Path):
    db = Database(tmp_path / "new.db")
    db.call(migrations.migrate)
    db.call(lambda c: c.execute("INSERT INTO _migrations VALUES ('m999_future', 'x')"))
    with pytest.raises(StorageError, match="newer membot"):
        db.call(migrations.migrate)
    db.close()


def test_block_limit_is_enforced_in_code_and_in_the_schema(tmp_path: Path):
    db = Database(tmp_path / "b.db")
    setup(db)
    agent = db.call(agents.create, "terminal", "x", "X", "UTC")
    db.call(blocks.create, agent.id, "human", "about", "", 20)
    with pytest.raises(BlockLimitError, match="archival memory"):
        db.call(blocks.write, agent.id, "human", "y" * 21)
    with pytest.raises(StorageError):  # a hand edit that bypasses the code is refused too
        db.call(lambda c: c.execute("UPDATE blocks SET value = ? WHERE agent_id = ?", ("z" * 50, agent.id)))
    assert db.call(blocks.get, agent.id, "human").value == ""
    db.close()


def test_every_read_is_scoped_by_agent(tmp_path: Path):
    db = Database(tmp_path / "iso.db")
    setup(db)
    a = db.call(agents.create, "discord", "a", "A", "UTC")
    b = db.call(agents.create, "discord", "b", "B", "UTC")
    pa = db.call(passages.insert, a.id, "alpha secret: the vault code is 1234", vec(1, 0))
    ma = db.call(
        messages.append,
        a.id,
        "user",
        "user",
        "vault code 1234",
        search_text="vault code 1234",
        embedding=vec(1, 0),
        speaker="A",
    )
    db.call(passages.insert, b.id, "bravo likes tea", vec(0, 1))
    assert db.call(passages.text_matches, b.id, "vault code", 10) == []
    assert [i for i, _ in db.call(passages.nearest, b.id, vec(1, 0), 10)] != [pa.id]
    assert pa.id not in [i for i, _ in db.call(passages.nearest, b.id, vec(1, 0), 10)]
    assert db.call(passages.get_many, b.id, [pa.id]) == []
    assert db.call(messages.get_many, b.id, [ma.id]) == []
    assert db.call(messages.text_matches, b.id, "vault", 10) == []
    assert db.call(messages.nearest, b.id, vec(1, 0), 10) == []
    assert db.call(messages.in_context, b.id) == []
    assert db.call(messages.positions, b.id, [ma.id]) == [] and db.call(messages.at_turns, b.id, [1]) == []
    assert db.call(messages.speakers, b.id) == []
    assert db.call(passages.count, b.id) == 1 and db.call(messages.count, b.id) == 0
    db.close()


def test_other_embedding_model_is_refused_with_the_fix(tmp_path: Path):
    db = Database(tmp_path / "e.db")
    setup(db)
    with pytest.raises(EmbeddingMismatchError, match="membot reembed"):
        db.call(vectors.ensure, "other-model", 16)
    db.close()


def test_locked_database_gives_a_plain_error_and_loses_nothing(tmp_path: Path):
    path = tmp_path / "lock.db"
    db = Database(path)
    setup(db)
    agent = db.call(agents.create, "terminal", "x", "X", "UTC")
    db.call(messages.append, agent.id, "user", "user", "kept", search_text="kept")
    blocker = connect(path)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN EXCLUSIVE")
    other = Database(path, busy_timeout_ms=50, lock_wait=0.3)
    try:
        with pytest.raises(StorageError, match="locked"):
            other.call(messages.append, agent.id, "user", "user", "lost?", search_text="lost?")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [m.content for m in db.call(messages.in_context, agent.id)] == ["kept"]
    other.close()
    db.close()


def test_not_a_database_file_is_a_plain_error(tmp_path: Path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    db = Database(path)
    with pytest.raises(StorageError, match="not a readable membot database"):
        db.call(migrations.migrate)
    db.close()


def test_counters_match_the_rows_after_migrating_an_older_file(tmp_path: Path):
    db = Database(tmp_path / "counts.db")
    db.call(migrations.migrate, 2)
    db.call(
        lambda c: c.execute(
            "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
            "VALUES ('slack', 'U1', 'UTC', '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')"
        )
    )
    for i in range(3):
        db.call(
            lambda c, i=i: c.execute(
                "INSERT INTO messages (agent_id, role, kind, content, search_text, created_at) "
                "VALUES (1, 'user', 'user', ?, ?, '2024-01-01T00:00:00.000000Z')",
                (f"old {i}", f"old {i}"),
            )
        )
    db.call(migrations.migrate)
    db.call(vectors.ensure, "test-model", 8)
    assert db.call(messages.count, 1) == 3
    db.call(messages.append, 1, "user", "user", "new", search_text="new", embedding=vec(1))
    db.call(passages.insert, 1, "a passage", vec(1))
    assert db.call(messages.count, 1) == 4 and db.call(passages.count, 1) == 1
    assert db.call(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0]) == 4
    db.close()


def test_vectors_from_the_first_layout_are_moved_into_small_chunks(tmp_path: Path):
    db = Database(tmp_path / "layout.db")
    db.call(migrations.migrate)
    a = db.call(agents.create, "discord", "a", "A", "UTC")

    def first_layout(conn):  # as membot 0.1 made them: sqlite-vec's default 1,024-slot chunks
        for table in vectors.TABLES:
            conn.execute(
                f"CREATE VIRTUAL TABLE {table} USING vec0("
                "agent_id INTEGER PARTITION KEY, embedding FLOAT[8] distance_metric=cosine)"
            )
        conn.execute("INSERT INTO meta VALUES ('embedding_model', 'test-model'), ('embedding_dim', '8')")
        conn.execute(
            "INSERT INTO messages_vec (rowid, agent_id, embedding) VALUES (7, ?, ?), (8, ?, ?)",
            (a.id, vec(1, 0), a.id, vec(0, 1)),
        )

    db.call(first_layout)
    db.call(vectors.ensure, "test-model", 8)
    assert [i for i, _ in db.call(messages.nearest, a.id, vec(1, 0.1), 2)] == [7, 8]
    sql = db.call(
        lambda c: c.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_vec'").fetchone()[0]
    )
    assert f"chunk_size={vectors.CHUNK_SIZE}" in sql
    sizes = db.call(lambda c: c.execute("SELECT size FROM messages_vec_chunks").fetchall())
    assert sizes == [(vectors.CHUNK_SIZE,)]
    db.close()
