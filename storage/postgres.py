"""PostgreSQL (with pgvector) as the database: `MEMBOT_DB=postgresql://...`.

The storage modules are written once, against the DB-API connection the SQLite `Database`
hands them. `PgDatabase` hands them a `PgConnection` instead: the same `execute` / `fetchone` /
`lastrowid` surface over a psycopg 3 connection, which turns SQLite's spelling into
PostgreSQL's (`?` placeholders, `INSERT OR IGNORE`, `json_each`, `group_concat`, ...) once per
statement text and remembers the result. What cannot be spelled the same way (full-text
search, vector search, the catalog) asks `dialect(conn)` and says it in the module.

Transactions are SERIALIZABLE, so the read-then-write code written for SQLite's one writer
at a time keeps its meaning with many processes on one database; a serialization failure or
deadlock rolls back and the whole call is tried again, as a SQLite call is when it meets
another process's lock. Every transaction first sets `membot.agent` (row-level security,
storage/postgres_schema.py): to the agent id when the storage function's first argument is
`agent_id`, else to 'all'. A query inside an agent's transaction that forgot its agent filter
still sees nothing of anyone else.

psycopg is synchronous here, on a pool of worker threads: the event loop never blocks, and
the storage functions stay the plain functions both backends share.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from typing import Any, ParamSpec, TypeVar

from storage.db import WRITE, Database, _run_callbacks
from storage.errors import StorageError
from storage.lock_wait import Busy
from storage.vector_index import INDEX_AT, VectorIndexes, sweep

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SCHEMES = ("postgresql://", "postgres://")
POOL_SIZE = 8  # connections (and threads) per process
LOCK_WAIT = 120.0
INDEX_FIRST, INDEX_EVERY = 60.0, 600.0  # seconds: the first per-agent vector index sweep, the next ones
UNIQUE_VIOLATION, UNIQUE_TRIES = "23505", 4
MIGRATION_LOCK = 0x6D656D626F74  # "membot": the advisory lock the migrations hold
RETRYABLE = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available

# Tables whose `id` the database assigns; an INSERT into one returns it (SQLite's lastrowid).
IDENTITY_TABLES = frozenset(
    {
        "agents",
        "messages",
        "passages",
        "conversations",
        "inbox",
        "outbox",
        "reminders",
        "documents",
    }
)


def is_postgres(target: str) -> bool:
    return target.startswith(SCHEMES)


def redacted(target: str) -> str:
    """The connection string without its password (for logs and errors)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", target)


def dialect(conn: Any) -> str:
    """'postgres' or 'sqlite': which database `conn` talks to."""
    return getattr(conn, "dialect", "sqlite")


def protect(conn: Any, table: str, column: str = "agent_id") -> None:
    """Put `table` under the same row-level security as the schema's agent tables."""
    from storage import postgres_schema

    for statement in postgres_schema.statements(postgres_schema.row_security(table, column)):
        conn.raw.execute(statement)


# --- SQLite's spelling into PostgreSQL's -------------------------------------------------------

_JSON_IN = re.compile(r"([\w.]+) IN \(SELECT value FROM json_each\(\?\)\)", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+(OR\s+(IGNORE|REPLACE)\s+)?INTO\s+(\w+)\s*(\(([^)]*)\))?", re.IGNORECASE)


def _json_in(match: re.Match[str]) -> str:
    column = match.group(1)
    cast = "" if column.endswith(("channel_id", "platform_user_id", "label", "name")) else "::bigint"
    return f"{column} IN (SELECT value{cast} FROM jsonb_array_elements_text(?::jsonb) AS j(value))"


def _placeholders(sql: str) -> str:
    """`?` into `%s` and a literal `%` into `%%`, outside and inside quoted strings alike."""
    out: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, bool]:
    """(PostgreSQL text of `sql`, whether it returns the new row's id for `lastrowid`)."""
    text = _JSON_IN.sub(_json_in, sql)
    text = re.sub(r"\bgroup_concat\(", "string_agg(", text)
    text = re.sub(r"\bchar\(10\)", "chr(10)", text)
    text = re.sub(r"\bsubstr\((.+), -(\d+)\)", r"right(\1, \2)", text)  # the last N characters
    returning = False
    insert = _INSERT.match(text)
    if insert is not None:
        verb, table, columns = (insert.group(2) or "").upper(), insert.group(3), insert.group(5)
        text = text.replace(insert.group(1) or "\0", "", 1) if insert.group(1) else text
        if verb == "IGNORE":
            text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
        elif verb == "REPLACE":
            names = [name.strip() for name in (columns or "").split(",")]
            updates = ", ".join(f"{name} = excluded.{name}" for name in names[1:])
            text = text.rstrip().rstrip(";") + f" ON CONFLICT ({names[0]}) DO UPDATE SET {updates}"
        if table in IDENTITY_TABLES and not re.search(r"\bRETURNING\b", text, re.IGNORECASE):
            text += " RETURNING id"
            returning = True
    return _placeholders(text), returning


