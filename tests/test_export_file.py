"""`/export` hands a person one file with everything kept about them; `/import` takes it back.

Through the real parts: `membot chat` as a process (the file on disk, `membot import` taking it),
the Discord adapter against the Discord stand-in (files arrive as multipart uploads on a DM, a
slash command's ephemeral follow-up, or the DM when the command came from a channel), the Slack
app against the Slack stand-in (files_upload_v2's three steps into the DM). The model is the
fake OpenAI server; what is asserted is what a person sees, what is on disk, or what the model
is shown afterwards.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from adapters.discord_files import fitting
from bot.events import IMPORT_MAX_BYTES, Attachment, File, Person
from bot.events import Answer as CommandAnswer
from bot.runtime import Runtime
from storage.db import connect
from tests import postgres
from tests.discord_standin import CHANNEL_ID, slash_command, user
from tests.fake_openai import Answer, last_message, last_user_text
from tests.platform import eventually
from tests.slack_standin import StandIn, callback, dm
from tests.test_discord import discord_bot  # noqa: F401  (the fixture)
from tests.test_forget import membot
from tests.test_slack import running, texts
from tests.test_terminal_chat import lines, run_chat

ANN = user("100000000000000001", "Ann")
BEA = user("100000000000000002", "Bea")
WROTE = re.compile(r"^Wrote (\S+)$", re.M)


@pytest.fixture
def slack() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


def keeping(request: dict[str, Any]) -> Answer:
    """Keeps each message's last word in core memory and archival memory, and answers it."""
    if not request.get("tools"):
        return Answer(content="Summary of earlier talk.")
    if last_message(request)["role"] == "tool":
        return Answer(content="done")
    text = last_user_text(request)
    word = text.split()[-1]
    return Answer(
        tool_calls=[
            ("core_memory_append", {"label": "human", "content": f"likes {word}"}),
            ("archival_memory_insert", {"content": f"a passage about {word}"}),
            ("send_message", {"message": f"answer to: {text}"}),
        ]
    )


def system_prompt(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


TABLES = ("agents", "identities", "messages", "passages")


def counts(db: str | Path) -> tuple[int, int, int, int]:
    """Agents, identities, messages and passages in the whole database."""
    if isinstance(db, Path) and postgres.has_database(db.parent):  # that folder's PostgreSQL database
        db = postgres.database_for(db.parent)
    if str(db).startswith("postgresql://"):
        found = [postgres.rows(str(db), f"SELECT count(*) FROM {t}")[0][0] for t in TABLES]
        return found[0], found[1], found[2], found[3]
    conn = connect(Path(db))
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES
        )
    finally:
        conn.close()


def tampered(data: bytes) -> bytes:
    """The file with one message edited (its checksum no longer matches)."""
    document = json.loads(data)
    document["memory"]["messages"][0]["content"] = "something I never said"
    return json.dumps(document).encode()


def contents(document: dict[str, Any]) -> str:
    return json.dumps(document["memory"]["messages"]) + json.dumps(document["memory"]["blocks"])


# --- the terminal ------------------------------------------------------------------------------


def test_export_in_the_terminal_writes_a_private_file_that_membot_import_takes_back(
    fake_server, tmp_path: Path
):
    fake = fake_server(keeping)
    run_chat(fake, tmp_path, "bob", lines("bob here, I like bobword7"))
    shown = run_chat(fake, tmp_path, "alice", lines("hi, I like zebrafoxtrot1", "/export")).stdout.decode()
    assert "Everything I keep about you is in membot-export-alice-" in shown
    [written] = WROTE.findall(shown)
    path = Path(written)
    assert path.parent == tmp_path and re.fullmatch(r"membot-export-alice-\d{8}T\d{6}Z\.json", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_bytes())
    assert document["format"] == "membot-export" and document["version"] == 1
    assert "zebrafoxtrot1" in contents(document) and "bobword7" not in contents(document)
    assert [i["platform_user_id"] for i in document["memory"]["identities"]] == ["alice"]

    assert membot(fake, tmp_path, "forget", "--user", "alice", "--yes").returncode == 0
    imported = membot(fake, tmp_path, "import", str(path))
    assert imported.returncode == 0, imported.stderr
    again = membot(fake, tmp_path, "memory", "--user", "alice")
    assert "likes zebrafoxtrot1" in again.stdout
    second = run_chat(fake, tmp_path, "alice", lines("/export")).stdout.decode()
    [other] = WROTE.findall(second)
    assert other != written  # a second export never overwrites the first
    assert json.loads(Path(other).read_bytes())["memory"]["messages"] == document["memory"]["messages"]


