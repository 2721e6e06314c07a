"""Deleting and re-parenting memory on a real SQLite file with sqlite-vec: nothing stays behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage import (
    agents,
    blocks,
    conversations,
    identities,
    inbox,
    lifecycle,
    messages,
    outbox,
    passages,
    vectors,
)
from storage.clock import to_iso
from storage.db import Database, connect
from tests.test_vector_cache import DIM, cache_of, open_db

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
RNG = np.random.default_rng(7)


def unit() -> bytes:
    v = RNG.standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tobytes()


def at(minutes: float, microseconds: int = 0) -> str:
    return to_iso(T0 + timedelta(minutes=minutes, microseconds=microseconds))


def say(
    conn: Any, agent_id: int, text: str, minutes: float, micros: int = 0, **options: Any
) -> messages.Message:
    created_at = at(minutes, micros)
    return messages.append(
        conn,
        agent_id,
        "user",
        "user",
        text,
        search_text=text,
        created_at=created_at,
        embedding=unit(),
        **options,
    )


def rows(conn: Any, sql: str, *args: Any) -> list[Any]:
    return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def agent_tables(conn: Any) -> list[str]:
    """Every table with an agent_id column, the vec0 tables included."""
    found = "SELECT m.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c WHERE c.name = 'agent_id'"
    return sorted(name for (name,) in rows(conn, found + " AND m.type = 'table'"))


def fts_hits(conn: Any, table: str, match: str) -> list[int]:
    """Row ids the FTS index itself returns (no join, so stale entries would show)."""
    return [i for (i,) in rows(conn, f"SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH ?", match)]


def fts_consistent(conn: Any) -> None:
    """FTS5's own check that every index entry matches its content row (owner tokens included)."""
    for table in ("messages_fts", "passages_fts"):
        conn.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")


def snapshot(conn: Any, agent_id: int) -> dict[str, list[Any]]:
    """Everything stored for one agent, down to vec0 chunks and FTS index instances."""
    found: dict[str, list[Any]] = {"agents": rows(conn, "SELECT * FROM agents WHERE id = ?", agent_id)}
    for table in agent_tables(conn):
        extra = "rowid, " if table in vectors.TABLES else ""
        found[table] = sorted(
            rows(conn, f"SELECT {extra}* FROM {table} WHERE agent_id = ?", agent_id), key=repr
        )
    for table in vectors.TABLES:
        chunks = rows(conn, f"SELECT * FROM {table}_chunks WHERE partition00 = ? ORDER BY chunk_id", agent_id)
        found[f"{table}_chunks"] = chunks
        found[f"{table}_vectors"] = [
            rows(conn, f"SELECT * FROM {table}_vector_chunks00 WHERE rowid = ?", chunk[0]) for chunk in chunks
        ]
    for source in ("messages", "passages"):
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{source}_terms USING fts5vocab(main, {source}_fts, instance)"
        )
        found[f"{source}_terms"] = rows(
            conn,
            f"SELECT * FROM temp.{source}_terms WHERE doc IN (SELECT id FROM {source} WHERE agent_id = ?) "
            "ORDER BY doc, col, offset",
            agent_id,
        )
    return found


def turn_order(conn: Any, agent_id: int) -> tuple[list[int], list[int]]:
    """(ids by turn, ids by (created_at, id)) of the agent's searchable messages; turns must be 1..n."""
    by_turn = rows(
        conn, "SELECT id, turn FROM messages WHERE agent_id = ? AND turn IS NOT NULL ORDER BY turn", agent_id
    )
    assert [t for _, t in by_turn] == list(range(1, len(by_turn) + 1))
    by_time = rows(
        conn,
        "SELECT id FROM messages WHERE agent_id = ? AND search_text != '' ORDER BY created_at, id",
        agent_id,
    )
    return [i for i, _ in by_turn], [i for (i,) in by_time]


def counters_match(conn: Any, agent_id: int) -> None:
    for table, column in (("messages", "message_count"), ("passages", "passage_count")):
        (counted,) = conn.execute(f"SELECT count(*) FROM {table} WHERE agent_id = ?", (agent_id,)).fetchone()
        (kept,) = conn.execute(f"SELECT {column} FROM agents WHERE id = ?", (agent_id,)).fetchone()
        assert counted == kept


def two_agents(db: Database) -> tuple[int, int]:
    a = db.call(agents.create, "discord", "ann", "Ann", "UTC").id
    b = db.call(agents.create, "discord", "bob", "Bob", "UTC").id
    return a, b