def _params(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any]:
    if isinstance(params, dict):  # pragma: no cover - the storage code passes sequences
        raise TypeError("named parameters are not used by membot's storage code")
    return [_value(p) for p in params]


def _value(value: Any) -> Any:
    """A parameter as PostgreSQL takes it: a bool as 0/1 (the flag columns are integers, as in
    SQLite), a NUL character (which PostgreSQL text cannot hold) as U+FFFD."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class PgCursor:
    """The DB-API cursor surface the storage code uses, with SQLite's `lastrowid`."""

    def __init__(self, cursor: Any, lastrowid: int | None) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Done:
    """What `executemany` leaves: how many rows it changed (its cursor is closed)."""

    lastrowid = None

    def __init__(self, rowcount: int) -> None:
        self.rowcount = int(rowcount)


class PgConnection:
    """A psycopg connection speaking the SQLite-flavoured DB-API the storage modules use."""

    dialect = "postgres"
    vector_cache = None  # pgvector does its own search

    def __init__(self, raw: Any, vector_indexes: VectorIndexes | None = None) -> None:
        self.raw = raw
        self.vector_indexes = vector_indexes  # (storage/vector_index.py)
        self.committed: list[Callable[[], object]] = []  # storage.db.after_commit

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        text, returning = translate(sql)
        cursor = self.raw.execute(text, _params(params), prepare=None)
        lastrowid = None
        if returning:
            rows = cursor.fetchall()
            lastrowid = int(rows[-1][0]) if rows else None
        return PgCursor(cursor, lastrowid)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> _Done:
        text, returning = translate(sql)
        if returning:
            text = text[: -len(" RETURNING id")]
        with self.raw.cursor() as cursor:
            cursor.executemany(text, [_params(p) for p in seq])
            return _Done(cursor.rowcount)


# --- the schema --------------------------------------------------------------------------------


def prepare(conn: Any) -> None:
    """The `vector` extension and the `_migrations` table, before any migration runs."""
    from storage import postgres_schema

    present = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if present is None:
        conn.execute("SAVEPOINT extension")
        try:
            conn.execute(postgres_schema.EXTENSION)
        except Exception as exc:
            conn.execute("ROLLBACK TO SAVEPOINT extension")
            state = _sqlstate(exc)
            if state == "42501":  # insufficient privilege
                raise StorageError(
                    "This PostgreSQL role may not create the `vector` extension: run "
                    "`CREATE EXTENSION vector;` in this database as its owner or a superuser, then start again."
                ) from exc
            raise StorageError(
                f"PostgreSQL has no pgvector ({str(exc).strip().splitlines()[0]}); install it on the server "
                "(https://github.com/pgvector/pgvector) or use a managed PostgreSQL that offers it."
            ) from exc
    for statement in postgres_schema.statements(postgres_schema.BOOTSTRAP):
        conn.raw.execute(statement)
    bypass = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if bypass is not None and bypass[0]:
        log.warning(
            "MEMBOT_DB logs in as a PostgreSQL superuser (or a role with BYPASSRLS): row-level "
            "security does not bind it; give membot a role of its own (see README)"
        )


def apply_migration(conn: Any, name: str) -> None:
    """Run the PostgreSQL script of the migration `name` (storage/postgres_schema.py)."""
    from storage import postgres_schema

    for statement in postgres_schema.statements(postgres_schema.POSTGRES[name]):
        conn.raw.execute(statement)  # DDL as written: no placeholders to translate


# --- the database ------------------------------------------------------------------------------


@cache
def _scoped_by_agent(fn: Callable[..., Any]) -> bool:
    """Whether `fn(conn, agent_id, ...)` works for one agent (its first argument is named so)."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) > 1 and names[1] == "agent_id"


def _scope(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    agent = kwargs.get("agent_id", args[0] if args else None)
    if _scoped_by_agent(fn) and isinstance(agent, int) and not isinstance(agent, bool):
        return str(agent)
    return "all"


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def connection_error(exc: BaseException, target: str) -> StorageError:
    """One line naming the fix for a driver error on the PostgreSQL database `target`."""
    where = redacted(target)
    state = _sqlstate(exc) or ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state.startswith("08") or (state == "" and type(exc).__name__ == "OperationalError"):
        return StorageError(
            f"Cannot connect to PostgreSQL at {where} ({text}); start the server or fix MEMBOT_DB."
        )
    if state in ("28P01", "28000"):
        return StorageError(
            f"PostgreSQL at {where} refused the login ({text}); fix the user or password in MEMBOT_DB."
        )
    if state == "3D000":
        return StorageError(f"PostgreSQL at {where}: {text}; create it (`createdb`) or fix MEMBOT_DB.")
    if state == "53100":
        return StorageError(
            f"PostgreSQL at {where} has no room left ({text}); free disk space on the server."
        )
    if state == "25006":
        return StorageError(f"PostgreSQL at {where} is read-only ({text}); point MEMBOT_DB at the primary.")
    return StorageError(f"Database error on {where}: {text}")


class _AbortedPipeline(logging.Filter):
    """psycopg's "error ignored terminating <Pipeline>: pipeline aborted", logged after the error
    that aborted it (a serialization failure inside executemany) was raised and retried."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pipeline aborted" not in record.getMessage()