def test_import_in_the_terminal_restores_the_memory_and_refuses_a_tampered_file_or_kept_memory(
    fake_server, tmp_path: Path
):
    fake = fake_server(keeping)
    shown = run_chat(fake, tmp_path, "alice", lines("I like zebrafoxtrot1", "/export")).stdout.decode()
    [written] = WROTE.findall(shown)
    path = Path(written)
    refused = run_chat(fake, tmp_path, "alice", lines(f"/import {path}")).stdout.decode()
    assert "already keep memory for you here" in refused and "/forget" in refused

    assert membot(fake, tmp_path, "forget", "--user", "alice", "--yes").returncode == 0
    bad = tmp_path / "edited.json"
    bad.write_bytes(tampered(path.read_bytes()))
    before = counts(tmp_path / "membot.db")
    out = run_chat(fake, tmp_path, "alice", lines(f"/import {bad}", "/import nothing/here.json"))
    text = out.stdout.decode()
    assert "checksum does not match" in text and "Nothing was imported" in text
    assert "Cannot read nothing/here.json" in text
    assert counts(tmp_path / "membot.db") == before  # nothing half-imported

    asked = len(fake.agent_requests)
    done = run_chat(fake, tmp_path, "alice", lines(f"/import {path}", "how are you today")).stdout.decode()
    assert "Imported membot-export-alice-" in done and "1 archival passages" in done
    [later] = fake.agent_requests[asked:][:1]
    assert last_user_text(later) == "how are you today"
    assert "likes zebrafoxtrot1" in system_prompt(later)  # the imported core memory, in the prompt


# --- Discord -------------------------------------------------------------------------------------


async def test_discord_export_by_slash_command_in_a_dm_or_typed_in_the_dm_is_a_file_of_that_person_only(
    discord_bot,  # noqa: F811
):
    bot = await discord_bot(keeping)
    bot.dm(ANN, "I like applesauce")
    bot.dm(BEA, "I like beetroot")
    await bot.posts(2)
    asked = len(bot.fake.agent_requests)

    bot.discord.dispatch("INTERACTION_CREATE", slash_command("export", ANN, guild=False))
    await eventually(lambda: bot.discord.uploads)
    [upload] = bot.discord.uploads
    [deferred] = bot.discord.callbacks
    assert deferred["type"] == 5 and deferred["data"]["flags"] == 64  # answered at once, privately
    assert upload.where == "followup" and upload.ephemeral
    assert upload.filename.startswith(f"membot-export-{ANN['id']}-")
    document = upload.json()
    assert "applesauce" in contents(document) and "beetroot" not in contents(document)
    assert [i["platform_user_id"] for i in document["memory"]["identities"]] == [ANN["id"]]
    [followup] = bot.discord.followups
    assert "Everything I keep about you" in followup["content"] and followup["flags"] == 64

    bot.dm(ANN, "/export")
    await eventually(lambda: len(bot.discord.uploads) == 2)
    typed = bot.discord.uploads[1]
    assert typed.where == bot.discord.dm_channel_of(ANN["id"]) and not typed.ephemeral
    assert typed.json()["memory"]["messages"] == document["memory"]["messages"]
    assert len(bot.fake.agent_requests) == asked  # the commands never reached the model


async def test_discord_export_from_a_channel_goes_to_the_dm_and_shows_nothing_in_the_channel(
    discord_bot,  # noqa: F811
):
    bot = await discord_bot(keeping)
    bot.dm(ANN, "I like applesauce")
    await bot.posts(1)
    bot.mention(ANN, "/export")  # typed in #general: refused there, no memory read
    await eventually(lambda: bot.discord.texts(CHANNEL_ID))
    [refusal] = bot.discord.texts(CHANNEL_ID)
    assert "/export in a direct message" in refusal and "applesauce" not in refusal

    bot.discord.dispatch("INTERACTION_CREATE", slash_command("export", ANN))  # the slash command in #general
    await eventually(lambda: bot.discord.uploads and bot.discord.followups)
    [upload] = bot.discord.uploads
    assert upload.where == bot.discord.dm_channel_of(ANN["id"])
    assert "applesauce" in contents(upload.json())
    [followup] = bot.discord.followups
    assert followup["flags"] == 64 and "direct messages" in followup["content"]
    assert bot.discord.texts(CHANNEL_ID) == [refusal]  # nothing more in the channel
    assert all(p["files"] == [] for p in bot.discord.posts if p["channel_id"] == CHANNEL_ID)


