"""Discord shards split across processes (MEMBOT_DISCORD_SHARDS=FIRST-LAST/COUNT).

The setting's forms and its one-line errors; the client each form makes; then the real client
against the stand-in, which routes like Discord: a server's events to shard
(guild_id >> 22) % count, DMs to shard 0. Last, two `membot discord` processes on one
database, `0/2` and `1/2`: what a stop left unanswered and what arrives live are each answered
once, a DM by the shard-0 process, a mention in Acme (shard 1 of 2) by the other.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord_bot import make_client, receives
from bot.errors import ConfigError
from bot.events import Conversation, Event, Person
from bot.runtime import Runtime
from bot.settings import DiscordShards, load_settings, parse_discord_shards
from tests import postgres
from tests.conftest import shared_embedder
from tests.discord_standin import (
    BOT,
    CHANNEL_ID,
    GUILD_ID,
    GUILD_NAME,
    DiscordStandIn,
    message,
    shard_of,
    snowflake,
)
from tests.fake_openai import FakeOpenAI, last_user_text
from tests.platform import eventually
from tests.test_discord import ANN, BEA, MENTION, discord_bot, environment, wait_for  # noqa: F401
from tests.test_terminal_chat import answering

# --- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("", None),
        ("auto", DiscordShards()),
        ("AUTO", DiscordShards()),
        ("8", DiscordShards(8)),
        ("0-3/8", DiscordShards(8, (0, 1, 2, 3))),
        ("4-7/8", DiscordShards(8, (4, 5, 6, 7))),
        ("4/8", DiscordShards(8, (4,))),
        ("0/1", DiscordShards(1, (0,))),
        (" 2 - 3 / 4 ", DiscordShards(4, (2, 3))),
    ],
)
def test_the_shard_forms_that_are_accepted(text, plan):
    assert parse_discord_shards(text) == plan
    settings = load_settings({"MEMBOT_DISCORD_SHARDS": text}, dotenv_path=None)
    assert settings.discord_shard_plan == plan


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("4-3/8", "MEMBOT_DISCORD_SHARDS=4-3/8: the first shard comes after the last; write FIRST-LAST"),
        ("0-8/8", "MEMBOT_DISCORD_SHARDS=0-8/8: there is no shard 8 of 8 (they are 0 to 7)"),
        ("8/8", "MEMBOT_DISCORD_SHARDS=8/8: there is no shard 8 of 8"),
        ("0/0", "MEMBOT_DISCORD_SHARDS=0/0: the count after / must be at least 1"),
        ("0", "MEMBOT_DISCORD_SHARDS=0: there must be at least 1 shard"),
        ("0-3", "MEMBOT_DISCORD_SHARDS=0-3: a range needs the count after it, as in 0-3/8"),
        ("8-11", "MEMBOT_DISCORD_SHARDS=8-11: a range needs the count after it, as in 8-11/12"),
        ("²/8", "MEMBOT_DISCORD_SHARDS=²/8: not a shard count or range"),
        ("many", "MEMBOT_DISCORD_SHARDS=many: not a shard count or range; leave it empty"),
        ("-1/8", "MEMBOT_DISCORD_SHARDS=-1/8: not a shard count or range"),
        ("1-/8", "MEMBOT_DISCORD_SHARDS=1-/8: not a shard count or range"),
        ("0-3/8/2", "MEMBOT_DISCORD_SHARDS=0-3/8/2: not a shard count or range"),
        ("/8", "MEMBOT_DISCORD_SHARDS=/8: not a shard count or range"),
    ],
)
def test_each_wrong_form_stops_the_start_with_one_line_naming_the_fix(text, says):
    with pytest.raises(ConfigError) as raised:
        load_settings({"MEMBOT_DISCORD_SHARDS": text}, dotenv_path=None)
    error = str(raised.value)
    assert error.startswith(says) and "\n" not in error
    assert "FIRST-LAST/COUNT" in error or "as in" in error


def test_each_form_makes_its_client():  # (none connects)
    intents = discord.Intents.default()
    plain = make_client(parse_discord_shards(""), intents)
    assert not isinstance(plain, discord.AutoShardedClient)
    auto = make_client(parse_discord_shards("auto"), intents)
    assert isinstance(auto, discord.AutoShardedClient) and auto.shard_count is None
    counted = make_client(parse_discord_shards("4"), intents)
    assert isinstance(counted, discord.AutoShardedClient)
    assert counted.shard_count == 4 and counted.shard_ids is None  # all four here
    some = make_client(parse_discord_shards("2-3/8"), intents)
    assert isinstance(some, discord.AutoShardedClient)
    assert some.shard_count == 8 and some.shard_ids == [2, 3]


def test_the_stand_in_routes_like_discord():
    assert shard_of(None, 8) == 0  # DMs: shard 0
    assert shard_of(GUILD_ID, 1) == 0
    assert shard_of(GUILD_ID, 2) == 1  # the server these tests use sits on shard 1 of 2
    assert shard_of(str(5 << 22), 8) == 5


# --- one process against the stand-in ----------------------------------------------------------


def dm_of(author: dict[str, Any], channel: str, text: str) -> Event:
    conversation = Conversation("discord", channel, private=True, name="a direct message")
    return Event(
        Person("discord", author["id"], author["global_name"]), conversation, text, message_id=snowflake()
    )


def mention_of(author: dict[str, Any], text: str) -> Event:
    conversation = Conversation("discord", CHANNEL_ID, private=False, name="#general", place=GUILD_NAME)
    return Event(
        Person("discord", author["id"], author["global_name"]), conversation, text, message_id=snowflake()
    )


async def test_auto_runs_every_shard_discord_recommends_in_one_process(discord_bot):  # noqa: F811
    bot = await discord_bot(MEMBOT_DISCORD_SHARDS="auto", standin={"shards": 2})
    await eventually(lambda: bot.discord.live_shards() == {0, 1})
    assert sorted(i["shard"] for i in bot.discord.identifies) == [[0, 2], [1, 2]]
    bot.dm(ANN, "hello on shard 0")
    await bot.posts(1)
    bot.mention(BEA, "hello on shard 1")
    posts = await bot.posts(2)
    assert [p["json"]["content"] for p in posts] == [
        "answer to: hello on shard 0",
        "answer to: hello on shard 1",
    ]
    assert [p["channel_id"] for p in posts] == [bot.discord.dm_channel_of(ANN["id"]), CHANNEL_ID]


async def test_a_process_without_the_servers_shard_still_delivers_to_its_channels(discord_bot):  # noqa: F811
    """Delivery is REST: the shard-0 process sends to Acme's channel though Acme is on shard 1."""
    bot = await discord_bot(MEMBOT_DISCORD_SHARDS="0/2")
    assert bot.discord.live_shards() == {0}
    await bot.runtime.handle(mention_of(BEA, "sent from elsewhere"))
    [post] = await bot.posts(1)
    assert post["channel_id"] == CHANNEL_ID and post["json"]["content"] == "answer to: sent from elsewhere"


