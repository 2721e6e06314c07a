"""Faults of the machine lose nothing: locks, read-only and full storage, bad bytes, closed pipes, leaky logs.

Everything here is real: a second process holding the SQLite write lock, a file root cannot
write (chattr +i), a page limit SQLite enforces, private mounts of tiny or read-only
filesystems (skipped where this system does not allow them), `membot` as a process with a
closed stdout or a Ctrl-C, and the fake OpenAI server on 127.0.0.1 for the model.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.errors import ModelError
from bot.llm import LLM
from bot.logs import FORMAT, SecretFilter, secrets_of
from bot.settings import Settings, load_settings
from storage.db import Connection, Database, check_writable
from storage.errors import DatabaseLockedError, DiskFullError, ReadOnlyDatabaseError
from storage.faults import mount_point
from tests.fake_openai import Answer, FakeOpenAI, say

BLOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def notes(tmp_path: Path, **options: Any) -> Database:
    db = Database(tmp_path / "notes.db", **options)
    db.call(lambda c: c.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT)"))
    return db


def add_note(conn: Connection, text: str) -> None:
    conn.execute("INSERT INTO notes VALUES (?)", (text,))


def count_notes(conn: Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM notes").fetchone()[0])


@contextmanager
def lock_held(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write lock (`BEGIN EXCLUSIVE`) for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_a_write_waits_out_a_long_lock_and_reads_go_on_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    db = notes(tmp_path)
    try:
        with lock_held(tmp_path / "notes.db", 6.5) as holder:
            started = time.monotonic()
            write = asyncio.create_task(db.run(add_note, "kept"))
            await asyncio.sleep(5.6)  # past the old 5 s busy timeout, and past the quiet part of the wait
            assert not write.done()
            before = time.monotonic()
            assert await db.read(count_notes) == 0  # a read does not wait for the writer
            assert time.monotonic() - before < 1.0
            await write
        assert time.monotonic() - started > 6
        assert db.call_read(count_notes) == 1
    finally:
        db.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"locked by pid {holder.pid}" in w and "MEMBOT_DB_LOCK_WAIT" in w for w in warnings), warnings
    assert any("got the lock after" in w for w in warnings), warnings


def test_a_lock_longer_than_the_wait_is_refused_in_one_line_naming_the_holder(tmp_path: Path):
    db = notes(tmp_path, lock_wait=1.0)
    try:
        with lock_held(tmp_path / "notes.db", 5) as holder, pytest.raises(DatabaseLockedError) as caught:
            db.call(add_note, "refused")
    finally:
        db.close()
    message = str(caught.value)
    assert f"pid {holder.pid}" in message and "MEMBOT_DB_LOCK_WAIT" in message and "\n" not in message
    assert "couldn't keep your message" in caught.value.user_message


def test_a_full_database_names_the_mount_and_its_free_space(tmp_path: Path):
    db = notes(tmp_path)
    try:
        db.call(add_note, "kept")
        pages = db.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        db.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 1}"))
        with pytest.raises(DiskFullError) as caught:
            db.call(lambda c: c.execute("INSERT INTO notes VALUES (?)", ("x" * 100_000,)))
        assert db.call_read(count_notes) == 1
    finally:
        db.close()
    message = str(caught.value)
    assert (
        str(mount_point(str(tmp_path))) in message and "MiB free" in message and "max_page_count" in message
    )
    assert "storage is full" in caught.value.user_message


def in_private_mount(tmp_path: Path, mount: str, command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` (sh) in a private mount namespace with a fresh tmpfs at tmp_path/mnt."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) here")
    target = tmp_path / "mnt"
    target.mkdir()
    script = f"mount -t tmpfs -o {mount} tmpfs {target} || exit 77\n{command}"
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    if result.returncode == 77 or "unshare failed" in result.stderr:
        pytest.skip(f"this system does not allow a private tmpfs mount: {result.stderr.strip()}")
    return result


def test_a_really_full_disk_names_the_space_needed(tmp_path: Path):
    fill = (
        "from storage.db import Database\n"
        "from storage.errors import DiskFullError\n"
        f"db = Database('{tmp_path}/mnt/full.db')\n"
        "db.call(lambda c: c.execute('CREATE TABLE t (x)'))\n"
        "try:\n"
        "    while True: db.call(lambda c: c.execute('INSERT INTO t VALUES (randomblob(50000))'))\n"
        "except DiskFullError as exc: print(exc)\n"
    )
    result = in_private_mount(tmp_path, "size=1m", f'{sys.executable} -c "{fill}"')
    assert result.returncode == 0, result.stderr
    assert re.search(rf"full: 0\.\d MiB free on {tmp_path}/mnt\b", result.stdout), result.stdout
    assert "needs about 64 MiB free there" in result.stdout


def cli_env(home: Path, **env: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "MEMBOT_DB": str(home / "membot.db"), **env}


def membot(home: Path, stdin: bytes, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """`membot ARGS` as a process with only these settings in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        input=stdin,
        capture_output=True,
        env=cli_env(home, **{"OPENAI_API_KEY": "test-key", "MEMBOT_LLM_RETRIES": "0", **env}),
        cwd=home,
        timeout=120,
    )


