"""Copying every row of one membot database into another (`membot migrate-db`, bot/migrate_db.py).

What to copy comes from the schema itself: a fresh in-memory SQLite database built by
storage/migrations.py gives the tables, their columns, primary keys and foreign keys (so they
are copied parents first), and its triggers say which columns and rows the target's own
triggers fill in as rows arrive. Left out: the full-text and vector virtual tables and their
shadow tables (each side indexes what it holds; vectors are copied through storage/vectors.py),
`_migrations` (each side records its own) and `meta` (the embedding record, `vectors.ensure`).
PostgreSQL's extra columns (`rowid` identities, the generated `fts`) are never written.

Every write is keyed on the primary key and skips what is already there, so a second run
copies nothing and an interrupted one carries on. Counters kept by triggers (`agents.
message_count`, ...) are copied as 0 and counted by the target's triggers as the rows arrive;
rows triggers make or change (`heartbeats`, `speakers`) are copied last and overwritten where
they differ. A row already in the target under the same id but made at another time is
another deployment's: the copy stops rather than mix two deployments. Source rows are read in
keyset pages of `BATCH`, one transaction each, in the order they were stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from storage import migrations, vectors
from storage.db import Connection, Database
from storage.errors import StorageError
from storage.postgres import dialect

BATCH = 500  # rows per transaction
SKIPPED = ("_migrations", "meta")
Row = tuple[Any, ...]
Progress = Callable[[str, int], None]  # (table, rows read)

_UPDATE = re.compile(r"\bUPDATE\s+(\w+)\s+SET\s+(.*?)\s+WHERE\b", re.IGNORECASE | re.DOTALL)
_INSERT = re.compile(r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+(\w+)", re.IGNORECASE)
_COUNT = re.compile(r"\b(\w+)\s*=\s*\1\s*[-+]\s*\d+")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key; () for none
    rowid: bool  # a SQLite rowid table (not WITHOUT ROWID): read in rowid order
    counters: tuple[str, ...] = ()  # columns the target's triggers count up: written as 0
    reconciled: bool = False  # rows the target's triggers make or change: overwritten where they differ


@dataclass(frozen=True)
class Count:
    table: str
    source: int
    target: int
    copied: int


def plan() -> list[Table]:
    """The tables to copy, in an order that satisfies their foreign keys."""
    db = Database(":memory:", vector_cache_bytes=0)
    try:
        return db.call(_plan)
    finally:
        db.close()


def _plan(conn: Connection) -> list[Table]:
    migrations.migrate(conn)
    objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    virtual = [
        name for kind, name, sql in objects if kind == "table" and sql.upper().startswith("CREATE VIRTUAL")
    ]
    names = [
        name
        for kind, name, _ in objects
        if kind == "table"
        and name not in SKIPPED
        and not name.startswith("sqlite_")
        and not any(name == v or name.startswith(v + "_") for v in virtual)
    ]
    counters, reconciled = _trigger_effects([sql for kind, _, sql in objects if kind == "trigger"])
    tables, parents = {}, {}
    for _, name, sql in (o for o in objects if o[1] in names):
        info = conn.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (name,)).fetchall()
        tables[name] = Table(
            name,
            tuple(column for column, _ in info),
            tuple(column for column, pk in sorted(info, key=lambda c: c[1]) if pk),
            "WITHOUT ROWID" not in sql.upper(),
            tuple(c for c, _ in info if c in counters.get(name, ())),
            name in reconciled,
        )
        found = conn.execute('SELECT DISTINCT "table" FROM pragma_foreign_key_list(?)', (name,)).fetchall()
        parents[name] = {parent for (parent,) in found if parent != name}
    return _ordered(tables, parents)


def _trigger_effects(triggers: Sequence[str]) -> tuple[dict[str, set[str]], set[str]]:
    """({table: columns only ever counted up and down by triggers}, {tables triggers otherwise write})."""
    counters: dict[str, set[str]] = {}
    written: set[str] = set()
    for sql in triggers:
        body = sql.split(" BEGIN", 1)[-1]
        for table, assignments in _UPDATE.findall(body):
            if _COUNT.sub("", assignments).strip(" ,\n\t"):
                written.add(table)
            else:
                counters.setdefault(table, set()).update(c for c in _COUNT.findall(assignments))
        written.update(_INSERT.findall(body))
    return counters, written


def _ordered(tables: dict[str, Table], parents: dict[str, set[str]]) -> list[Table]:
    """Parents before children; the tables triggers write, last."""
    done: list[str] = []
    for last in (False, True):
        waiting = [n for n in tables if tables[n].reconciled == last]
        while waiting:
            ready = [n for n in waiting if parents[n] & tables.keys() <= set(done)]
            if not ready:
                raise StorageError(
                    f"migrate-db cannot order the tables {', '.join(waiting)} by their foreign keys."
                )
            done.extend(ready)
            waiting = [n for n in waiting if n not in ready]
    return [tables[n] for n in done]


# --- reading the source ---------------------------------------------------------------------


def reading_order(conn: Connection, tables: Sequence[Table]) -> dict[str, tuple[str, ...]]:
    """Per table, the columns this database pages it by (the order its rows were stored in);
    () when it has none (read whole)."""
    if dialect(conn) == "postgres":
        found = conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'rowid' "
            "AND table_schema = current_schema()"
        ).fetchall()
        with_rowid = {name for (name,) in found}
        return {t.name: ("rowid",) if t.name in with_rowid else t.key for t in tables}
    return {t.name: ("rowid",) if t.rowid else t.key for t in tables}


def read_rows(conn: Connection, table: Table, order: tuple[str, ...], after: Row | None) -> list[Row]:
    """The next page of `table` after the paging key `after`: (paging key..., columns...) each."""
    columns = ", ".join((*order, *table.columns))
    if not order:
        return list(conn.execute(f"SELECT {columns} FROM {table.name} ORDER BY {', '.join(table.columns)}"))
    where, params = "", []
    if after is not None:
        where = f" WHERE ({', '.join(order)}) > ({', '.join('?' * len(order))})"
        params = list(after)
    return list(
        conn.execute(
            f"SELECT {columns} FROM {table.name}{where} ORDER BY {', '.join(order)} LIMIT ?", (*params, BATCH)
        )
    )


def all_rows(conn: Connection, table: Table) -> list[Row]:
    return [tuple(row) for row in conn.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}")]


# --- writing the target ---------------------------------------------------------------------


def write_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> int:
    """Insert the rows the target lacks (by primary key); how many went in."""
    if not rows:
        return 0
    if table.reconciled:
        return _reconcile(conn, table, rows)
    if table.counters:
        zero = [table.columns.index(c) for c in table.counters]
        rows = [tuple(0 if i in zero else v for i, v in enumerate(row)) for row in rows]
    _refuse_nul(conn, table, rows)
    names, marks = ", ".join(table.columns), ", ".join("?" * len(table.columns))
    if not table.key:
        conn.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
        return len(rows)
    there = _existing(conn, table, rows)
    _check_same(table, rows, there)
    new = [row for row in rows if _key(table, row) not in there]
    if new:
        conn.executemany(
            f"INSERT INTO {table.name} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO NOTHING",
            new,
        )
    return len(new)


def _key(table: Table, row: Row) -> Row:
    return tuple(row[table.columns.index(k)] for k in table.key)


def _existing(conn: Connection, table: Table, rows: Sequence[Row]) -> dict[Row, Row]:
    """The target's rows with the primary keys of `rows`, by key."""
    marks = "(" + ", ".join("?" * len(table.key)) + ")"
    found = conn.execute(
        f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE ({', '.join(table.key)}) IN "
        f"(VALUES {', '.join([marks] * len(rows))})",
        [value for row in rows for value in _key(table, row)],
    ).fetchall()
    return {_key(table, tuple(row)): tuple(row) for row in found}


