"""The operator's memory commands, as processes: agents, memory, export, import, forget.

Two people chat through `membot chat` (the scripted model stores what they say in core memory,
recall and archival memory); then `membot forget` must leave none of one person's words in the
database file or its WAL, and nothing of theirs in any table, while the other person's memory
stays whole and searchable. Export, forget and import must give back the same memory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot import controls, loading
from bot.errors import InvalidInput
from bot.events import Event
from tests import postgres
from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text
from tests.test_terminal_chat import environment, lines, query, run_chat

WORD = re.compile(r"\b(\w+\d+)\b")


def remembering(request: dict[str, Any]) -> Answer:
    """Keeps each message's last word in core memory and archival memory; on 'find X', searches."""
    if not request.get("tools"):
        return Answer(content="Summary of earlier talk.")
    last = last_message(request)
    if last["role"] == "tool":
        if last.get("name") == "archival_memory_search" or "Showing passages" in last["content"]:
            return Answer(tool_calls=[("send_message", {"message": "found: " + last["content"][-300:]})])
        return Answer(content="noted")
    text = last_user_text(request)
    if text.startswith("find "):
        return Answer(tool_calls=[("archival_memory_search", {"query": text[5:], "request_heartbeat": True})])
    word = text.split()[-1]
    return Answer(
        tool_calls=[
            ("core_memory_append", {"label": "human", "content": f"likes {word}"}),
            ("archival_memory_insert", {"content": f"a passage about {word}", "request_heartbeat": True}),
        ]
    )