class PgDatabase(Database):
    """A PostgreSQL database served by a pool of connections, each on its own worker thread.
    (A `Database` to the code that holds one: the same four ways to run a storage function.)"""

    dialect = "postgres"
    vector_cache = None

    def __init__(
        self,
        target: str,
        lock_wait: float = LOCK_WAIT,
        pool_size: int = POOL_SIZE,
        vector_index_at: int = INDEX_AT,
        index_in_background: bool = True,
    ) -> None:  # the base class's SQLite connection is never made
        try:
            import psycopg  # noqa: F401
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StorageError(
                "MEMBOT_DB names a PostgreSQL database but psycopg is missing: run "
                "`pip install 'membot[postgres]'` (psycopg[binary] and psycopg-pool)."
            ) from exc
        self.path = target
        self.where = redacted(target)
        psycopg_log = logging.getLogger("psycopg")
        if not any(isinstance(f, _AbortedPipeline) for f in psycopg_log.filters):
            psycopg_log.addFilter(_AbortedPipeline())
        self.busy_timeout_ms = 0  # (SQLite's; PostgreSQL waits in its own locks)
        self.lock_wait = lock_wait
        # Writes go one at a time, in the order they were asked for, as on SQLite: an agent's
        # events are stored in arrival order and its turns run in that order. Reads (searches,
        # the bulk of the work) run on the rest of the pool at once.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="membot-pg-write")
        self._executor = ThreadPoolExecutor(max_workers=pool_size - 1, thread_name_prefix="membot-pg")
        self._pool = ConnectionPool(
            target,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="membot",
        )
        self._opened = False
        self._open_lock = threading.Lock()
        self._agent_locks: AdvisoryLocks | None = None
        # Large agents' vectors get an HNSW index each (storage/vector_index.py), swept by a
        # thread of this process a minute after opening and every ten minutes after.
        self.vector_index_at = vector_index_at
        self.vector_indexes = VectorIndexes()
        self._index_in_background = index_in_background and vector_index_at > 0
        self._indexer: threading.Thread | None = None
        self._indexing: Any = None  # the sweep's connection while it runs (cancelled at close)
        self._stopping = threading.Event()

    def _open(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            refused = _first_connect_error(self.path)  # one line at once, not the pool's retries
            if refused is not None:
                raise connection_error(refused, self.path) from refused
            try:
                self._pool.open(wait=True, timeout=10)
            except Exception as exc:
                raise connection_error(exc, self.path) from exc
            self._opened = True
            if self._index_in_background:
                self._indexer = threading.Thread(
                    target=self._index_forever, name="membot-pg-index", daemon=True
                )
                self._indexer.start()

    def _index_forever(self) -> None:
        wait = INDEX_FIRST
        while not self._stopping.wait(wait):
            wait = INDEX_EVERY
            try:
                self.index_vectors()
            except Exception as exc:  # (the next sweep tries again; searches stay exact meanwhile)
                if not self._stopping.is_set():
                    log.warning("vector index sweep failed: %s", str(exc).strip().splitlines()[0])

    def index_vectors(self, build: bool = True) -> tuple[int, int] | None:
        """Build the missing per-agent vector indexes and drop unwanted ones (storage/vector_index.py):
        (built, dropped), or None if another process is sweeping."""
        import psycopg

        if self.vector_index_at <= 0:
            return (0, 0)
        try:
            raw = psycopg.connect(self.path, autocommit=True)
        except psycopg.Error as exc:
            raise connection_error(exc, self.path) from exc
        self._indexing = raw
        try:
            done = sweep(raw, self.vector_index_at, build=build)
        finally:
            self._indexing = None
            raw.close()
        self.vector_indexes.forget()
        return done

    def _executor_for(self, begin: str) -> ThreadPoolExecutor:
        return self._writer if begin == WRITE else self._executor

    def _attempt(
        self, begin: str, busy_ms: int, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """One try of `fn(conn, ...)` in one transaction of the pool (`Database._call` and `_run`
        wait and try again on `Busy`); `busy_ms` is SQLite's and unused here."""
        import psycopg

        write = begin == WRITE

        if not self._opened:
            self._open()
        started = time.perf_counter()
        try:
            with self._pool.connection(timeout=self.lock_wait) as raw, raw.transaction():
                schema = getattr(fn, "changes_schema", False)
                level = (
                    "READ COMMITTED" if schema else "SERIALIZABLE" if write else "REPEATABLE READ, READ ONLY"
                )
                raw.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
                if schema:  # one process migrates at a time; the next then sees what it made
                    raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                raw.execute("SELECT set_config('membot.agent', %s, true)", (_scope(fn, args, kwargs),))
                conn = PgConnection(raw, self.vector_indexes if self.vector_index_at > 0 else None)
                result = fn(conn, *args, **kwargs)
            _run_callbacks(conn.committed)
        except StorageError:
            raise
        except psycopg.Error as exc:
            if _sqlstate(exc) in RETRYABLE:
                raise Busy(exc) from exc
            if _sqlstate(exc) == UNIQUE_VIOLATION:  # another process made the same row first: a few
                # tries see it (a real bug is reported, not waited on)
                raise Busy(exc, UNIQUE_TRIES, connection_error(exc, self.path)) from exc
            raise connection_error(exc, self.path) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):  # no connection in time
                raise connection_error(exc, self.path) from exc
            raise
        elapsed = (time.perf_counter() - started) * 1000
        if elapsed > 200 and not getattr(fn, "changes_schema", False):  # (migrations may take long)
            log.warning("slow database call %s took %.0f ms", getattr(fn, "__name__", fn), elapsed)
        return result

    def agent_locks(self) -> AdvisoryLocks:
        if self._agent_locks is None:
            self._agent_locks = AdvisoryLocks(self.path)
        return self._agent_locks

    def autocommit(self, statements: Iterable[str]) -> None:
        """Run statements outside any transaction (VACUUM)."""
        if not self._opened:
            self._open()
        with self._pool.connection() as raw:
            for statement in statements:
                raw.execute(statement)

    async def checkpoint(self) -> bool:
        """After a forget: VACUUM the tables that held the person's rows, so their dead tuples
        are gone from the table files (PostgreSQL's own WAL keeps its history until it recycles
        its segments; see README)."""
        from storage.postgres_schema import AGENT_TABLES

        tables = [*AGENT_TABLES, "messages_vec", "passages_vec"]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.autocommit, [f"VACUUM {t}" for t in tables])
        await loop.run_in_executor(self._executor, lambda: self.index_vectors(build=False))  # its index
        return True

    def close(self) -> None:
        self._stopping.set()
        indexing = self._indexing
        if indexing is not None:  # a build under way: cancelled (its invalid index is dropped next time)
            indexing.cancel_safe()
        if self._indexer is not None:
            self._indexer.join(timeout=10)
        self._writer.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        if self._agent_locks is not None:
            self._agent_locks.close()
        if self._opened:
            self._pool.close()