async def test_discord_import_of_an_attachment_restores_the_memory_and_a_tampered_file_writes_nothing(
    discord_bot,  # noqa: F811
):
    bot = await discord_bot(keeping)
    bot.dm(ANN, "I like applesauce")
    await bot.posts(1)
    bot.dm(ANN, "/export")
    await eventually(lambda: bot.discord.uploads)
    exported = bot.discord.uploads[0].data
    dm_channel = bot.discord.dm_channel_of(ANN["id"])

    kept = bot.discord.attach("mine.json", exported, "application/json")
    bot.dm(ANN, "/import", attachments=[kept])  # still has memory: refused
    await eventually(lambda: any("already keep memory" in t for t in bot.discord.texts(dm_channel)))

    bot.dm(ANN, "/forget")
    await eventually(lambda: any("This deletes everything" in t for t in bot.discord.texts(dm_channel)))
    bot.dm(ANN, "/forget confirm")
    await eventually(lambda: any("forgotten everything" in t for t in bot.discord.texts(dm_channel)))

    before = counts(bot.runtime.settings.db)
    bad = bot.discord.attach("edited.json", tampered(exported), "application/json")
    bot.dm(ANN, "/import", attachments=[bad])
    await eventually(lambda: any("checksum" in t for t in bot.discord.texts(dm_channel)))
    assert counts(bot.runtime.settings.db) == before

    good = bot.discord.attach("backup.json", exported, "application/json")
    bot.dm(ANN, "/import", attachments=[good])
    await eventually(lambda: any(t.startswith("Imported backup.json") for t in bot.discord.texts(dm_channel)))
    asked = len(bot.fake.agent_requests)
    bot.dm(ANN, "what do you remember")
    await eventually(lambda: len(bot.fake.agent_requests) > asked)
    later = bot.fake.agent_requests[asked]
    assert "likes applesauce" in system_prompt(later)
    assert "I like applesauce" in json.dumps(later["messages"])  # the imported messages, in the context


async def test_discord_import_slash_command_takes_its_attachment_option(discord_bot):  # noqa: F811
    bot = await discord_bot(keeping)
    bot.dm(ANN, "I like applesauce")
    await bot.posts(1)
    bot.dm(ANN, "/export")
    await eventually(lambda: bot.discord.uploads)
    exported = bot.discord.uploads[0].data
    file = bot.discord.attach("ann.json", exported, "application/json")
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("import", BEA, files={"file": file}))
    await eventually(lambda: bot.discord.followups)
    [answer] = bot.discord.followups
    assert answer["flags"] == 64 and answer["content"].startswith("Imported ann.json")
    bea = await bot.runtime.find_agent("discord", BEA["id"])
    assert bea is not None
    shown = await bot.runtime.command(Person("discord", BEA["id"], "Bea"), "/memory")
    assert shown is not None and "likes applesauce" in shown


# --- Slack -----------------------------------------------------------------------------------


async def test_slack_export_typed_in_the_dm_is_uploaded_there_with_that_person_s_memory_only(
    fake_server,
    runtime_for,
    slack: StandIn,
):
    fake = fake_server(keeping)
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "I like applesauce", "1700000001.000100"), "Ev1"))
        await app.post(callback(dm("U2", "I like beetroot", "1700000002.000100"), "Ev2"))
        await eventually(lambda: len(slack.posted()) == 2)
        await app.post(callback(dm("U1", " /export", "1700000003.000100"), "Ev3"))
        await eventually(lambda: slack.uploads)
    [upload] = slack.uploads
    assert upload.channel == "DU1" and upload.filename.startswith("membot-export-T1-U1-")
    assert "Everything I keep about you" in upload.initial_comment
    document = upload.json()
    assert "applesauce" in contents(document) and "beetroot" not in contents(document)
    assert [c.args["filename"] for c in slack.called("files.getUploadURLExternal")] == [upload.filename]


async def test_slack_export_slash_command_from_a_channel_uploads_into_the_dm_and_says_so_privately(
    fake_server,
    runtime_for,
    slack: StandIn,
):
    fake = fake_server(keeping)
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "I like applesauce", "1700000001.000100"), "Ev1"))
        await eventually(lambda: slack.posted())
        fields = {"command": "/membot", "text": "export", "user_id": "U1", "team_id": "T1"}
        fields |= {"channel_id": "C1", "response_url": f"{slack.base}/response/r1"}
        status, _ = await app.post(urlencode(fields).encode(), form=True)
        assert status == 200
        await eventually(lambda: slack.uploads and slack.responses)
    [upload] = slack.uploads
    assert upload.channel == "DU1" and "applesauce" in contents(upload.json())
    [response] = slack.responses
    assert response["response_type"] == "ephemeral" and "direct messages" in response["text"]
    assert texts(slack, "C1") == []  # nothing in the channel