def _check_same(table: Table, rows: Sequence[Row], there: dict[Row, Row]) -> None:
    """Refuse rows already in the target under the same id but made at another time."""
    if "created_at" not in table.columns:
        return
    at = table.columns.index("created_at")
    for row in rows:
        other = there.get(_key(table, row))
        if other is not None and other[at] != row[at]:
            raise StorageError(
                f"The target already holds another deployment's data: {table.name} "
                f"{', '.join(map(str, _key(table, row)))} there was made at {other[at]}, here at {row[at]}. "
                "Copy into an empty database (or one an earlier `membot migrate-db` of this source filled)."
            )


def _refuse_nul(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """PostgreSQL text cannot hold U+0000 (SQLite's can): name the row rather than fail on the batch."""
    if dialect(conn) != "postgres":
        return
    for row in rows:
        for column, value in zip(table.columns, row, strict=True):
            if isinstance(value, str) and "\x00" in value:
                where = " AND ".join(f"{k} = {v!r}" for k, v in zip(table.key, _key(table, row), strict=True))
                raise StorageError(
                    f"{table.name}.{column} holds a NUL character (U+0000) in the row {where or repr(row)}, "
                    "which PostgreSQL text cannot store: remove it from that row in the source, then run "
                    "migrate-db again (what was copied stays)."
                )


def _reconcile(conn: Connection, table: Table, rows: Sequence[Row]) -> int:
    """Write the rows that are missing or differ (the target's triggers made or changed them)."""
    there = _existing(conn, table, rows)
    changed = [row for row in rows if there.get(_key(table, row)) != tuple(row)]
    if changed:
        rest = [c for c in table.columns if c not in table.key]
        update = f"UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}" if rest else "NOTHING"
        conn.executemany(
            f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({', '.join('?' * len(table.columns))}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO {update}",
            changed,
        )
    return len(changed)


def missing(rows: Sequence[Row], existing: Counter[Row]) -> list[Row]:
    """For a table without a primary key: the rows not matched by one already in the target
    (`existing` is used up as rows match, so duplicates are copied as many times as they occur)."""
    out = []
    for row in rows:
        if existing[row] > 0:
            existing[row] -= 1
        else:
            out.append(row)
    return out


# --- vectors --------------------------------------------------------------------------------


def _ids_table(conn: Connection, table: str) -> str:
    """Where this database lists a vector table's rowids in order: sqlite-vec's own rowid table
    (a plain table: a range read is an index read, unlike the vec0 table's full scan)."""
    if dialect(conn) == "postgres" or not has_table(conn, f"{table}_rowids"):
        return table
    return f"{table}_rowids"


def has_table(conn: Connection, name: str) -> bool:
    if dialect(conn) == "postgres":
        return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0] is True
    return int(conn.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]) > 0