class AdvisoryLocks:
    """Per-agent locks across processes: session-level advisory locks (key: the agent id, in the
    membot lock space) on one connection of their own. A process that dies loses its session and
    with it every lock it held, so nothing stays claimed. Waiting polls `pg_try_advisory_lock`
    with back-off, so no pooled connection or thread is held by a waiter."""

    SPACE = 0x6D62  # "mb": the first half of the two-int advisory key

    def __init__(self, target: str) -> None:
        self.target = target
        self._conn: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="membot-pg-locks")
        self._closed = False

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.target, autocommit=True)
            except psycopg.Error as exc:
                raise connection_error(exc, self.target) from exc
        return self._conn

    def _try(self, agent_id: int) -> bool:
        row = (
            self._connection()
            .execute("SELECT pg_try_advisory_lock(%s, %s)", (self.SPACE, agent_id))
            .fetchone()
        )
        return bool(row[0])

    def _unlock(self, agent_id: int) -> None:
        if self._conn is not None and not self._conn.closed:  # (closed: the server dropped them all)
            self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self.SPACE, agent_id))

    async def try_acquire(self, agent_id: int) -> bool:
        return bool(await asyncio.get_running_loop().run_in_executor(self._thread, self._try, agent_id))

    async def acquire(self, agent_id: int) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.01
        while not await loop.run_in_executor(self._thread, self._try, agent_id):
            await asyncio.sleep(delay)  # another process runs this agent's turn
            delay = min(delay * 2, 0.25)

    async def release(self, agent_id: int) -> None:
        if self._closed:  # the database was closed under a turn: its session, and locks, are gone
            return
        await asyncio.get_running_loop().run_in_executor(self._thread, self._unlock, agent_id)

    def close(self) -> None:
        self._closed = True
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()


def _first_connect_error(target: str) -> BaseException | None:
    """The driver's own reason a connection fails (the pool only says it timed out)."""
    import psycopg

    try:
        psycopg.connect(target, connect_timeout=5).close()
    except psycopg.Error as exc:
        return exc
    return None
