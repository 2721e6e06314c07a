"""`membot chat` as a private conversation, tested as a process the way a user runs it.

Each test starts `python -m adapters.cli chat` with only its settings in the environment, talks to
it through real pipes, scripts the model with the fake OpenAI server on 127.0.0.1, and checks what
the user sees on stdout or what is on disk in the SQLite file. Nothing of ours is mocked.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.db import connect
from tests import postgres
from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text, say

TIMEOUT = 60  # seconds any one process may take


def environment(fake: FakeOpenAI, home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "MEMBOT_DB": postgres.database_for(home) if postgres.wanted() else str(home / "membot.db"),
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "test-key",
        "MEMBOT_LLM_RETRIES": "0",
        **extra,
    }


def command(user: str) -> list[str]:
    return [sys.executable, "-m", "adapters.cli", "chat", "--user", user]


def run_chat(
    fake: FakeOpenAI, home: Path, user: str, stdin: bytes | str = b"", **extra: str
) -> subprocess.CompletedProcess[bytes]:
    """One whole `membot chat` run: stdin given at once (EOF after it), stdout and stderr as bytes."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        command(user),
        input=data,
        capture_output=True,
        env=environment(fake, home, **extra),
        cwd=home,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


def lines(*texts: str) -> str:
    return "".join(text + "\n" for text in texts)


def answering(request: dict[str, Any]) -> Answer:
    """A model that answers each message with "answer to: <its text>"."""
    if not request.get("tools"):
        return Answer(content="summary")
    if last_message(request)["role"] == "tool":
        return Answer(content="done")
    return say(f"answer to: {last_user_text(request)}")


class Chat:
    """A running `membot chat` with stdin open; stdout read line by line by a thread."""

    def __init__(self, fake: FakeOpenAI, home: Path, user: str, **extra: str) -> None:
        self.proc = subprocess.Popen(
            command(user),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(fake, home, **extra),
            cwd=home,
        )
        self.lines: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put((time.monotonic(), line))
        self.lines.put(None)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def read_until(self, wanted: bytes, timeout: float = 30.0) -> tuple[float, list[bytes]]:
        """Read stdout until a line containing `wanted`: when it was read, and every line so far."""
        seen: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{wanted!r} not on stdout within {timeout} s; read {seen}") from None
            if item is None:
                raise AssertionError(f"stdout ended before {wanted!r}; read {seen}; stderr: {self.stderr()}")
            at, line = item
            seen.append(line)
            if wanted in line:
                return at, seen

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> int:
        """End of input: the chat quits."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                stream.close()


def query(home: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of the database of this folder (its SQLite file, or its PostgreSQL database)."""
    if postgres.has_database(home):
        return postgres.rows(postgres.database_for(home), sql, args)
    conn = connect(home / "membot.db")
    try:
        return [tuple(row) for row in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def inbox_texts(home: Path) -> list[str]:
    return [json.loads(event)["text"] for (event,) in query(home, "SELECT event FROM inbox ORDER BY id")]


def user_messages(home: Path) -> list[str]:
    rows = query(home, "SELECT content FROM messages WHERE role = 'user' AND kind = 'user' ORDER BY id")
    return [content for (content,) in rows]


def crash_mid_turn(home: Path, user: str, text: str) -> None:
    """Run a chat whose model takes 30 s to answer `text`; SIGKILL it once the request arrived."""
    arrived = threading.Event()

    def slow(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        arrived.set()
        return Answer(delay=30, tool_calls=[("send_message", {"message": "too late"})])

    with FakeOpenAI(slow) as fake:
        chat = Chat(fake, home, user)
        try:
            chat.send(text)
            assert arrived.wait(TIMEOUT), "the model was never asked"
        finally:
            chat.kill()
        assert chat.proc.returncode == -9
        assert [last_user_text(r) for r in fake.agent_requests] == [text]


def test_each_message_is_on_stdout_as_it_is_sent(tmp_path: Path):
    slow_step: dict[str, float] = {}

    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        if last_message(request)["role"] == "tool":
            slow_step.setdefault("arrived", time.monotonic())
            return Answer(delay=3, tool_calls=[("send_message", {"message": "second part"})])
        return Answer(
            tool_calls=[
                ("send_message", {"message": "first part"}),
                ("archival_memory_search", {"query": "parts", "request_heartbeat": True}),
            ]
        )

    with FakeOpenAI(script) as fake:
        chat = Chat(fake, tmp_path, "u")
        try:
            chat.send("tell me in two parts")
            first_at, before = chat.read_until(b"first part")
            second_at, between = chat.read_until(b"second part")
        except BaseException:
            chat.kill()
            raise
        assert chat.close() == 0, chat.stderr()

    assert "arrived" in slow_step, "the model was never asked for the second step"
    finished = slow_step["arrived"] + 3.0
    assert first_at < finished, f"'first part' was read {first_at - finished:.2f} s after the slow step ended"
    assert second_at > finished
    assert b"second part" not in b"".join(before) and b"first part" not in b"".join(between)
    assert len(fake.agent_requests) == 2


def test_a_crash_loses_nothing_and_the_message_is_answered_once_after_restart(tmp_path: Path):
    text = "what did I tell you about the lighthouse?"
    crash_mid_turn(tmp_path, "u", text)
    assert inbox_texts(tmp_path) == [text]
    assert user_messages(tmp_path) == [text]

    with FakeOpenAI(answering) as fake:
        second = run_chat(fake, tmp_path, "u")
    assert second.stdout.decode() == f"answer to: {text}\n\n"
    assert [last_user_text(r) for r in fake.agent_requests] == [text]
    assert inbox_texts(tmp_path) == []
    assert user_messages(tmp_path) == [text]  # the replay reuses the stored message

    with FakeOpenAI(answering) as fake:
        third = run_chat(fake, tmp_path, "u")
    assert third.stdout == b""
    assert fake.agent_requests == []


def test_a_message_too_old_to_replay_is_not_answered_but_stays_in_recall(tmp_path: Path):
    text = "remind me about the dentist"
    crash_mid_turn(tmp_path, "u", text)
    assert inbox_texts(tmp_path) == [text]

    with FakeOpenAI(answering) as fake:
        second = run_chat(fake, tmp_path, "u", MEMBOT_REPLAY_HOURS="0")
    assert second.stdout == b""
    assert fake.agent_requests == []
    assert inbox_texts(tmp_path) == []
    assert user_messages(tmp_path) == [text]


SOFIA = ZoneInfo("Europe/Sofia")


def stats_lines(stdout: str) -> list[str]:
    """The statistics line of each /memory."""
    return [line for line in stdout.splitlines() if line.startswith("recall memory:")]


def sofia_time_in(system: str) -> datetime:
    found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d) \w{3} \(Europe/Sofia\)", system)
    assert found, f"no local time in Europe/Sofia in the system message:\n{system}"
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=SOFIA)