def one_line_and_fails(result: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0 and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Make `path` unwritable even for root (chmod alone does not stop root)."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    locked = False
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
            pytest.skip("running as root without chattr +i: cannot make a file read-only")
        locked = True
    try:
        yield
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_read_only_database_stops_the_start_in_one_line(tmp_path: Path):
    check_writable(tmp_path / "membot.db")
    with immutable(tmp_path / "membot.db"):
        result = membot(tmp_path, b"hello\n", "chat", "--user", "x", OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    one_line_and_fails(result, "read-only", "MEMBOT_DB")
    assert result.stdout == b""


def test_a_database_path_that_cannot_be_made_is_one_line(tmp_path: Path):
    (tmp_path / "a-file").write_text("not a folder")
    result = membot(tmp_path, b"hi\n", "chat", MEMBOT_DB=str(tmp_path / "a-file" / "membot.db"))
    one_line_and_fails(result, "a-file is a file, not a folder", "MEMBOT_DB")
    (tmp_path / "locked").mkdir()
    with immutable(tmp_path / "locked"):
        result = membot(tmp_path, b"hi\n", "chat", MEMBOT_DB=str(tmp_path / "locked" / "new" / "membot.db"))
    one_line_and_fails(result, "Cannot create", "MEMBOT_DB")


def test_a_read_only_filesystem_is_one_line(tmp_path: Path):
    command = f"mount -o remount,ro {tmp_path}/mnt && MEMBOT_DB={tmp_path}/mnt/db/membot.db OPENAI_API_KEY=k {sys.executable} -m adapters.cli chat"
    result = in_private_mount(tmp_path, "size=1m", command)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "read-only" in result.stderr and "Traceback" not in result.stderr


def test_a_closed_stdout_is_one_line_not_a_traceback(tmp_path: Path):
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: every write fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "--help"],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=cli_env(tmp_path),
        )
    finally:
        os.close(writer)
    assert (
        result.returncode == 1
        and result.stderr.decode() == "membot: the output was closed (broken pipe); stopping.\n"
    )


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "chat", "--user", "x"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(tmp_path, OPENAI_API_KEY="k", OPENAI_BASE_URL="http://127.0.0.1:9/v1"),
        cwd=tmp_path,
    )
    time.sleep(0.3)  # still importing (the openai client, numpy)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.decode() == "membot: interrupted.\n", err.decode()


def heard(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="summary")
    last = request["messages"][-1]
    if last["role"] == "tool":
        return Answer(content="done")
    return say("héllo ✓ heard: " + last["content"].split("] ", 1)[-1])


@pytest.mark.parametrize("locale", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "LANG": "C"}])
def test_invalid_utf8_on_stdin_is_replaced_never_fatal(tmp_path: Path, locale: dict[str, str]):
    with FakeOpenAI(heard) as fake:
        result = membot(
            tmp_path,
            b"caf\xc3\xa9 \xff\xfe ok\nsecond line\n",
            "chat",
            "--user",
            "x",
            OPENAI_BASE_URL=fake.url,
            **locale,
        )
        sent = [
            r["messages"][-1]["content"] for r in fake.agent_requests if r["messages"][-1]["role"] == "user"
        ]
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert any("\ufffd" in text and text.endswith(" ok") for text in sent), sent
    assert any(text.endswith("second line") for text in sent), sent
    assert result.stdout.count(b"heard: ") == 2


KEY = "sk-test-" + secrets.token_hex(12)
DIARY = "my diary says the vault code is 4417"