def test_deleted_messages_leave_no_words_vectors_turns_or_speakers(tmp_path: Path):
    db = open_db(tmp_path / "d.db")
    a, b = two_agents(db)

    def write(conn: Any) -> dict[str, messages.Message]:
        return {
            "before": say(conn, a, "we are planning the holiday", 0, speaker="Ann"),
            "secret": say(conn, a, "the password is zanzibar", 1, speaker="Eve"),
            "after": say(conn, a, "sounds lovely then", 2, speaker="Ann"),
            "later": say(conn, a, "another day entirely", 600, speaker="Ann"),
            "other": say(conn, b, "zanzibar is an island", 1, speaker="Bob"),
        }

    m = db.call(write)
    context = dict(db.call(rows, "SELECT id, context FROM messages WHERE agent_id = ?", a))
    assert "zanzibar" in context[m["before"].id] and "zanzibar" in context[m["after"].id]
    assert len(db.call(messages.text_matches, a, "zanzibar", 10)) == 3
    untouched = db.call(snapshot, b)

    assert db.call(lifecycle.delete_messages, a, [m["secret"].id, m["other"].id]) == 1

    assert db.call(messages.text_matches, a, "zanzibar", 10) == []
    assert db.call(fts_hits, "messages", "search_text : zanzibar OR context : zanzibar") == [m["other"].id]
    assert db.call(rows, "SELECT id FROM messages WHERE context LIKE '%zanzibar%'") == []
    context = dict(db.call(rows, "SELECT id, context FROM messages WHERE agent_id = ?", a))
    assert context[m["before"].id] == "sounds lovely then"
    assert context[m["after"].id] == "we are planning the holiday"
    assert [i for i, _ in db.call(messages.text_matches, a, "holiday", 10)] == [m["before"].id, m["after"].id]
    assert db.call(rows, "SELECT rowid FROM messages_vec WHERE rowid = ?", m["secret"].id) == []
    by_turn, by_time = db.call(turn_order, a)
    assert by_turn == by_time == [m["before"].id, m["after"].id, m["later"].id]
    assert db.call(messages.speakers, a) == ["Ann"]
    assert db.call(messages.count, a) == 3
    db.call(counters_match, a)
    db.call(fts_consistent)
    assert db.call(snapshot, b) == untouched
    db.close()


def test_a_loaded_vector_cache_never_returns_deleted_messages(tmp_path: Path):
    db = open_db(tmp_path / "cache.db")
    a, b = two_agents(db)
    ids = db.call(lambda c: [say(c, a, f"note {i}", i).id for i in range(300)])
    db.call(lambda c: [say(c, b, f"note {i}", i) for i in range(20)])
    target = ids[150]
    query = db.call(rows, "SELECT embedding FROM messages_vec WHERE rowid = ?", target)[0][0]
    assert db.call(messages.nearest, a, query, 5)[0][0] == target
    assert cache_of(db).loads == 1 and cache_of(db).nbytes > 0
    gone = [target, *ids[:40:3]]

    def delete_then_fail(conn: Any) -> None:
        lifecycle.delete_messages(conn, a, gone)
        assert target not in [i for i, _ in messages.nearest(conn, a, query, 300)]
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        db.call(delete_then_fail)
    assert db.call(messages.nearest, a, query, 5)[0][0] == target  # the rollback brought it back
    loads = cache_of(db).loads

    assert db.call(lifecycle.delete_messages, a, gone) == len(gone)
    found = db.call(messages.nearest, a, query, 300)
    assert cache_of(db).loads == loads  # corrected in memory, not read again
    assert len(found) == 300 - len(gone) and not set(gone) & {i for i, _ in found}
    theirs = db.call(vectors.knn, "messages_vec", a, query, 300)
    assert [i for i, _ in found] == [i for i, _ in theirs]
    assert [d for _, d in found] == pytest.approx([d for _, d in theirs], abs=1e-5)
    assert len(db.call(messages.nearest, b, query, 300)) == 20
    db.close()


def test_deleted_passages_leave_no_words_or_vectors(tmp_path: Path):
    db = open_db(tmp_path / "p.db", min_vectors=5)
    a, b = two_agents(db)
    kept = [db.call(passages.insert, a, f"filler passage {i}", unit()).id for i in range(10)]
    secret_vector = unit()
    secret = db.call(passages.insert, a, "my bank pin is octopus", secret_vector).id
    other = db.call(passages.insert, b, "octopus facts", unit()).id
    assert db.call(passages.nearest, a, secret_vector, 1)[0][0] == secret  # loads the cache
    untouched = db.call(snapshot, b)

    assert db.call(lifecycle.delete_passages, a, [secret, other]) == 1

    assert db.call(passages.text_matches, a, "octopus", 10) == []
    assert db.call(fts_hits, "passages", "octopus") == [other]
    assert db.call(rows, "SELECT rowid FROM passages_vec WHERE rowid = ?", secret) == []
    assert {i for i, _ in db.call(passages.nearest, a, secret_vector, 50)} == set(kept)
    assert db.call(passages.count, a) == 10
    db.call(counters_match, a)
    db.call(fts_consistent)
    assert db.call(snapshot, b) == untouched
    db.close()