async def test_slack_refusing_the_upload_is_said_to_the_person_naming_the_scope(
    fake_server, runtime_for, slack: StandIn
):
    fake = fake_server(keeping)
    slack.fail("files.getUploadURLExternal", "missing_scope")
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "I like applesauce", "1700000001.000100"), "Ev1"))
        await eventually(lambda: slack.posted())
        fields = {"command": "/membot", "text": "export", "user_id": "U1", "team_id": "T1"}
        fields |= {"channel_id": "C1", "response_url": f"{slack.base}/response/r1"}
        await app.post(urlencode(fields).encode(), form=True)
        await eventually(lambda: slack.responses)
    [response] = slack.responses
    assert "missing_scope" in response["text"] and "files:write" in response["text"]
    assert slack.uploads == [] and texts(slack, "C1") == []


async def test_slack_import_of_a_file_shared_in_the_dm_restores_the_memory(
    fake_server,
    runtime_for,
    slack: StandIn,
    tmp_path: Path,
):
    fake = fake_server(keeping)
    async with running(runtime_for, fake, slack) as first:
        await first.post(callback(dm("U1", "I like applesauce", "1700000001.000100"), "Ev1"))
        await eventually(lambda: slack.posted())
        await first.post(callback(dm("U1", " /export", "1700000002.000100"), "Ev2"))
        await eventually(lambda: slack.uploads)
    slack.files["ann.json"] = slack.uploads[0].data
    slack.files["edited.json"] = tampered(slack.uploads[0].data)
    fresh = tmp_path / "other"  # another membot, with its own database
    fresh.mkdir()
    async with running(runtime_for, fake, slack, MEMBOT_DB=str(fresh / "membot.db")) as second:
        runtime: Runtime = second.runtime

        def shared(name: str, ts: str) -> dict[str, Any]:
            size = len(slack.files[name])
            file = {"id": f"F-{name}", "name": name, "mimetype": "application/json", "size": size}
            file["url_private_download"] = f"{slack.base}/files/{name}"
            return dm("U1", "import", ts, subtype="file_share", files=[file])

        await second.post(callback(shared("edited.json", "1700000010.000100"), "Ev10"))
        await eventually(lambda: any("checksum" in t for t in texts(slack, "DU1")))
        assert counts(runtime.settings.db)[2:] == (0, 0)  # no message, no passage written
        await second.post(callback(shared("ann.json", "1700000011.000100"), "Ev11"))
        await eventually(lambda: any(t.startswith("Imported ann.json") for t in texts(slack, "DU1")))
        asked = len(fake.agent_requests)
        await second.post(callback(dm("U1", "and now?", "1700000012.000100"), "Ev12"))
        await eventually(lambda: len(fake.agent_requests) > asked)
    assert "likes applesauce" in system_prompt(fake.agent_requests[asked])
    assert counts(runtime.settings.db)[:2] == (1, 1)  # the empty agent was replaced, not kept beside


# --- limits ------------------------------------------------------------------------------------


async def test_an_import_without_a_file_or_over_the_size_limit_is_refused_before_anything_is_read(
    fake_server, runtime_for
):
    runtime: Runtime = await runtime_for(fake_server(keeping))
    person = Person("chat", "ann", "Ann")
    reads: list[str] = []

    async def read() -> bytes:
        reads.append("read")
        return b"{}"

    big = Attachment("huge.json", IMPORT_MAX_BYTES + 1, "application/json", read)
    refused = await runtime.answer(person, "/import", (big,))
    assert refused is not None and "over the 25.0 MB I import" in refused.text and reads == []
    usage = await runtime.answer(person, "/import")
    assert usage is not None and "Attach your export file" in usage.text
    two = await runtime.answer(person, "/import", (big, big))
    assert two is not None and "one export file at a time" in two.text
    nothing = await runtime.answer(person, "/export")
    assert nothing == CommandAnswer("I keep nothing about you.")
    assert counts(runtime.settings.db) == (0, 0, 0, 0)


def test_a_file_over_discord_s_upload_limit_is_named_in_the_text_not_sent():
    answer = CommandAnswer(
        "Here it is.", (File("membot-export-1.json", b"x" * 2_000_001, "application/json"),)
    )
    text, files = fitting(answer, limit=2_000_000)
    assert files == [] and "over Discord's upload limit of 2 MB" in text and "membot export" in text
    text, files = fitting(answer, limit=3_000_000)
    assert text == "Here it is." and [f.filename for f in files] == ["membot-export-1.json"]