def echoing_proxy(request: dict[str, Any]) -> Answer:
    said = request["messages"][-1]["content"]
    return Answer(status=500, error=f"proxy echo: Authorization: Bearer {KEY}; user said: {said}")


@pytest.mark.parametrize("content", ["false", "true"])
def test_a_provider_error_echoing_the_key_and_message_stays_out_of_the_log(tmp_path: Path, content: str):
    with FakeOpenAI(echoing_proxy) as fake:
        result = membot(
            tmp_path,
            f"{DIARY}\n".encode(),
            "chat",
            "--user",
            "x",
            OPENAI_BASE_URL=fake.url,
            OPENAI_API_KEY=KEY,
            MEMBOT_LOG_CONTENT=content,
        )
    err = result.stderr.decode()
    assert "HTTP 500" in err, err
    assert KEY not in err and KEY[8:] not in err
    assert (DIARY in err) == (content == "true"), err


@pytest.mark.parametrize(("level", "wire"), [("INFO", False), ("DEBUG", True)])
def test_the_http_stack_logs_only_when_debug_asks(tmp_path: Path, level: str, wire: bool):
    with FakeOpenAI(heard) as fake:
        result = membot(
            tmp_path,
            b"hi\n",
            "chat",
            "--user",
            "x",
            "--verbose",
            OPENAI_BASE_URL=fake.url,
            MEMBOT_LOG_LEVEL=level,
        )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    shown = [name for name in (" httpx:", " httpx2:", " httpcore.", " httpcore2.") if name in err]
    assert bool(shown) == wire, err
    assert " openai." not in err  # its DEBUG lines carry request bodies: only with MEMBOT_LOG_CONTENT


def test_every_secret_is_masked_whatever_logs_it():
    settings = Settings(
        openai_api_key="plain-key-1234",
        discord_token="disc.token.5678",
        slack_bot_token="xoxb-1111-2222-abc",
        slack_signing_secret="signsecret99",
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(SecretFilter(secrets_of(settings)))
    logger = logging.getLogger("httpx2.fault-test")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("headers %s", {"Authorization": "Bearer plain-key-1234"})
        logger.warning("discord %s, slack %s", "disc.token.5678", "xoxb-1111-2222-abc")
        logger.error("not configured: Bearer abc.def-ghi, sk-proj-abcdefghijkl, xapp-1-A1B2C3D4E5")
        try:
            raise RuntimeError("signsecret99 inside an exception")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for leaked in (
        "plain-key-1234",
        "disc.token.5678",
        "xoxb-1111",
        "signsecret99",
        "abc.def-ghi",
        "sk-proj",
        "xapp-1",
    ):
        assert leaked not in text, text
    assert "[OPENAI_API_KEY]" in text and "[DISCORD_TOKEN]" in text and "Traceback" in text


def test_llm_timeout_is_per_attempt_and_the_total_is_capped():
    with FakeOpenAI(lambda request: Answer(content="late", delay=3)) as fake:
        settings = load_settings(
            {
                "OPENAI_BASE_URL": fake.url,
                "OPENAI_API_KEY": "k",
                "MEMBOT_LLM_TIMEOUT": "1",
                "MEMBOT_LLM_RETRIES": "3",
                "MEMBOT_LLM_TOTAL_TIMEOUT": "2",
            },
            dotenv_path=None,
        )
        llm = LLM(settings)

        async def ask() -> None:
            try:
                await llm.complete([{"role": "user", "content": "hi"}])
            finally:
                await llm.close()

        started = time.monotonic()
        with pytest.raises(ModelError, match="MEMBOT_LLM_TOTAL_TIMEOUT") as caught:
            asyncio.run(ask())
        took = time.monotonic() - started
    assert 1.9 < took < 3.0  # not 4 attempts × 1 s plus back-off
    assert "too long" in caught.value.user_message


def test_the_start_up_check_writes_for_real(tmp_path: Path):
    check_writable(tmp_path / "ro.db")  # creates it
    with immutable(tmp_path / "ro.db"), pytest.raises(ReadOnlyDatabaseError, match="MEMBOT_DB") as caught:
        check_writable(tmp_path / "ro.db")  # it can still be read: only a write shows the fault
    assert "\n" not in str(caught.value) and "read-only" in caught.value.user_message