def fill_everything(conn: Any, agent_id: int, name: str) -> None:
    """One row of this agent in every agent table, public and private memory, a loadable cache."""
    channel = conversations.ensure(conn, "discord", f"chan-{name}", "", private=False)
    first = say(
        conn,
        agent_id,
        f"{name} says hello in public",
        0,
        speaker=name,
        conversation_id=channel,
        private=False,
    )
    for i in range(12):
        say(conn, agent_id, f"{name} private thought {i}", 1 + i, speaker="Bot")
    passages.insert(conn, agent_id, f"{name} keeps this passage", unit())
    passages.insert(conn, agent_id, f"{name} public passage", unit(), private=False, conversation_id=channel)
    blocks.create(conn, agent_id, "human", "about them", f"{name} likes tea", 200)
    blocks.create(conn, agent_id, "human", "about them", f"{name} in public", 200, scope=blocks.PUBLIC)
    identities.link(conn, "slack", f"U-{name}", agent_id, name)
    inbox.add(conn, agent_id, f"key-{name}", "{}", first.id)
    inbox.add(conn, agent_id, f"key2-{name}", "{}")
    outbox.add(conn, agent_id, channel, "discord", f"reply to {name}")
    unembedded = messages.append(
        conn, agent_id, "user", "user", "x", search_text=f"{name} unembedded", created_at=at(20)
    )
    messages.mark_unembedded(conn, agent_id, unembedded.id)


def nothing_left(conn: Any, agent_id: int) -> None:
    for table in agent_tables(conn):
        assert rows(conn, f"SELECT count(*) FROM {table} WHERE agent_id = ?", agent_id) == [(0,)], table
    assert rows(conn, "SELECT count(*) FROM agents WHERE id = ?", agent_id) == [(0,)]
    for table in vectors.TABLES:
        assert rows(conn, f"SELECT count(*) FROM {table}_chunks WHERE partition00 = ?", agent_id) == [(0,)]
    for source in ("messages", "passages"):
        assert fts_hits(conn, source, f'owner : "a{agent_id}" OR owner : "p{agent_id}"') == []


def test_delete_agent_leaves_no_row_of_it_anywhere(tmp_path: Path):
    db = open_db(tmp_path / "forget.db", min_vectors=5)
    a, b = two_agents(db)
    db.call(fill_everything, a, "ann")
    db.call(fill_everything, b, "bob")
    db.call(vectors.put, "messages_vec", a, 99_999, unit())  # a vector whose message is gone
    query = unit()
    assert len(db.call(messages.nearest, a, query, 100)) == 14 and cache_of(db).loads == 1
    tables = db.call(agent_tables)
    present = {t for t in tables if db.call(rows, f"SELECT 1 FROM {t} WHERE agent_id = ? LIMIT 1", a)}
    expected = {"messages", "passages", "blocks", "speakers", "identities", "inbox", "outbox", "unembedded"}
    assert expected | set(vectors.TABLES) <= present
    untouched = db.call(snapshot, b)

    deleted = db.call(lifecycle.delete_agent, a)

    assert deleted == lifecycle.Deleted(messages=14, passages=2, vectors=16)
    db.call(nothing_left, a)
    assert db.call(messages.nearest, a, query, 100) == []
    assert db.call(identities.find, "slack", "U-ann") is None
    db.call(fts_consistent)
    assert db.call(snapshot, b) == untouched
    assert db.call(lifecycle.delete_agent, a) == lifecycle.Deleted(0, 0, 0)
    db.close()