async def test_a_process_without_shard_0_still_opens_and_sends_a_dm(discord_bot):  # noqa: F811
    """DMs arrive on shard 0, but any process can send one (a reminder, say) over REST."""
    bot = await discord_bot(MEMBOT_DISCORD_SHARDS="1/2")
    assert bot.discord.live_shards() == {1}
    await bot.runtime.handle(Event.direct("discord", ANN["id"], "remind me", name="Ann"))
    [post] = await bot.posts(1)
    assert bot.discord.dms_opened == [ANN["id"]]
    assert post["channel_id"] == bot.discord.dm_channel_of(ANN["id"])
    assert post["json"]["content"] == "answer to: remind me"


def test_a_process_answers_at_start_only_what_its_shards_receive():
    intents = discord.Intents.default()
    dm = dm_of(ANN, "123", "hi").conversation
    elsewhere = Conversation("slack", "D1", private=True)
    every = make_client(parse_discord_shards("2"), intents)
    assert receives(every, dm) and receives(every, mention_of(BEA, "hi").conversation)
    assert not receives(every, elsewhere)
    second = make_client(parse_discord_shards("1/2"), intents)  # unconnected: it holds no server
    assert not receives(second, dm) and not receives(second, mention_of(BEA, "hi").conversation)
    first = make_client(parse_discord_shards("0/2"), intents)
    assert receives(first, dm)


