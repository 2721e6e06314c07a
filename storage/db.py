"""The SQLite file: driver choice, connection setup, and the one worker thread all SQL runs on.

SQLite serialises writers anyway, so every statement for one database goes through a single
thread: the event loop never blocks on disk, and no two coroutines interleave inside one
transaction. `Database.run(fn, *args)` runs `fn(conn, *args)` there inside a write transaction
(`BEGIN IMMEDIATE`); `Database.read` inside a read transaction, which in WAL mode never waits
for a writer. The connection carries the database's `VectorCache` (storage/vector_cache.py),
told how each transaction ended so a rollback leaves no vectors behind in memory.

Another process may hold the write lock for a while (a backup, a VACUUM, a second membot):
a transaction that meets it is tried again whole, with back-off, for up to `lock_wait` seconds
in all (MEMBOT_DB_LOCK_WAIT; storage/lock_wait.py), and the database thread is free between
tries. Driver errors become the storage errors of storage/faults.py, each naming its fix.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Concatenate, ParamSpec, TypeVar

from storage.errors import StorageError
from storage.faults import folder_error, is_busy, storage_error
from storage.lock_wait import Busy, LockWait
from storage.vector_cache import MAX_BYTES, VectorCache

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Connection = Any  # sqlite3.Connection or sqlean's twin; both follow the DB-API.

# Prepared statements kept per connection. sqlean's cache evicts the newest, least-used entry
# first, so once it is full of one-off statements a hot statement can be prepared anew every
# time; searches add one-off ones (IN lists of every length). Room for them, and the hot ones.
STATEMENT_CACHE = 512
BUSY_TIMEOUT_MS = 5000  # a connection's busy timeout; a Database try waits at most lock_wait.TRY_MS
LOCK_WAIT = 120.0  # seconds in all one call waits for another process's lock (MEMBOT_DB_LOCK_WAIT)


def _stdlib_can_load_extensions() -> bool:
    probe = sqlite3.connect(":memory:")
    try:
        return hasattr(probe, "enable_load_extension")
    finally:
        probe.close()


def driver() -> ModuleType:
    """The sqlite3-compatible module to use: the stdlib one if it can load extensions, else sqlean."""
    if _stdlib_can_load_extensions():
        return sqlite3
    try:
        import sqlean  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageError(
            "This Python's sqlite3 cannot load extensions (needed for sqlite-vec) and the "
            "'sqlean.py' package is missing: run `pip install sqlean.py`, or use a Python "
            "built with --enable-loadable-sqlite-extensions."
        ) from exc
    return sqlean  # type: ignore[no-any-return]


def _load_vec(conn: Connection) -> None:
    try:
        import sqlite_vec  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageError("The 'sqlite-vec' package is missing: run `pip install sqlite-vec`.") from exc
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
    except Exception as exc:  # any driver error here has the same fix
        raise StorageError(
            f"Could not load the sqlite-vec extension ({exc}); reinstall it with "
            "`pip install --force-reinstall sqlite-vec`."
        ) from exc


@cache
def _connection_class(module: ModuleType) -> type:
    """The driver's Connection with a `vector_cache` slot (None: every query goes to sqlite-vec)."""
    return type("MembotConnection", (module.Connection,), {"vector_cache": None, "committed": None})


def after_commit(conn: Connection, callback: Callable[[], object]) -> None:
    """Run `callback` once the transaction `conn` is in has committed; never if it rolls back
    (a call tried again after a lock or a serialization failure runs its function anew, so an
    in-memory cache filled inside the function would keep ids of rows that never existed)."""
    conn.committed.append(callback)


def _run_callbacks(callbacks: list[Callable[[], object]]) -> None:
    for callback in callbacks:
        callback()


def connect(
    path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, vector_cache: VectorCache | None = None
) -> Connection:
    """Open the database file with sqlite-vec loaded, WAL, foreign keys and a busy timeout."""
    module = driver()
    target = str(path)
    if target != ":memory:":
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise folder_error(exc, target) from exc
    try:
        conn = module.connect(
            target,
            isolation_level=None,
            check_same_thread=False,
            factory=_connection_class(module),
            cached_statements=STATEMENT_CACHE,
        )
    except module.DatabaseError as exc:
        raise storage_error(exc, target) from exc
    try:
        conn.vector_cache = vector_cache
        conn.committed = []
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # give the -wal file back after a big write
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")
        conn.execute("PRAGMA secure_delete = ON")  # freed content is zeroed: forget leaves no trace
    except module.DatabaseError as exc:
        conn.close()
        raise storage_error(exc, target) from exc
    _load_vec(conn)
    return conn


