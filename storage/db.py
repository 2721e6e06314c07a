"""The SQLite file: driver choice, connection setup, and the one worker thread all SQL runs on.

SQLite serialises writers anyway, so every statement for one database goes through a single
thread: the event loop never blocks on disk, and no two coroutines interleave inside one
transaction. `Database.run(fn, *args)` runs `fn(conn, *args)` there inside a transaction.
The connection carries the database's `VectorCache` (storage/vector_cache.py), told how each
transaction ended so a rollback leaves no vectors behind in memory.
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
from storage.vector_cache import MAX_BYTES, VectorCache

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Connection = Any  # sqlite3.Connection or sqlean's twin; both follow the DB-API.

BUSY_TIMEOUT_MS = 5000


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
    return type("MembotConnection", (module.Connection,), {"vector_cache": None})


def connect(
    path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, vector_cache: VectorCache | None = None
) -> Connection:
    """Open the database file with sqlite-vec loaded, WAL, foreign keys and a busy timeout."""
    module = driver()
    target = str(path)
    if target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = module.connect(
            target, isolation_level=None, check_same_thread=False, factory=_connection_class(module)
        )
        conn.vector_cache = vector_cache
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # give the -wal file back after a big write
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")
    except module.DatabaseError as exc:
        raise StorageError(describe_error(exc, target)) from exc
    _load_vec(conn)
    return conn


def describe_error(exc: BaseException, path: str) -> str:
    """A one-line explanation of a driver error that names the fix."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (
            f"The database {path} is locked by another process (another membot?). "
            "Stop it or wait, then try again."
        )
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a readable membot database ({text}); point MEMBOT_DB at another file."
    if "unable to open" in text or "readonly" in text:
        return f"Cannot write {path} ({text}); check the path in MEMBOT_DB and its permissions."
    return f"Database error on {path}: {text}"


class Database:
    """One SQLite file served by one worker thread, with its own vector cache (0 bytes: none)."""

    def __init__(
        self, path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, vector_cache_bytes: int = MAX_BYTES
    ) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.vector_cache = VectorCache(vector_cache_bytes) if vector_cache_bytes > 0 else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="membot-db")
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> Connection:
        if self._conn is None:
            if self.vector_cache is not None:
                self.vector_cache.clear()  # data_version is counted per connection
            self._conn = connect(self.path, self.busy_timeout_ms, self.vector_cache)
        return self._conn

    def call(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one transaction on the calling thread (for start-up and tools)."""
        with self._lock:
            conn = self._connection()
            started = time.perf_counter()
            committed = False
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn, *args, **kwargs)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                committed = True
            except StorageError:
                raise
            except Exception as exc:
                if type(exc).__module__.split(".")[0] in {"sqlite3", "sqlean"}:
                    raise StorageError(describe_error(exc, self.path)) from exc
                raise
            finally:
                if self.vector_cache is not None:
                    self.vector_cache.finish(committed)
            elapsed = (time.perf_counter() - started) * 1000
            if elapsed > 200:
                log.warning("slow database call %s took %.0f ms", getattr(fn, "__name__", fn), elapsed)
            return result

    async def run(self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, ...)` in one transaction on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self.call(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
