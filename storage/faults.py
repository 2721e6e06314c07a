"""What went wrong with the database file, in one line that names the fix.

`storage_error(exc, path)` turns a driver error (sqlite3 or sqlean) into one of the errors of
storage/errors.py by its SQLite result code, falling back on its text; `folder_error(exc, path)`
does the same for an OSError while creating the database's folder. Two cheap facts make the
messages useful: who holds a lock (on Linux, /proc/locks names the process with the WAL write
lock on the `-shm` file, or a rollback-journal write lock on the file itself) and the free space
on the database's mount.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from storage.errors import (
    DatabaseLockedError,
    DatabasePathError,
    DiskFullError,
    ReadOnlyDatabaseError,
    StorageError,
)

SQLITE_BUSY = 5
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

ROOM_NEEDED = 64 * 1024 * 1024  # the -wal file may grow this far (journal_size_limit) between checkpoints
WAL_WRITE_LOCK = 120  # the byte of the -shm file a WAL writer holds a write lock on


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY: another connection holds the lock; the same transaction may work later."""
    code = _code(exc)
    return code == SQLITE_BUSY if code is not None else "database is locked" in str(exc)


def storage_error(exc: BaseException, path: str, waited: float = 0.0) -> StorageError:
    """The storage error for a driver error on `path` (`waited`: seconds spent on a lock)."""
    code, text = _code(exc), str(exc)
    if is_busy(exc):
        return locked_error(path, waited)
    if code == SQLITE_FULL or "database or disk is full" in text:
        return full_error(path)
    if code == SQLITE_READONLY or "readonly database" in text:
        return read_only_error(path, text)
    if code in (SQLITE_NOTADB, SQLITE_CORRUPT) or "not a database" in text or "malformed" in text:
        return StorageError(
            f"{path} is not a readable membot database ({text}); point MEMBOT_DB at another file."
        )
    if code == SQLITE_CANTOPEN or "unable to open" in text:
        if _read_only_mount(path):
            return read_only_error(path, text)
        return DatabasePathError(
            f"Cannot open {path} ({text}); point MEMBOT_DB at a file in a folder this user can write."
        )
    if code == SQLITE_IOERR and _free(path) < ROOM_NEEDED:
        return full_error(path)
    return StorageError(f"Database error on {path}: {text}")


def locked_error(path: str, waited: float) -> DatabaseLockedError:
    if _is_url(path):  # conflicts with other transactions, not a locked file
        return DatabaseLockedError(
            f"The database {path} kept refusing this transaction (serialization conflicts or lock "
            f"timeouts with other transactions) for {waited:.0f} s; look for long transactions on the "
            "server (pg_stat_activity) or raise MEMBOT_DB_LOCK_WAIT."
        )
    return DatabaseLockedError(
        f"The database {path} is still locked by {lock_holder(path)} after {waited:.0f} s; stop that "
        "process (a backup, a VACUUM, a second membot?) or raise MEMBOT_DB_LOCK_WAIT."
    )


def read_only_error(path: str, text: str) -> ReadOnlyDatabaseError:
    mount = _read_only_mount(path)
    where = (
        f"the filesystem at {mount} is mounted read-only" if mount else "the file or its folder is read-only"
    )
    return ReadOnlyDatabaseError(
        f"Cannot write {path} ({text}): {where}; make it writable by this user (chmod u+w, chattr -i, "
        "remount rw) or point MEMBOT_DB at a writable path."
    )


def full_error(path: str) -> DiskFullError:
    mount = mount_point(path)
    free = shutil.disk_usage(mount).free
    if free >= ROOM_NEEDED:
        return DiskFullError(
            f"{path} cannot grow (database or disk is full) though {mount} has {_size(free)} free: a "
            "disk quota or the database's PRAGMA max_page_count is the limit; lift it or move MEMBOT_DB."
        )
    return DiskFullError(
        f"The disk holding {path} is full: {_size(free)} free on {mount}, and membot needs about "
        f"{_size(ROOM_NEEDED)} free there to keep writing; free space on {mount} or move MEMBOT_DB "
        "to a larger disk."
    )


def folder_error(exc: OSError, path: str) -> StorageError:
    """The error for an OSError while creating the folder of MEMBOT_DB=`path`."""
    folder = Path(path).parent
    existing = _existing(folder)
    if not existing.is_dir():
        return DatabasePathError(
            f"Cannot create the folder for MEMBOT_DB={path}: {existing} is a file, not a folder; "
            "point MEMBOT_DB somewhere else or move that file."
        )
    if exc.errno == errno.EROFS or _read_only_mount(path):
        return ReadOnlyDatabaseError(
            f"Cannot create {folder} for MEMBOT_DB: the filesystem at {mount_point(path)} is read-only; "
            "point MEMBOT_DB at a writable disk."
        )
    return DatabasePathError(
        f"Cannot create {folder} for MEMBOT_DB ({exc.strerror or exc}); create it yourself or point "
        "MEMBOT_DB at a folder this user can write."
    )


def _is_url(path: str) -> bool:
    """A PostgreSQL URL (redacted), not a file (storage.postgres.is_postgres; imported it would loop)."""
    return path.startswith(("postgresql://", "postgres://"))


def lock_holder(path: str) -> str:
    """Who holds a write lock on the database, as far as this system says (cheap: one /proc read);
    on PostgreSQL, the conflicting transactions."""
    if _is_url(path):
        return "conflicting transactions"
    pids = lock_holders(path)
    if pids is None:
        return "another process (this system does not say which)"
    if not pids:
        return "another process (not visible here, or it just let go)"
    return ", ".join(_process(pid) for pid in pids)


def lock_holders(path: str) -> list[int] | None:
    """Pids with a write lock on the file or on its -shm WAL write byte; None without /proc/locks."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted: dict[tuple[int, int, int], int | None] = {}
    for suffix, byte in (("", None), ("-shm", WAL_WRITE_LOCK)):
        try:
            st = os.stat(path + suffix)
        except OSError:
            continue
        wanted[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = byte
    pids: list[int] = []
    for line in table.splitlines():
        fields = line.split()  # "1: POSIX  ADVISORY  WRITE 4833 fe:00:2146850 120 120"
        if len(fields) != 8 or fields[3] != "WRITE" or fields[1] not in ("POSIX", "OFDLCK"):
            continue
        major, minor, inode = fields[5].split(":")
        key = (int(major, 16), int(minor, 16), int(inode))
        if key not in wanted:
            continue
        byte, start, end = wanted[key], int(fields[6]), fields[7]
        if byte is None or (start <= byte and (end == "EOF" or byte <= int(end))):
            pids.append(int(fields[4]))
    return sorted(set(pids))


def _process(pid: int) -> str:
    if pid == os.getpid():
        return f"this process (pid {pid}, another connection)"
    if pid <= 0:
        return "a process with an open-file-description lock (pid not shown)"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({' '.join(command.split())[:80]})"


def mount_point(path: str) -> Path:
    """The mount point of the filesystem `path` is (or would be) on."""
    here = _existing(Path(path).absolute())
    while not os.path.ismount(here):
        here = here.parent
    return here


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read_only_mount(path: str) -> Path | None:
    try:
        flags = os.statvfs(_existing(Path(path).absolute())).f_flag
    except OSError:
        return None
    return mount_point(path) if flags & os.ST_RDONLY else None


def _free(path: str) -> int:
    try:
        return shutil.disk_usage(mount_point(path)).free
    except OSError:
        return ROOM_NEEDED


def _size(n: int) -> str:
    mib = n / 2**20
    return f"{mib:.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB"