def changes_schema(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a storage function that migrates or makes tables. On PostgreSQL it runs in a READ
    COMMITTED transaction that first takes the migrations' advisory lock, so that a second process
    starting at the same moment waits, then sees what the first one made (a snapshot taken before
    the wait would not). SQLite's write transactions are exclusive already."""
    fn.changes_schema = True  # type: ignore[attr-defined]
    return fn


def open_at(
    target: str | Path, lock_wait: float = LOCK_WAIT, vector_cache_bytes: int = MAX_BYTES
) -> Database:
    """The database MEMBOT_DB names: a PostgreSQL URL (postgresql://...) or a SQLite file."""
    if str(target).startswith(("postgresql://", "postgres://")):
        from storage.postgres import PgDatabase

        return PgDatabase(str(target), lock_wait=lock_wait)
    return Database(target, vector_cache_bytes=vector_cache_bytes, lock_wait=lock_wait)


def check_writable(path: str | Path, lock_wait: float = LOCK_WAIT) -> None:
    """Fail now, in one line naming the fix, if the database cannot be created or written.

    A real write transaction, committed (a table made and dropped), so a read-only file or
    filesystem, a full disk or a folder that cannot be made shows at start, not at a message.
    """
    db = open_at(path, lock_wait, vector_cache_bytes=0)
    try:
        db.call(_write_probe)
    finally:
        db.close()


def _write_probe(conn: Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS _membot_write_check (x INTEGER)")
    conn.execute("DROP TABLE _membot_write_check")


WRITE = "BEGIN IMMEDIATE"
READ = "BEGIN DEFERRED"


def _is_driver_error(exc: Exception) -> bool:
    return type(exc).__module__.split(".")[0] in {"sqlite3", "sqlean"}


class Database:
    """One SQLite file served by one worker thread, with its own vector cache (0 bytes: none)."""

    def __init__(
        self,
        path: str | Path,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        vector_cache_bytes: int = MAX_BYTES,
        lock_wait: float = LOCK_WAIT,
    ) -> None:
        self.path = str(path)
        self.where = self.path  # how logs and errors name it
        self.busy_timeout_ms = busy_timeout_ms
        self.lock_wait = lock_wait
        self.vector_cache = VectorCache(vector_cache_bytes) if vector_cache_bytes > 0 else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="membot-db")
        self._conn: Connection | None = None
        self._conn_busy_ms = busy_timeout_ms
        self._lock = threading.Lock()

    def _connection(self) -> Connection:
        if self._conn is None:
            if self.vector_cache is not None:
                self.vector_cache.clear()  # data_version is counted per connection
            self._conn = connect(self.path, self.busy_timeout_ms, self.vector_cache)
            self._conn_busy_ms = self.busy_timeout_ms
        return self._conn

    def agent_locks(self) -> Any:
        """Locks per agent that hold across processes, or None: one SQLite file is served by one
        bot process at a time per agent (its turns' locks are that process's own)."""
        return None

    def call(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one write transaction on the calling thread (for start-up and tools)."""
        return self._call(WRITE, fn, args, kwargs)

    def call_read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one read transaction on the calling thread."""
        return self._call(READ, fn, args, kwargs)

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one write transaction on the database thread."""
        return await self._run(WRITE, fn, args, kwargs)

    async def read(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one read transaction (`BEGIN DEFERRED`) on the database thread.

        In WAL mode a reader never waits for a writer, so pure reads go on while another process
        holds the write lock. `fn` must not write (it would wait for the lock like `run`).
        """
        return await self._run(READ, fn, args, kwargs)

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it to nothing (after a forget: old page
        images with deleted text live in the WAL until then). False if another connection's read
        kept part of it (it is truncated at the next checkpoint that finds no reader)."""

        def truncate() -> bool:
            with self._lock:
                conn = self._connection()
                self._set_busy_timeout(conn, self.busy_timeout_ms)
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                return not busy

        return await asyncio.get_running_loop().run_in_executor(self._executor, truncate)

    def _call(self, begin: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        wait = LockWait(self.where, self.lock_wait, self.busy_timeout_ms)
        while True:
            try:
                result = self._attempt(begin, wait.busy_ms(), fn, args, kwargs)
            except Busy as busy:
                time.sleep(wait.pause(busy))
                continue
            wait.finished()
            return result

    async def _run(
        self, begin: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        loop = asyncio.get_running_loop()
        wait = LockWait(self.where, self.lock_wait, self.busy_timeout_ms)
        while True:
            try:
                result = await loop.run_in_executor(
                    self._executor_for(begin), self._attempt, begin, wait.busy_ms(), fn, args, kwargs
                )
            except Busy as busy:
                await asyncio.sleep(wait.pause(busy))  # the database thread is free meanwhile
                continue
            wait.finished()
            return result

    def _executor_for(self, begin: str) -> ThreadPoolExecutor:
        """The thread a transaction of this kind runs on (SQLite: the one database thread)."""
        return self._executor

    def _attempt(
        self, begin: str, busy_ms: int, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        """One try of `fn(conn, ...)` in one transaction; `Busy` if another connection's lock was
        in the way (the transaction was rolled back), a StorageError naming the fix for the rest."""
        with self._lock:
            conn = self._connection()
            started = time.perf_counter()
            committed = False
            try:
                self._set_busy_timeout(conn, busy_ms)
                conn.execute(begin)
                try:
                    conn.committed = []
                    result = fn(conn, *args, **kwargs)
                    conn.execute("COMMIT")
                    committed = True
                    _run_callbacks(conn.committed)
                finally:
                    if not committed:
                        self._rollback(conn)
            except StorageError:
                raise
            except Exception as exc:
                if not _is_driver_error(exc):
                    raise
                if is_busy(exc):
                    raise Busy(exc) from exc
                raise storage_error(exc, self.path) from exc
            finally:
                if self.vector_cache is not None:
                    self.vector_cache.finish(committed)
            elapsed = (time.perf_counter() - started) * 1000
            if elapsed > 200:
                log.warning("slow database call %s took %.0f ms", getattr(fn, "__name__", fn), elapsed)
            return result

    def _set_busy_timeout(self, conn: Connection, busy_ms: int) -> None:
        if busy_ms != self._conn_busy_ms:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            self._conn_busy_ms = busy_ms

    def _rollback(self, conn: Connection) -> None:
        """Undo the open transaction, if SQLite has not already (it does after some errors)."""
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            log.warning("database %s: rollback failed (%s); reopening the connection", self.path, exc)
            self._conn = None
            conn.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