def membot(fake: FakeOpenAI, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        env=environment(fake, home),
        cwd=home,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def chat_both(fake: FakeOpenAI, home: Path) -> None:
    run_chat(fake, home, "alice", lines(*(f"alice says zebrafoxtrot{i}" for i in range(6))))
    run_chat(fake, home, "bob", lines(*(f"bob says bobword{i}" for i in range(6))))


def agent_rows(home: Path, agent_id: int) -> dict[str, int]:
    """Rows of this agent in every table with an agent_id column, vec0 tables included."""
    if postgres.wanted():
        from storage.postgres_schema import AGENT_TABLES

        names = [t for t in AGENT_TABLES if t != "agents"] + ["messages_vec", "passages_vec"]
        counts = {
            t: query(home, f"SELECT count(*) FROM {t} WHERE agent_id = ?", agent_id)[0][0] for t in names
        }
        counts["agents"] = query(home, "SELECT count(*) FROM agents WHERE id = ?", agent_id)[0][0]
        return counts
    tables = [
        name
        for (name,) in query(
            home,
            "SELECT m.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c "
            "WHERE m.type = 'table' AND c.name = 'agent_id' AND m.name NOT LIKE '%\\_vec\\_%' ESCAPE '\\'",
        )
    ]
    counts = {t: query(home, f"SELECT count(*) FROM {t} WHERE agent_id = ?", agent_id)[0][0] for t in tables}
    for fts in ("messages_fts", "passages_fts"):
        counts[fts] = query(home, f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", f"owner:a{agent_id}")[0][
            0
        ]
    counts["agents"] = query(home, "SELECT count(*) FROM agents WHERE id = ?", agent_id)[0][0]
    return counts


def passage_hits(home: Path, word: str) -> list[tuple[Any, ...]]:
    """[(passages whose full-text index has `word`,)]: FTS5's index, or PostgreSQL's fts column."""
    if postgres.wanted():
        return query(home, "SELECT count(*) FROM passages WHERE fts @@ to_tsquery('english', ?)", word)
    return query(home, "SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", word)


def on_disk(home: Path, needle: bytes) -> int:
    """Times `needle` is in the SQLite file and its WAL (free pages and indexes included); on
    PostgreSQL, in the rows of every table (its own files keep freed bytes: see README)."""
    if postgres.wanted():
        return postgres.held(postgres.database_for(home), needle)
    found = 0
    for name in ("membot.db", "membot.db-wal"):
        path = home / name
        if path.exists():
            found += path.read_bytes().count(needle)
    return found


def test_forget_leaves_no_trace_of_the_person_and_keeps_everyone_else(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    chat_both(fake, tmp_path)
    [(alice,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'alice'")
    assert sum(agent_rows(tmp_path, alice).values()) > 30 and on_disk(tmp_path, b"zebrafoxtrot") > 0

    [(kept,)] = query(tmp_path, "SELECT count(*) FROM messages WHERE agent_id = ?", alice)
    refused = membot(fake, tmp_path, "forget", "--user", "alice")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert query(tmp_path, "SELECT count(*) FROM agents WHERE id = ?", alice) == [(1,)]

    done = membot(fake, tmp_path, "forget", "--user", "alice", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Forgot terminal user 'alice': {kept} messages, 6 passages")
    assert set(agent_rows(tmp_path, alice).values()) == {0}
    assert on_disk(tmp_path, b"zebrafoxtrot") == 0  # not in a live row, a free page, the index or the WAL

    [(bob,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'bob'")
    hits = passage_hits(tmp_path, "bobword3")
    assert (
        hits == [(1,)] and query(tmp_path, "SELECT count(*) FROM messages WHERE agent_id = ?", bob)[0][0] > 20
    )
    shown = membot(fake, tmp_path, "memory", "--user", "bob")
    assert shown.returncode == 0 and "likes bobword5" in shown.stdout
    again = run_chat(fake, tmp_path, "bob", lines("find bobword3"))
    assert b"a passage about bobword3" in again.stdout

    gone = membot(fake, tmp_path, "memory", "--user", "alice")
    assert gone.returncode == 1 and "no memory is kept for terminal user 'alice'" in gone.stderr


def test_export_forget_import_gives_back_the_same_memory(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    chat_both(fake, tmp_path)
    exported = tmp_path / "alice.json"
    out = membot(fake, tmp_path, "export", "--user", "alice", "--output", str(exported))
    assert out.returncode == 0, out.stderr
    first = json.loads(exported.read_text())
    assert first["format"] == "membot-export" and first["version"] == 1
    memory = first["memory"]
    [(kept,)] = query(
        tmp_path,
        "SELECT count(*) FROM messages m JOIN identities i USING (agent_id) WHERE i.platform_user_id = 'alice'",
    )
    assert len(memory["messages"]) == kept and len(memory["passages"]) == 6
    assert [m["search_text"] for m in memory["messages"] if m["role"] == "user"][:2] == [
        "alice says zebrafoxtrot0",
        "alice says zebrafoxtrot1",
    ]
    dates = [m["created_at"] for m in memory["messages"]]
    assert dates == sorted(dates)

    taken = membot(fake, tmp_path, "import", str(exported))
    assert taken.returncode == 1 and "already has memory here" in taken.stderr

    assert membot(fake, tmp_path, "forget", "--user", "alice", "--yes").returncode == 0
    back = membot(fake, tmp_path, "import", str(exported))
    assert back.returncode == 0, back.stderr
    again = tmp_path / "again.json"
    assert membot(fake, tmp_path, "export", "--user", "alice", "-o", str(again)).returncode == 0
    assert json.loads(again.read_text())["memory"] == memory

    shown = membot(fake, tmp_path, "memory", "--user", "alice")
    assert "likes zebrafoxtrot5" in shown.stdout and "archival memory: 6 passages" in shown.stdout
    found = run_chat(fake, tmp_path, "alice", lines("find zebrafoxtrot4"))
    assert b"a passage about zebrafoxtrot4" in found.stdout

    listed = membot(fake, tmp_path, "agents")
    assert listed.returncode == 0 and "terminal:alice" in listed.stdout and "terminal:bob" in listed.stdout
    assert listed.stdout.strip().endswith("2 agents")


async def test_a_damaged_or_foreign_file_is_refused_and_nothing_is_written(
    fake_server, runtime_for, tmp_path: Path
):
    fake = fake_server(remembering)
    runtime = await runtime_for(fake)
    await runtime.handle(Event.direct("terminal", "alice", "alice says zebrafoxtrot1"))
    alice = await runtime.find_agent("terminal", "alice")
    document = await controls.export(runtime, alice.id)
    before = await runtime.agents()

    edited = dict(document, memory={**document["memory"], "blocks": []})
    newer = dict(document, version=2)
    cases = {
        "checksum does not match": json.dumps(edited),
        "version 2; this membot reads version 1": json.dumps(newer),
        "not a membot export file": json.dumps({"hello": 1}),
        "not JSON": json.dumps(document)[:500],
    }
    for why, text in cases.items():
        with pytest.raises(InvalidInput, match=why):
            await controls.import_file(runtime, text, ("terminal", "carol"))
    assert await runtime.agents() == before
    await runtime.close()

    (tmp_path / "edited.json").write_text(json.dumps(edited))
    result = membot(fake, tmp_path, "import", str(tmp_path / "edited.json"), "--user", "carol")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "membot import: This export file is damaged or was edited: its checksum does not match."
    ]
    (tmp_path / "alice.json").write_text(json.dumps(document))
    moved = membot(fake, tmp_path, "import", str(tmp_path / "alice.json"), "--user", "carol")
    assert moved.returncode == 0, moved.stderr
    rows = query(tmp_path, "SELECT platform_user_id FROM identities ORDER BY platform_user_id")
    assert [r[0] for r in rows] == ["alice", "carol"]


def planner(request: dict[str, Any]) -> Answer:
    """Schedules a reminder when asked, else stays quiet."""
    if not request.get("tools"):
        return Answer(content="Summary.")
    if last_message(request)["role"] == "tool":
        return Answer(content="done")
    return Answer(
        tool_calls=[
            (
                "schedule_reminder",
                {"message": "water the teal plant", "when": "2099-01-01T09:00", "recurrence": "weekly"},
            )
        ]
    )


async def test_documents_reminders_and_quiet_travel_with_the_export(fake_server, runtime_for, tmp_path: Path):
    fake = fake_server(planner)
    runtime = await runtime_for(fake)
    person = Event.direct("terminal", "dora", "remind me weekly").person
    await runtime.handle(Event.direct("terminal", "dora", "remind me weekly"))
    assert await runtime.command(person, "/quiet") is not None
    dora = await runtime.find_agent("terminal", "dora")
    text = "# Garden\n\n" + "\n\n".join(f"Bed {i} grows {i * 3} beans in the spring." for i in range(200))
    loaded = await loading.load(runtime.memory(dora), text.encode(), "garden.md")
    document = await controls.export(runtime, dora.id)
    memory = document["memory"]
    assert [d["name"] for d in memory["documents"]] == ["garden.md"]
    assert [r["text"] for r in memory["reminders"]] == ["water the teal plant"]
    assert memory["heartbeats"]["enabled"] is False
    cited = [p for p in memory["passages"] if p["document"] == 0]
    assert len(cited) == loaded.passages and [p["position"] for p in cited] == sorted(
        p["position"] for p in cited
    )

    await controls.forget(runtime, dora.id)
    assert await runtime.find_agent("terminal", "dora") is None
    back = await controls.import_file(runtime, json.dumps(document), ("terminal", "dora"))
    again = (await controls.export(runtime, back))["memory"]
    for section in ("documents", "passages", "reminders", "heartbeats", "blocks", "messages"):
        assert again[section] == memory[section], section
    memory_text = await runtime.command(person, "/memory")
    assert memory_text is not None and "garden.md" in memory_text


def test_a_person_forgets_themselves_from_the_chat_after_confirming(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    run_chat(fake, tmp_path, "bob", lines("bob says bobword1"))
    said = run_chat(
        fake,
        tmp_path,
        "alice",
        lines("alice says zebrafoxtrot1", "alice says zebrafoxtrot2", "/forget confirm", "/memory"),
    ).stdout.decode()
    assert "Send /forget first" in said and "likes zebrafoxtrot2" in said  # confirm alone deletes nothing
    [(alice,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'alice'")
    [(kept,)] = query(tmp_path, "SELECT count(*) FROM messages WHERE agent_id = ?", alice)

    said = run_chat(
        fake, tmp_path, "alice", lines("/forget", "/forget confirm", "alice says newword7")
    ).stdout.decode()
    assert f"{kept} messages, 2 archival passages" in said and "There is no undo" in said
    assert "Done: I have forgotten everything about you" in said
    assert on_disk(tmp_path, b"zebrafoxtrot") == 0
    # writing again starts a new, empty memory, and Bob's is untouched
    [(again,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'alice'")
    texts = [t for (t,) in query(tmp_path, "SELECT content FROM messages WHERE agent_id = ?", again)]
    assert any("newword7" in t for t in texts) and not any("zebrafoxtrot" in t for t in texts)
    assert passage_hits(tmp_path, "bobword1") == [(1,)]


async def test_a_person_forgotten_by_another_process_is_not_answered_as_whoever_got_their_id(
    fake_server, runtime_for, tmp_path: Path
):
    fake = fake_server(remembering)
    bot = await runtime_for(fake)  # the running bot: it remembers which agent each account is
    await bot.handle(Event.direct("terminal", "erin", "erin says erinword1"))
    erin = await bot.find_agent("terminal", "erin")
    operator = await runtime_for(fake)  # `membot forget`, then a new person, in another process
    await controls.forget(operator, erin.id)
    await operator.handle(Event.direct("terminal", "fred", "fred says fredword1"))
    fred = await operator.find_agent("terminal", "fred")

    await bot.handle(Event.direct("terminal", "erin", "erin says erinword2"))
    again = await bot.find_agent("terminal", "erin")
    assert again is not None and again.id != fred.id
    freds = [t for (t,) in query(tmp_path, "SELECT content FROM messages WHERE agent_id = ?", fred.id)]
    assert any("fredword1" in t for t in freds) and not any("erinword" in t for t in freds)
    erins = [t for (t,) in query(tmp_path, "SELECT content FROM messages WHERE agent_id = ?", again.id)]
    assert any("erinword2" in t for t in erins) and not any("fredword" in t for t in erins)