def vector_ids(conn: Connection, table: str, after: int, upto: int | None = None) -> list[int]:
    """The rowids of `table` after `after` (up to `upto`, else the next BATCH)."""
    source = _ids_table(conn, table)
    if upto is not None:
        found = conn.execute(f"SELECT rowid FROM {source} WHERE rowid > ? AND rowid <= ?", (after, upto))
    else:
        found = conn.execute(
            f"SELECT rowid FROM {source} WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, BATCH)
        )
    return [int(rowid) for (rowid,) in found]


def read_vectors(conn: Connection, table: str, rowids: Sequence[int]) -> list[tuple[int, int, bool, bytes]]:
    """(rowid, agent_id, private, float32 bytes) of these rows."""
    if dialect(conn) == "postgres":
        found = conn.execute(
            f"SELECT rowid, agent_id, private, embedding::text FROM {table} WHERE rowid >= ? AND rowid <= ?",
            (min(rowids), max(rowids)),
        ).fetchall()
    else:  # point reads: vec0 answers `rowid = ?` from its index, a range or IN list by a full scan
        query = f"SELECT rowid, agent_id, private, embedding FROM {table} WHERE rowid = ?"
        found = [row for rowid in rowids for row in conn.execute(query, (rowid,)).fetchall()]
    wanted = set(rowids)
    return [(int(r), int(a), bool(p), vectors.from_column(e)) for r, a, p, e in found if r in wanted]


def write_vectors(conn: Connection, table: str, rows: Sequence[tuple[int, int, bool, bytes]]) -> int:
    """Store these vectors in one statement (a pipeline on PostgreSQL: a quarter of the time of
    `vectors.put` row by row); the vector cache, if any, forgets the agents written to."""
    conn.executemany(
        f"INSERT INTO {table} (rowid, agent_id, private, embedding) VALUES (?, ?, ?, ?)",
        [
            (rowid, agent, int(private), vectors.as_parameter(conn, vector))
            for rowid, agent, private, vector in rows
        ],
    )
    for agent in {agent for _, agent, _, _ in rows}:
        vectors.invalidate(conn, table, agent)
    return len(rows)


# --- checking and finishing -------------------------------------------------------------------


def counts(conn: Connection, tables: Sequence[Table]) -> dict[str, int]:
    """Rows per table, the vector tables included (when they exist)."""
    found = {t.name: int(conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]) for t in tables}
    for table in vectors.TABLES:
        if has_table(conn, table):
            found[table] = int(conn.execute(f"SELECT count(*) FROM {_ids_table(conn, table)}").fetchone()[0])
    return found


def counter_values(conn: Connection, tables: Sequence[Table]) -> dict[str, list[Row]]:
    """Per table with trigger-kept counters: (primary key..., counters...) of every row."""
    return {
        t.name: [
            tuple(row)
            for row in conn.execute(
                f"SELECT {', '.join((*t.key, *t.counters))} FROM {t.name} ORDER BY {', '.join(t.key)}"
            )
        ]
        for t in tables
        if t.counters
    }


def finish(conn: Connection, tables: Sequence[Table]) -> None:
    """On PostgreSQL: move each id sequence past the ids copied in, and refresh the planner's
    statistics of the tables just filled."""
    if dialect(conn) != "postgres":
        return
    for table in tables:
        if table.key == ("id",):
            conn.execute(
                "SELECT setval(s, greatest(coalesce((SELECT max(id) FROM "
                f"{table.name}), 0), coalesce(pg_sequence_last_value(s::regclass), 0)) + 1, false) "
                f"FROM pg_get_serial_sequence('{table.name}', 'id') AS s WHERE s IS NOT NULL"
            )
    for name in [*(t.name for t in tables), *vectors.TABLES]:
        if has_table(conn, name):
            conn.execute(f"ANALYZE {name}")


def is_membot(conn: Connection) -> bool:
    """Whether this database was made by membot (it records its migrations)."""
    return has_table(conn, "_migrations")