# --- two processes, one database ---------------------------------------------------------------


def turns(log: str) -> list[str]:
    """The agents whose turns this process ran (each answered with send_message)."""
    return re.findall(r"agent (\d+) tool send_message ok=True", log)


async def leave_unanswered(env: dict[str, str], events: list[Event]) -> None:
    """Store these events as a stopped process leaves them: received, not yet answered."""
    runtime = await Runtime.start(load_settings(env, dotenv_path=None), embedder=shared_embedder())
    try:
        for event in events:
            await runtime.db.run(runtime.reception.receive, event, None)
    finally:
        await runtime.close()


def test_two_processes_split_the_shards_and_answer_each_message_once(tmp_path: Path):
    db = postgres.fresh_database() if postgres.wanted() else str(tmp_path / "membot.db")
    with FakeOpenAI(answering) as fake, DiscordStandIn() as stand_in:
        dm_channel = stand_in.dm_channel_of(ANN["id"])
        env = environment(fake, stand_in, tmp_path, MEMBOT_DB=db)
        asyncio.run(
            leave_unanswered(env, [dm_of(ANN, dm_channel, "left in a DM"), mention_of(BEA, "left in Acme")])
        )
        logs = {shard: tmp_path / f"shard{shard}.log" for shard in (0, 1)}
        procs: dict[int, subprocess.Popen[bytes]] = {}

        def running() -> bool:
            return all(p.poll() is None for p in procs.values())

        try:
            for shard, log in logs.items():
                with log.open("wb") as err:
                    procs[shard] = subprocess.Popen(
                        [sys.executable, "-m", "adapters.cli", "discord"],
                        env={**env, "MEMBOT_DISCORD_SHARDS": f"{shard}/2"},
                        cwd=tmp_path,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
            wait_for(lambda: stand_in.live_shards() == {0, 1} or not running())
            assert running(), "\n".join(log.read_text() for log in logs.values())
            wait_for(lambda: len(stand_in.posts) >= 2 or not running())  # what the stop left
            stand_in.dispatch("MESSAGE_CREATE", message(dm_channel, ANN, "hello live", guild=False))
            mention = message(CHANNEL_ID, BEA, f"{MENTION} live in Acme", guild=True, mentions=[BOT])
            stand_in.dispatch("MESSAGE_CREATE", mention)
            wait_for(lambda: len(stand_in.posts) >= 4 or not running())
            time.sleep(1.0)  # a second answer to anything would land by now
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=60) for proc in procs.values()]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = {shard: log.read_text(errors="replace") for shard, log in logs.items()}
    assert codes == [0, 0], text
    assert all("Traceback" not in t and "membot stopped" in t for t in text.values()), text
    assert sorted(i["shard"] for i in stand_in.identifies) == [[0, 2], [1, 2]]
    answers = sorted((p["channel_id"], p["json"]["content"]) for p in stand_in.posts)
    assert answers == sorted(
        [
            (dm_channel, "answer to: left in a DM"),
            (dm_channel, "answer to: hello live"),
            (CHANNEL_ID, "answer to: left in Acme"),
            (CHANNEL_ID, "answer to: live in Acme"),
        ]
    )
    asked = sorted(last_user_text(r) for r in fake.agent_requests)
    assert asked == ["hello live", "left in Acme", "left in a DM", "live in Acme"]  # each turn once
    assert all("answering 1 messages left unanswered" in t for t in text.values())  # its own one
    ann, bea = turns(text[0]), turns(text[1])  # Ann's DMs by the shard-0 process, Bea's in Acme by the other
    assert len(ann) == len(bea) == 2 and len(set(ann)) == len(set(bea)) == 1 and ann[0] != bea[0]
    assert sum(t.count("delivered to discord") for t in text.values()) == 4  # each reply sent once