def test_timezone_command_sets_the_persons_zone_and_survives_a_restart(tmp_path: Path):
    with FakeOpenAI(answering) as fake:
        before = datetime.now(SOFIA).replace(second=0, microsecond=0)
        first = run_chat(
            fake, tmp_path, "u", lines("/memory", "/timezone Europe/Sofia", "/memory", "what time is it?")
        )
        after = datetime.now(SOFIA)
        out = first.stdout.decode()
        zones = stats_lines(out)
        assert len(zones) == 2, out
        assert zones[0].endswith("time zone UTC") and zones[1].endswith("time zone Europe/Sofia")
        [request] = fake.agent_requests
        system = request["messages"][0]["content"]
        assert "(Europe/Sofia)" in system
        assert before <= sofia_time_in(system) <= after
        assert "answer to: what time is it?" in out

        seen = len(fake.agent_requests)
        second = run_chat(fake, tmp_path, "u", lines("/timezone Mars/Olympus", "/memory", "still there?"))
        out = second.stdout.decode()
        refusal = out.split("[persona]")[0].splitlines()
        assert len(refusal) == 1, out
        named = [name for name in re.findall(r"[A-Za-z_]+/[A-Za-z_]+", refusal[0]) if name != "Mars/Olympus"]
        assert any(_is_zone(name) for name in named), f"no IANA example in {refusal[0]!r}"
        [zone] = stats_lines(out)
        assert zone.endswith("time zone Europe/Sofia")
        [request] = fake.agent_requests[seen:]
        assert "(Europe/Sofia)" in request["messages"][0]["content"]
    assert query(tmp_path, "SELECT timezone FROM agents") == [("Europe/Sofia",)]


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def test_escape_sequences_from_the_model_never_reach_the_terminal(tmp_path: Path):
    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        return say("\x1b[2J\x1b]0;pwned\x07hello\x1b[31m red")

    with FakeOpenAI(script) as fake:
        result = run_chat(fake, tmp_path, "u", lines("hi"))
    assert b"hello" in result.stdout and b" red" in result.stdout
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
    assert b"hello red" in result.stdout


def test_crlf_input_reaches_the_model_without_carriage_returns(tmp_path: Path):
    with FakeOpenAI(answering) as fake:
        result = run_chat(fake, tmp_path, "u", b"first line\r\nsecond line\r\n")
    assert [last_user_text(r) for r in fake.agent_requests] == ["first line", "second line"]
    assert user_messages(tmp_path) == ["first line", "second line"]
    assert result.stdout.decode() == "answer to: first line\n\nanswer to: second line\n\n"