def test_move_agent_re_parents_memory_in_time_order(tmp_path: Path):
    db = open_db(tmp_path / "move.db", min_vectors=5)
    old = db.call(agents.create, "slack", "U-old", "Fay", "UTC").id
    new = db.call(agents.create, "discord", "new", "Fay", "UTC").id
    bystander = db.call(agents.create, "discord", "cy", "Cy", "UTC").id
    db.call(fill_everything, bystander, "cy")
    channel = db.call(conversations.ensure, "discord", "general", "", False)
    month = 60 * 24 * 30

    def write(conn: Any) -> tuple[list[int], list[int], list[int], int]:
        mine = [say(conn, new, f"new account lighthouse {i}", month + i, speaker="Ann").id for i in range(6)]
        late = say(conn, old, "old late lighthouse", month + 2.5, speaker="Fay").id  # between mine[2] and [3]
        public = [
            say(
                conn,
                old,
                f"old public lighthouse {i}",
                i,
                speaker="Fay",
                conversation_id=channel,
                private=False,
            ).id
            for i in range(3)
        ]
        private = [say(conn, old, f"old private lighthouse {i}", 10 + i, speaker="Fay").id for i in range(3)]
        return mine, public, private, late

    mine, public, private, late = db.call(write)
    public_passage = db.call(passages.insert, old, "old public note about kites", unit(), private=False).id
    private_passage = db.call(passages.insert, old, "old private note about kites", unit()).id
    db.call(blocks.create, old, "human", "about them", "Fay likes kites", 200)
    db.call(identities.link, "slack", "U-fay", old, "Fay")
    db.call(inbox.add, old, "pending-event", "{}")
    for agent_id in (old, new):  # both caches loaded before the move
        assert db.call(messages.nearest, agent_id, unit(), 3)
    assert cache_of(db).loads == 2 and cache_of(db).nbytes > 0
    untouched = db.call(snapshot, bystander)
    vector_of = dict(db.call(rows, "SELECT rowid, embedding FROM messages_vec WHERE agent_id = ?", old))
    private_of = dict(db.call(rows, "SELECT rowid, private FROM messages_vec WHERE agent_id = ?", old))
    db.call(vectors.put, "messages_vec", old, 99_999, unit())  # a vector whose message is gone

    moved = db.call(lifecycle.move_agent, old, new)

    assert (moved.messages, moved.passages, moved.vectors, moved.identities) == (7, 2, 9, 2)
    assert [(b.label, b.value) for b in moved.blocks] == [("human", "Fay likes kites")]
    found = {i for i, _ in db.call(messages.text_matches, new, "lighthouse", 50)}
    assert found == {*mine, *public, *private, late}
    assert db.call(messages.text_matches, old, "lighthouse", 50) == []
    assert db.call(fts_hits, "messages", f'owner : "a{old}" OR owner : "p{old}"') == []
    assert {i for i, _ in db.call(messages.text_matches, new, "lighthouse", 50, public_only=True)} == set(
        public
    )
    assert set(db.call(fts_hits, "messages", f'owner : "p{new}"')) == set(public)
    assert {i for i, _ in db.call(passages.text_matches, new, "kites", 10, public_only=True)} == {
        public_passage
    }
    assert {i for i, _ in db.call(passages.text_matches, new, "kites", 10)} == {
        public_passage,
        private_passage,
    }
    assert dict(db.call(rows, "SELECT rowid, private FROM messages_vec WHERE agent_id = ?", new)) == {
        **private_of,
        **{i: 1 for i in mine},
    }
    for table in vectors.TABLES:
        assert db.call(rows, f"SELECT count(*) FROM {table} WHERE agent_id = ?", old) == [(0,)]
        assert db.call(rows, f"SELECT count(*) FROM {table}_chunks WHERE partition00 = ?", old) == [(0,)]
    for rowid in [*public, *private, late]:
        assert db.call(messages.nearest, new, vector_of[rowid], 1)[0][0] == rowid
        assert db.call(messages.nearest, old, vector_of[rowid], 1) == []
    assert {i for i, _ in db.call(messages.nearest, new, unit(), 50, public_only=True)} == set(public)
    by_turn, by_time = db.call(turn_order, new)
    assert by_turn == by_time == [*public, *private, *mine[:3], late, *mine[3:]]
    assert db.call(messages.speakers, new) == ["Ann", "Fay"]
    assert db.call(rows, "SELECT count(*) FROM agents WHERE id = ?", old) == [(0,)]
    assert db.call(messages.count, new) == 13 and db.call(passages.count, new) == 2
    db.call(counters_match, new)
    assert (
        db.call(agents.find, "slack", "U-fay").id == new and db.call(agents.find, "slack", "U-old").id == new
    )
    assert db.call(rows, "SELECT count(*) FROM inbox WHERE agent_id = ?", new) == [(1,)]
    assert {m.id for m in db.call(messages.in_context, new)} == set(mine)  # two queues not interleaved
    context = dict(db.call(rows, "SELECT id, context FROM messages WHERE agent_id = ?", new))
    assert context[private[0]] == "old private lighthouse 1"  # the public message before is not shared
    assert context[mine[2]] == "new account lighthouse 1\nold late lighthouse"
    assert context[late] == "new account lighthouse 2\nnew account lighthouse 3"
    db.call(fts_consistent)
    assert db.call(snapshot, bystander) == untouched
    db.close()


