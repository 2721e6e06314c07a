"""The Discord adapter against a stand-in of Discord on 127.0.0.1 (tests/discord_standin.py).

The real `serve()` runs the real discord.py client: it logs in over REST, connects to the
stand-in's gateway, and discord.py's own code parses real-format payloads (a DM, a mention in a
server channel, a reply to the bot, another bot's message, an interaction). What goes back is
caught at the stand-in's HTTP boundary; the model is the fake OpenAI server. Nothing of ours is
mocked. The last tests run `membot discord` as a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord_bot import serve
from adapters.discord_text import LIMIT, sanitise, split
from bot.events import Event, Kind
from bot.runtime import Runtime
from storage import outbox
from storage.db import connect
from tests import postgres
from tests.discord_standin import (
    BOT,
    CHANNEL_ID,
    GUILD_ID,
    THREAD_ID,
    TOKEN,
    DiscordStandIn,
    message,
    slash_command,
    user,
)
from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text, say
from tests.platform import eventually
from tests.test_terminal_chat import answering

ANN = user("100000000000000001", "Ann")
BEA = user("100000000000000002", "Bea")
CY = user("100000000000000003", "Cy")
OTHER_BOT = user("100000000000000009", "Helper", bot=True)
MENTION = f"<@{BOT['id']}>"


def system_prompt(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


@dataclass
class Bot:
    discord: DiscordStandIn
    runtime: Runtime
    fake: FakeOpenAI
    task: asyncio.Task[None]
    stopping: asyncio.Event

    def dm(self, author: dict[str, Any], content: str, **kw: Any) -> dict[str, Any]:
        data = message(self.discord.dm_channel_of(author["id"]), author, content, guild=False, **kw)
        self.discord.dispatch("MESSAGE_CREATE", data)
        return data

    def say_in(self, channel: str, author: dict[str, Any], content: str, **kw: Any) -> dict[str, Any]:
        data = message(channel, author, content, guild=True, **kw)
        self.discord.dispatch("MESSAGE_CREATE", data)
        return data

    def mention(
        self, author: dict[str, Any], text: str, channel: str = CHANNEL_ID, **kw: Any
    ) -> dict[str, Any]:
        mentions = [BOT, *kw.pop("mentions", [])]
        return self.say_in(channel, author, f"{MENTION} {text}", mentions=mentions, **kw)

    async def posts(self, count: int) -> list[dict[str, Any]]:
        await eventually(lambda: len(self.discord.posts) >= count or self.task.done())
        assert not self.task.done(), self.task
        return self.discord.posts


@pytest.fixture
async def discord_bot(fake_server, runtime_for) -> AsyncIterator[Callable[..., Any]]:
    started: list[Bot] = []
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

    async def start(
        script: Callable[[dict[str, Any]], Answer] = answering,
        standin: dict[str, Any] | None = None,
        **env: str,
    ) -> Bot:
        stand_in = DiscordStandIn(**(standin or {})).__enter__()
        fake = fake_server(script)
        runtime = await runtime_for(fake, DISCORD_TOKEN=TOKEN, DISCORD_API_URL=stand_in.api_url, **env)
        stopping = asyncio.Event()
        task = asyncio.create_task(serve(runtime, stopping))
        bot = Bot(stand_in, runtime, fake, task, stopping)
        started.append(bot)
        await eventually(lambda: stand_in.connected or task.done())
        if task.done():
            task.result()
        return bot

    yield start
    for bot in started:
        bot.stopping.set()
        try:
            await asyncio.wait_for(bot.task, 30)
        finally:
            bot.discord.__exit__()
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


# --- DMs and channels --------------------------------------------------------------------------


async def test_a_dm_reaches_the_persons_agent_in_private_and_the_answer_arrives_in_the_dm(discord_bot):
    bot = await discord_bot()
    sent = bot.dm(ANN, "hello there")
    [post] = await bot.posts(1)
    dm_channel = bot.discord.dm_channel_of(ANN["id"])
    assert post["channel_id"] == dm_channel
    assert post["json"]["content"] == "answer to: hello there"
    assert str(post["json"]["message_reference"]["message_id"]) == sent["id"]
    [request] = bot.fake.agent_requests
    assert "You are talking with Ann in a private conversation" in system_prompt(request)
    assert "This conversation is private" in system_prompt(request)
    assert dm_channel in bot.discord.typing  # typing shown while the agent worked
    agent = await bot.runtime.find_agent("discord", ANN["id"])
    assert agent is not None


async def test_a_mention_in_a_channel_is_answered_there_as_a_reply_by_the_speakers_agent_in_public(
    discord_bot,
):
    bot = await discord_bot()
    sent = bot.mention(BEA, f"what do you think of <@{ANN['id']}>'s plan?", mentions=[ANN])
    [post] = await bot.posts(1)
    assert post["channel_id"] == CHANNEL_ID
    reference = post["json"]["message_reference"]
    assert str(reference["message_id"]) == sent["id"] and reference["fail_if_not_exists"] is False
    [request] = bot.fake.agent_requests
    prompt = system_prompt(request)
    assert "You are talking with Bea in the public channel #general in Acme on discord" in prompt
    assert "This conversation is public" in prompt
    assert last_user_text(request) == "what do you think of @Ann's plan?"  # no <@id> markup, no own mention
    assert post["json"]["content"] == "answer to: what do you think of @Ann's plan?"


async def test_every_post_allows_no_mass_or_role_mentions_and_pings_only_the_speaker(discord_bot):
    bot = await discord_bot(
        lambda request: (
            say("hey @everyone and @here, see <@&5>")
            if request.get("tools") and last_message(request)["role"] != "tool"
            else Answer(content="done")
        )
    )
    bot.mention(BEA, "announce it")
    bot.dm(ANN, "and here")
    posts = await bot.posts(2)
    for post in posts:
        allowed = post["json"]["allowed_mentions"]
        assert "everyone" not in allowed["parse"] and "roles" not in allowed["parse"]
        assert "users" not in allowed["parse"]
        assert [str(u) for u in allowed["users"]] in ([BEA["id"]], [ANN["id"]])
        assert "@everyone" not in post["json"]["content"] and "@here" not in post["json"]["content"]


async def test_two_people_in_one_channel_are_answered_by_two_agents(discord_bot):
    bot = await discord_bot()
    bot.mention(ANN, "I am Ann")
    bot.mention(BEA, "I am Bea")
    await bot.posts(2)
    ann = await bot.runtime.find_agent("discord", ANN["id"])
    bea = await bot.runtime.find_agent("discord", BEA["id"])
    assert ann is not None and bea is not None and ann.id != bea.id
    speakers = sorted(
        system_prompt(r).split("You are talking with ")[1].split(" ")[0] for r in bot.fake.agent_requests
    )
    assert speakers == ["Ann", "Bea"]


async def test_a_reply_to_the_bot_is_answered_and_a_plain_channel_message_is_not(discord_bot):
    bot = await discord_bot()
    bot.mention(ANN, "first")
    [first] = await bot.posts(1)
    bots_message = message(CHANNEL_ID, BOT, first["json"]["content"], guild=True)
    bot.say_in(CHANNEL_ID, BEA, "just chatting with friends")  # no mention, no reply: not for the bot
    bot.say_in(CHANNEL_ID, ANN, "a follow-up, no mention", replying_to=bots_message)
    posts = await bot.posts(2)
    assert posts[1]["json"]["content"] == "answer to: a follow-up, no mention"
    assert [last_user_text(r) for r in bot.fake.agent_requests] == ["first", "a follow-up, no mention"]
    assert await bot.runtime.find_agent("discord", BEA["id"]) is None  # nothing stored for Bea


async def test_in_a_channel_of_membot_discord_channels_every_message_is_answered(discord_bot):
    bot = await discord_bot(MEMBOT_DISCORD_CHANNELS=f"123, {CHANNEL_ID}")
    bot.say_in(CHANNEL_ID, BEA, "anyone around?")
    [post] = await bot.posts(1)
    assert post["json"]["content"] == "answer to: anyone around?"


async def test_a_thread_is_a_conversation_of_its_own(discord_bot):
    bot = await discord_bot()
    bot.mention(CY, "in the thread", channel=THREAD_ID)
    [post] = await bot.posts(1)
    assert post["channel_id"] == THREAD_ID
    prompt = system_prompt(bot.fake.agent_requests[0])
    assert "the public channel a thread in #general › plans in Acme on discord" in prompt


async def test_own_echo_other_bots_and_system_messages_get_no_answer_and_nothing_is_stored(discord_bot):
    bot = await discord_bot()
    bot.mention(OTHER_BOT, "I am a bot")
    bot.mention(ANN, "Ann joined", kind=7)  # a system message (member join)
    bot.say_in(CHANNEL_ID, BOT, f"{MENTION} my own words", mentions=[BOT])
    bot.dm(BEA, "only this one")
    [post] = await bot.posts(1)  # the stand-in echoes the bot's posts back, like Discord
    assert post["json"]["content"] == "answer to: only this one"
    bot.dm(BEA, "and this")
    await bot.posts(2)
    assert len(bot.discord.posts) == 2  # neither reply's echo was answered
    assert [last_user_text(r) for r in bot.fake.agent_requests] == ["only this one", "and this"]
    for someone in (OTHER_BOT, ANN, BOT):
        assert await bot.runtime.find_agent("discord", someone["id"]) is None


# --- long answers, attachments, failures ---------------------------------------------------------


def query(bot: Bot, sql: str) -> list[tuple[Any, ...]]:
    if bot.runtime.settings.db.startswith("postgresql://"):
        return postgres.rows(bot.runtime.settings.db, sql)
    conn = connect(bot.runtime.settings.db)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def long_answer() -> str:
    prose = "\n\n".join(f"Paragraph {i}: " + "words " * 60 for i in range(8))
    code = "```python\n" + "\n".join(f"value_{i} = {i} * 2  # step {i}" for i in range(120)) + "\n```"
    return prose + "\n\n" + code + "\n\nThat is all."


async def test_a_long_answer_goes_out_in_parts_under_the_limit_with_code_blocks_closed_and_reopened(
    discord_bot,
):
    text = long_answer()
    assert len(text) > 5000
    bot = await discord_bot(
        lambda r: (
            say(text) if r.get("tools") and last_message(r)["role"] != "tool" else Answer(content="done")
        )
    )
    sent = bot.mention(ANN, "write a lot")
    await bot.posts(3)
    await bot.runtime.delivery.idle(10)
    posts = bot.discord.posts
    contents = [p["json"]["content"] for p in posts]
    assert len(posts) >= 3 and all(len(c) <= LIMIT for c in contents)
    assert str(posts[0]["json"]["message_reference"]["message_id"]) == sent["id"]
    assert all("message_reference" not in p["json"] for p in posts[1:])
    assert all(c.count("```") % 2 == 0 for c in contents)
    code_parts = [c for c in contents if "value_" in c]
    assert len(code_parts) >= 2 and all("```python\n" in c for c in code_parts)
    rejoined = "\n".join(contents).replace("\n```\n```python\n", "\n")
    for i in range(120):
        assert f"value_{i} = {i} * 2  # step {i}" in rejoined
    assert contents[-1].endswith("That is all.")


async def test_a_text_attachment_is_read_an_image_only_named_an_oversize_file_not_read(discord_bot):
    bot = await discord_bot(MEMBOT_ATTACHMENT_MAX_BYTES="200")
    files = [
        bot.discord.attach("notes.txt", b"remember: the boat leaves at nine", "text/plain; charset=utf-8"),
        bot.discord.attach("photo.png", b"\x89PNG" + b"\0" * 50, "image/png"),
        bot.discord.attach("big.md", b"# big\n" + b"x" * 500, "text/markdown"),
    ]
    bot.dm(ANN, "my files", attachments=files)
    await bot.posts(1)
    text = json.dumps(bot.fake.agent_requests[0]["messages"])
    assert "notes.txt" in text and "photo.png" in text and "big.md" in text
    assert "not loaded" in text  # big.md: over the limit
    assert bot.discord.downloads == ["notes.txt"]  # the image and the oversize file never fetched
    stored = " ".join(content for (content,) in query(bot, "SELECT content FROM passages"))
    assert "the boat leaves at nine" in stored and "x" * 100 not in stored
    assert [name for (name,) in query(bot, "SELECT name FROM documents")] == ["notes.txt"]


async def test_when_the_model_fails_the_person_gets_a_short_apology_and_the_next_message_is_answered(
    discord_bot,
):
    calls = {"n": 0}

    def flaky(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        calls["n"] += 1
        if calls["n"] == 1:
            return Answer(status=500, error="model exploded")
        return answering(request)

    bot = await discord_bot(flaky)
    bot.dm(ANN, "first try")
    [apology] = await bot.posts(1)
    text = apology["json"]["content"]
    assert "Traceback" not in text and "exploded" not in text and len(text) < 300
    bot.dm(ANN, "second try")
    posts = await bot.posts(2)
    assert posts[1]["json"]["content"] == "answer to: second try"


async def test_a_message_redelivered_after_a_resume_is_answered_once(discord_bot):
    bot = await discord_bot()
    before = bot.discord.last_seq()
    bot.dm(ANN, "say it once")
    await bot.posts(1)
    await bot.runtime.delivery.idle(5)
    bot.discord.replay_after = before  # the RESUME replays the message as if it had been missed
    bot.discord.reconnect()
    await eventually(lambda: bot.discord.resumes)
    bot.dm(ANN, "after the resume")
    posts = await bot.posts(2)
    await bot.runtime.delivery.idle(5)
    assert [p["json"]["content"] for p in bot.discord.posts] == [
        "answer to: say it once",
        "answer to: after the resume",
    ]
    assert len(bot.discord.identifies) == 1 and len(bot.discord.resumes) == 1
    assert [last_user_text(r) for r in bot.fake.agent_requests] == ["say it once", "after the resume"]
    assert len(posts) == 2


# --- proactive delivery ------------------------------------------------------------------------


def reminding(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="summary")
    if last_message(request)["role"] == "tool":
        return Answer(content="done")
    return say("Reminder: call the dentist")


async def test_a_reminder_for_someone_who_has_not_written_opens_their_dm(discord_bot):
    bot = await discord_bot(reminding)
    agent = await bot.runtime.agent_for("discord", CY["id"], "Cy")
    await bot.runtime.wake(
        agent.id, Event.direct("discord", CY["id"], "reminder: dentist", kind=Kind.REMINDER)
    )
    [post] = await bot.posts(1)
    assert bot.discord.dms_opened == [CY["id"]]
    assert post["channel_id"] == bot.discord.dm_channel_of(CY["id"])
    assert post["json"]["content"] == "Reminder: call the dentist"


async def test_a_reminder_to_someone_with_closed_dms_is_marked_failed_not_retried(discord_bot):
    bot = await discord_bot(reminding)
    bot.discord.closed_dms.add(CY["id"])
    agent = await bot.runtime.agent_for("discord", CY["id"], "Cy")
    await bot.runtime.wake(
        agent.id, Event.direct("discord", CY["id"], "reminder: dentist", kind=Kind.REMINDER)
    )
    await bot.runtime.delivery.idle(10)
    [entry] = await bot.runtime.db.run(outbox.for_agent, agent.id)
    assert (entry.state, entry.attempts) == ("failed", 1)
    assert "50007" in entry.error
    assert bot.discord.posts == []


# --- commands ----------------------------------------------------------------------------------


async def test_slash_commands_are_synced_globally_and_answered_to_the_person_alone(discord_bot):
    bot = await discord_bot()
    [(path, commands)] = bot.discord.syncs
    assert path == f"/applications/{BOT['id']}/commands"
    assert {c["name"] for c in commands} >= {"memory", "timezone", "help", "quiet"}
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("timezone", BEA, {"zone": "Europe/Sofia"}))
    await eventually(lambda: len(bot.discord.callbacks) == 1)
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("memory", BEA))
    await eventually(lambda: len(bot.discord.callbacks) >= 2)
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("quiet", BEA, {"mode": "off"}, guild=False))
    await eventually(lambda: len(bot.discord.callbacks) >= 3)
    zone, memory, quiet = bot.discord.callbacks
    assert quiet["data"]["flags"] == 64 and "on again" in quiet["data"]["content"]
    assert zone["type"] == 4 and zone["data"]["flags"] == 64
    assert zone["data"]["content"] == "Your time zone is now Europe/Sofia."
    assert memory["data"]["flags"] == 64 and "recall memory" in memory["data"]["content"]
    agent = await bot.runtime.find_agent("discord", BEA["id"])
    assert agent is not None and agent.timezone == "Europe/Sofia"
    assert bot.fake.agent_requests == [] and bot.discord.posts == []


async def test_with_membot_discord_guild_commands_sync_to_that_guild(discord_bot):
    bot = await discord_bot(MEMBOT_DISCORD_GUILD=GUILD_ID)
    [(path, commands)] = bot.discord.syncs
    assert path == f"/applications/{BOT['id']}/guilds/{GUILD_ID}/commands"
    assert {c["name"] for c in commands} >= {"memory", "timezone"}


async def test_a_command_typed_in_a_dm_is_answered_and_never_reaches_the_agent(discord_bot):
    bot = await discord_bot()
    bot.dm(ANN, "/timezone America/New_York")
    bot.dm(ANN, "/memory")
    posts = await bot.posts(2)
    assert posts[0]["json"]["content"] == "Your time zone is now America/New_York."
    assert "recall memory: 0 messages" in posts[1]["json"]["content"]
    bot.mention(BEA, "/memory")  # in a channel: never shown there; pointed to the slash command
    posts = await bot.posts(3)
    assert (
        "slash command /memory" in posts[2]["json"]["content"]
        and "recall memory" not in posts[2]["json"]["content"]
    )
    assert bot.fake.agent_requests == []


# --- connection ----------------------------------------------------------------------------------


async def test_without_the_message_content_intent_it_warns_and_still_answers_dms(discord_bot, caplog):
    caplog.set_level(logging.WARNING, logger="adapters.discord_bot")
    bot = await discord_bot(standin={"allow_message_content": False})
    first, second = bot.discord.identifies
    assert first["intents"] & discord.Intents(message_content=True).value
    assert not second["intents"] & discord.Intents(message_content=True).value
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (
        "Message Content" in warning
        and "MEMBOT_DISCORD_CHANNELS" in warning
        and "Developer Portal" in warning
    )
    bot.dm(ANN, "still there?")
    [post] = await bot.posts(1)
    assert post["json"]["content"] == "answer to: still there?"


@pytest.mark.parametrize("shards", ["auto", "1"])
async def test_an_auto_sharded_client_connects_and_answers(discord_bot, shards):
    bot = await discord_bot(MEMBOT_DISCORD_SHARDS=shards)
    assert (("GET", "/gateway/bot") in bot.discord.requests) == (shards == "auto")  # a count needs no asking
    assert bot.discord.identifies[0]["shard"] == [0, 1]
    bot.dm(ANN, "sharded hello")
    [post] = await bot.posts(1)
    assert post["json"]["content"] == "answer to: sharded hello"


async def test_stopping_finishes_the_turn_under_way_then_closes(discord_bot):
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(request: dict[str, Any]) -> Answer:
        if request.get("tools") and last_message(request)["role"] != "tool":
            loop.call_soon_threadsafe(arrived.set)
            return Answer(delay=1.0, tool_calls=[("send_message", {"message": "made it"})])
        return Answer(content="done")

    bot = await discord_bot(slow)
    bot.dm(ANN, "slow one")
    await asyncio.wait_for(arrived.wait(), 10)
    bot.stopping.set()
    await asyncio.wait_for(bot.task, 30)
    assert bot.discord.texts() == ["made it"]


# --- the splitter --------------------------------------------------------------------------------


def test_split_keeps_text_at_the_limit_whole_and_cuts_one_over():
    assert split("a" * LIMIT) == ["a" * LIMIT]
    assert [len(p) for p in split("a" * (LIMIT + 1))] == [LIMIT - 4, 5]
    assert split("") == [] and split("\n\n") == []


def test_split_prefers_paragraphs_then_lines():
    paragraphs = "\n\n".join(["p" * 900, "q" * 900, "r" * 900])
    assert split(paragraphs) == ["p" * 900 + "\n\n" + "q" * 900, "r" * 900]
    lines = "\n".join(["l" * 700] * 5)
    parts = split(lines)
    assert all(set(p.split("\n")[0]) == {"l"} and len(p) <= LIMIT for p in parts)
    assert sum(p.count("l" * 700) for p in parts) == 5  # no line was cut


def test_split_closes_a_long_code_block_and_reopens_it_with_its_language():
    code = "```js\n" + "\n".join(f"let v{i} = {i};" for i in range(400)) + "\n```"
    parts = split("Here is the code:\n" + code)
    assert len(parts) >= 3 and all(len(p) <= LIMIT for p in parts)
    assert parts[0].startswith("Here is the code:\n```js\n") and parts[0].endswith("\n```")
    assert all(p.startswith("```js\n") and p.endswith("```") for p in parts[1:])


def test_split_moves_a_code_block_that_fits_whole_to_the_next_part():
    code = "```py\n" + "x = 1\n" * 200 + "```"
    text = "intro " * 150 + "\n\n" + code
    parts = split(text)
    assert parts[1] == code


def test_split_cuts_a_line_without_breaks_at_a_space_or_hard():
    words = split("word " * 1000)
    assert all(len(p) <= LIMIT for p in words) and all(not p.startswith(" ") for p in words)
    assert " ".join(words).split() == ["word"] * 1000  # cut between words, none lost
    solid = split("x" * 4500)
    assert "".join(solid) == "x" * 4500 and all(len(p) <= LIMIT for p in solid)


def test_sanitise_defuses_mass_mentions_only():
    assert sanitise("hi @everyone and @here, <@123>") == "hi @\u200beveryone and @\u200bhere, <@123>"
    assert sanitise("mail me@example.com") == "mail me@example.com"


# --- `membot discord` as a process ---------------------------------------------------------------

TIMEOUT = 60


def environment(fake: FakeOpenAI, stand_in: DiscordStandIn, home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "MEMBOT_DB": str(home / "membot.db"),
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "test-key",
        "MEMBOT_LLM_RETRIES": "0",
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_URL": stand_in.api_url,
        **extra,
    }


def wait_for(condition: Callable[[], object], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {seconds} s")
        time.sleep(0.02)


def test_membot_discord_answers_a_dm_and_a_mention_and_stops_cleanly_on_sigterm(tmp_path: Path):
    text = long_answer()

    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        if last_message(request)["role"] == "tool":
            return Answer(content="done")
        asked = last_user_text(request)
        return say(text if asked == "the long one" else f"answer to: {asked}")

    with FakeOpenAI(script) as fake, DiscordStandIn() as stand_in:
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "discord"],
            env=environment(fake, stand_in, tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: stand_in.connected or proc.poll() is not None)
            assert proc.poll() is None, proc.communicate(timeout=5)[1].decode()
            dm = message(stand_in.dm_channel_of(ANN["id"]), ANN, "hello from a DM", guild=False)
            stand_in.dispatch("MESSAGE_CREATE", dm)
            wait_for(lambda: len(stand_in.posts) >= 1)
            mention = message(CHANNEL_ID, BEA, f"{MENTION} the long one", guild=True, mentions=[BOT])
            stand_in.dispatch("MESSAGE_CREATE", mention)
            wait_for(lambda: len(stand_in.posts) >= 4)
            time.sleep(0.2)  # let any last part land before stopping
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        log = err.decode(errors="replace")
        assert proc.returncode == 0, log
        assert "Traceback" not in log and TOKEN not in log
        assert "membot stopped" in log
        first, *parts = stand_in.posts
        assert first["channel_id"] == stand_in.dm_channel_of(ANN["id"])
        assert first["json"]["content"] == "answer to: hello from a DM"
        assert len(parts) >= 3 and all(p["channel_id"] == CHANNEL_ID for p in parts)
        assert all(len(p["json"]["content"]) <= LIMIT for p in parts)
        assert str(parts[0]["json"]["message_reference"]["message_id"]) == mention["id"]
        assert parts[-1]["json"]["content"].endswith("That is all.")


def test_membot_discord_with_a_wrong_token_says_how_to_fix_it_in_one_line(tmp_path: Path):
    with FakeOpenAI(answering) as fake, DiscordStandIn() as stand_in:
        result = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "discord"],
            env=environment(fake, stand_in, tmp_path, DISCORD_TOKEN="not-the-token"),
            cwd=tmp_path,
            capture_output=True,
            timeout=TIMEOUT,
        )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("membot:")]
    assert len(lines) == 1 and "Discord refused DISCORD_TOKEN" in lines[0] and "Reset Token" in lines[0]
    assert "Traceback" not in err and "not-the-token" not in err
    assert stand_in.identifies == []  # refused at login, before the gateway


async def test_the_link_slash_command_gives_a_code_for_the_person_alone(discord_bot):
    bot = await discord_bot()
    [(_, commands)] = bot.discord.syncs
    assert {c["name"] for c in commands} >= {"link", "unlink"}
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("link", BEA))
    await eventually(lambda: len(bot.discord.callbacks) == 1)
    [answer] = bot.discord.callbacks
    assert answer["data"]["flags"] == 64 and "Your link code: " in answer["data"]["content"]
    code = answer["data"]["content"].split("Your link code: ", 1)[1][:8]
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("link", BEA, {"code": code}))
    await eventually(lambda: len(bot.discord.callbacks) == 2)
    assert "already shares memory" in bot.discord.callbacks[1]["data"]["content"]


async def test_the_forget_slash_command_previews_then_deletes_after_confirm(discord_bot):
    bot = await discord_bot()
    [(_, commands)] = bot.discord.syncs
    assert "forget" in {c["name"] for c in commands}
    await bot.runtime.handle(Event.direct("discord", "100000000000000002", "remember my bike", name="Bea"))
    assert await bot.runtime.find_agent("discord", "100000000000000002") is not None
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("forget", BEA))
    await eventually(lambda: len(bot.discord.callbacks) == 1)
    preview = bot.discord.callbacks[0]["data"]
    assert preview["flags"] == 64 and "There is no undo" in preview["content"]
    assert await bot.runtime.find_agent("discord", "100000000000000002") is not None  # nothing gone yet
    bot.discord.dispatch("INTERACTION_CREATE", slash_command("forget", BEA, {"what": "confirm"}))
    await eventually(lambda: len(bot.discord.callbacks) == 2)
    assert "forgotten everything" in bot.discord.callbacks[1]["data"]["content"]
    assert await bot.runtime.find_agent("discord", "100000000000000002") is None