def test_waiting_output_and_messages_stay_with_their_owner(tmp_path: Path):
    with FakeOpenAI(answering) as fake:
        # bob's run cannot print (his terminal is gone): his answer stays pending in the outbox
        bob = subprocess.Popen(
            command("bob"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment(fake, tmp_path),
            cwd=tmp_path,
        )
        try:
            assert bob.stdout is not None and bob.stdin is not None
            bob.stdout.close()  # the reader is gone: every write bob's chat makes fails
            bob.stdin.write(b"bob's secret plan\n")
            bob.stdin.flush()
            assert bob.wait(timeout=TIMEOUT) == 1  # his chat stops: its output is closed
        finally:
            bob.kill()
            bob.wait(timeout=TIMEOUT)
            assert bob.stdin is not None
            bob.stdin.close()
        assert _outbox(tmp_path) == [("answer to: bob's secret plan", "pending")]
    # carol's run is killed mid-turn: her message waits in the inbox
    crash_mid_turn(tmp_path, "carol", "carol's diary entry")
    assert inbox_texts(tmp_path) == ["carol's diary entry"]

    with FakeOpenAI(answering) as fake:
        alice = run_chat(fake, tmp_path, "alice", lines("hello from alice"))
        assert alice.stdout.decode() == "answer to: hello from alice\n\n"
        assert [last_user_text(r) for r in fake.agent_requests] == ["hello from alice"]
        assert ("answer to: bob's secret plan", "pending") in _outbox(tmp_path)
        assert inbox_texts(tmp_path) == ["carol's diary entry"]

        seen = len(fake.agent_requests)
        bob_again = run_chat(fake, tmp_path, "bob")
        assert bob_again.stdout.decode() == "answer to: bob's secret plan\n\n"
        assert fake.agent_requests[seen:] == []
        assert inbox_texts(tmp_path) == ["carol's diary entry"]

        carol = run_chat(fake, tmp_path, "carol")
        assert carol.stdout.decode() == "answer to: carol's diary entry\n\n"
        assert [last_user_text(r) for r in fake.agent_requests[seen:]] == ["carol's diary entry"]
    assert _outbox(tmp_path) == [
        ("answer to: bob's secret plan", "sent"),
        ("answer to: hello from alice", "sent"),
        ("answer to: carol's diary entry", "sent"),
    ]
    assert inbox_texts(tmp_path) == []


def _outbox(home: Path) -> list[tuple[str, str]]:
    return [(text, state) for text, state in query(home, "SELECT text, state FROM outbox ORDER BY id")]


def test_a_closed_output_stops_the_chat_in_one_line_and_keeps_the_answer(tmp_path: Path):
    """`membot chat | head -c1`: the reader goes away; the chat stops at once, says so in one line,
    exits non-zero, and the undelivered answer waits in the outbox for the next run."""
    with FakeOpenAI(answering) as fake:
        shell = (
            f"printf 'one\\ntwo\\nthree\\n' | {' '.join(command('pipe'))} | head -c1; exit ${{PIPESTATUS[1]}}"
        )
        result = subprocess.run(
            ["bash", "-c", shell],
            capture_output=True,
            env=environment(fake, tmp_path),
            cwd=tmp_path,
            timeout=TIMEOUT,
        )
        assert result.returncode == 1
        assert result.stderr.decode().strip().splitlines() == [
            "membot: the output was closed (broken pipe); stopping."
        ]
        pending = query(tmp_path, "SELECT text FROM outbox WHERE state = 'pending'")
        assert pending, "the answer that could not be printed should stay pending"
        again = run_chat(fake, tmp_path, "pipe")
        assert pending[0][0] in again.stdout.decode()


def test_a_persona_file_gives_new_agents_their_persona_and_an_unknown_one_stops_membot(tmp_path: Path):
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "custom.txt").write_text("I am Captain Quarlo, a pirate who loves maps.\n")
    with FakeOpenAI(answering) as fake:
        shown = run_chat(fake, tmp_path, "u", lines("/memory"), MEMBOT_PERSONA="custom").stdout.decode()
        assert "I am Captain Quarlo, a pirate who loves maps." in shown
        again = run_chat(fake, tmp_path, "u", lines("/memory")).stdout.decode()  # existing agents keep theirs
        assert "Captain Quarlo" in again
        other = run_chat(fake, tmp_path, "v", lines("/memory")).stdout.decode()
        assert "I am membot" in other

        refused = subprocess.run(
            command("w"),
            input=b"/memory\n",
            capture_output=True,
            env=environment(fake, tmp_path, MEMBOT_PERSONA="nobody"),
            cwd=tmp_path,
            timeout=TIMEOUT,
        )
        err = refused.stderr.decode()
        assert refused.returncode != 0 and "Traceback" not in err
        assert "MEMBOT_PERSONA='nobody'" in err and "custom, membot" in err
        assert query(tmp_path, "SELECT count(*) FROM identities WHERE platform_user_id = 'w'") == [(0,)]