def test_rebuild_context_and_renumber_follow_append_exactly(tmp_path: Path):
    db = open_db(tmp_path / "ctx.db")
    a, b = two_agents(db)
    dm = db.call(conversations.ensure, "discord", "dm", "", True)
    channel = db.call(conversations.ensure, "discord", "chan", "", False)
    gap = messages.CONVERSATION_GAP.total_seconds() / 60
    plan = [  # (minutes, microseconds, conversation, private, text)
        (0, 0, None, True, "first words"),
        (gap, 0, None, True, "exactly two hours later " + "long " * 500),
        (2 * gap, 1, None, True, "a microsecond too late"),
        (2 * gap + 1, 0, dm, True, "in the dm"),
        (2 * gap + 2, 0, channel, False, "in the channel"),
        (2 * gap + 3, 0, channel, False, "\nstarts with a newline"),
        (2 * gap + 4, 0, channel, False, "ends the channel talk\n"),
        (2 * gap + 5, 0, channel, True, "same channel, private flag"),
        (2 * gap + 6, 0, dm, True, "back in the dm"),
    ]

    def write(conn: Any) -> None:
        for minutes, micros, conversation, private, text in plan:
            say(conn, a, text, minutes, micros, conversation_id=conversation, private=private)
        messages.append(conn, a, "assistant", "notice", "not searchable", created_at=at(1))

    db.call(write)
    expected = db.call(rows, "SELECT id, turn, context FROM messages WHERE agent_id = ? ORDER BY id", a)
    assert [bool(c) for _, _, c in expected] == [
        True,
        True,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert len(expected[0][2]) == messages.CONTEXT_CHARS and expected[6][2] == "\nstarts with a newline"
    untouched = db.call(snapshot, b)
    db.call(lambda c: c.execute("UPDATE messages SET context = 'stale', turn = 99 WHERE agent_id = ?", (a,)))

    assert db.call(lifecycle.renumber_turns, a) == 10 and db.call(lifecycle.rebuild_context, a) == 10

    assert (
        db.call(rows, "SELECT id, turn, context FROM messages WHERE agent_id = ? ORDER BY id", a) == expected
    )
    assert db.call(lifecycle.renumber_turns, a) == 0 and db.call(lifecycle.rebuild_context, a) == 0
    assert db.call(messages.text_matches, a, "stale", 10) == []
    db.call(fts_consistent)
    assert db.call(snapshot, b) == untouched
    db.close()


def test_imported_older_messages_are_renumbered_before_newer_ones(tmp_path: Path):
    db = open_db(tmp_path / "import.db")
    a, _ = two_agents(db)
    newer = db.call(lambda c: [say(c, a, f"recent {i}", 1000 + i).id for i in range(3)])
    older = db.call(lambda c: [say(c, a, f"imported {i}", 990 + i).id for i in range(3)])
    by_turn, by_time = db.call(turn_order, a)
    assert by_turn == [*newer, *older] != by_time  # append numbers them in arrival order
    context = dict(db.call(rows, "SELECT id, context FROM messages WHERE agent_id = ?", a))
    assert context[newer[2]] == "recent 1\nimported 0"  # linked to its arrival-order neighbour

    db.call(lifecycle.renumber_turns, a)
    db.call(lifecycle.rebuild_context, a)

    by_turn, by_time = db.call(turn_order, a)
    assert by_turn == by_time == [*older, *newer]
    context = dict(db.call(rows, "SELECT id, context FROM messages WHERE agent_id = ?", a))
    assert context[newer[2]] == "recent 1"
    assert context[older[2]] == "imported 1\nrecent 0" and context[newer[0]] == "imported 2\nrecent 1"
    assert [i for i, _ in db.call(messages.text_matches, a, "imported", 10)][-1:] == [newer[0]]
    db.call(fts_consistent)
    db.close()


def test_delete_agent_does_not_rely_on_foreign_key_cascades(tmp_path: Path):
    open_db(tmp_path / "fk.db").close()
    conn = connect(tmp_path / "fk.db")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    a = agents.create(conn, "discord", "ann", "Ann", "UTC").id
    fill_everything(conn, a, "ann")
    assert lifecycle.delete_agent(conn, a).messages == 14
    nothing_left(conn, a)
    conn.execute("COMMIT")
    conn.close()
