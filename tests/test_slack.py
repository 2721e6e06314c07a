"""The Slack adapter through the real bolt app: signed HTTP requests to its aiohttp server on
127.0.0.1, Socket Mode envelopes through bolt's socket-mode handler and slack_sdk's client, and
Slack's Web API as a stand-in on 127.0.0.1 (tests/slack_standin.py) that records what was
posted. The model is the fake OpenAI server; the database a real SQLite file. Process tests run
`membot slack` in HTTP mode against the same stand-in.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from adapters.slack_app import serve
from adapters.slack_text import split, to_mrkdwn
from bot.events import ConfigError, Event, Kind
from bot.runtime import Runtime
from storage.db import connect
from tests import postgres
from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text, say
from tests.platform import eventually
from tests.slack_standin import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER,
    SECRET,
    StandIn,
    callback,
    channel_message,
    dm,
    mention,
    signed,
)
from tests.test_terminal_chat import answering, environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def slack() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


class App:
    """`serve` running in this loop, and a client that posts to it as Slack would."""

    def __init__(self, runtime: Runtime, task: asyncio.Task[None], stopping: asyncio.Event) -> None:
        self.runtime = runtime
        self.task = task
        self.stopping = stopping
        self.port = runtime.settings.http_port
        self.session = aiohttp.ClientSession()

    async def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        retry: int = 0,
        form: bool = False,
    ) -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = signed(data, secret, timestamp)
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        url = f"http://127.0.0.1:{self.port}/slack/events"
        async with self.session.post(url, data=data, headers=headers) as response:
            return response.status, await response.text()

    async def command(self, text: str, user: str = "U1", response_url: str = "") -> tuple[int, str]:
        fields = {
            "command": "/membot",
            "text": text,
            "user_id": user,
            "team_id": "T1",
            "channel_id": f"D{user}",
        }
        if response_url:
            fields["response_url"] = response_url
        return await self.post(urlencode(fields).encode(), form=True)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 30)
        await self.session.close()


@asynccontextmanager
async def running(
    runtime_for: Callable[..., Any], fake: FakeOpenAI, slack: StandIn, **env: str
) -> AsyncIterator[App]:
    settings = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.url,
        "MEMBOT_HTTP_PORT": str(free_port()),
        **env,
    }
    runtime: Runtime = await runtime_for(fake, **settings)
    stopping = asyncio.Event()
    task = asyncio.create_task(serve(runtime, stopping))
    app = App(runtime, task, stopping)
    if not runtime.settings.slack_app_token:
        await listening(app)
    try:
        yield app
    finally:
        if not task.done():
            await app.stop()
        else:
            await app.session.close()


async def listening(app: App) -> None:
    for _ in range(1000):
        if app.task.done():
            app.task.result()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", app.port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError("the Slack app never listened")


def query(runtime: Runtime, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    if runtime.settings.db.startswith("postgresql://"):
        return postgres.rows(runtime.settings.db, sql, args)
    conn = connect(Path(runtime.settings.db))
    try:
        return [tuple(row) for row in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def texts(slack: StandIn, channel: str | None = None) -> list[str]:
    return [str(p["text"]) for p in slack.posted(channel)]


# --- signatures ------------------------------------------------------------------------------


async def test_a_bad_signature_or_a_stale_timestamp_gets_401_and_reaches_no_agent(
    fake_server, runtime_for, slack
):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack) as app:
        body = callback(dm("U1", "hello", "1700000001.000100"), "Ev1")
        assert (await app.post(body, secret="not-the-secret"))[0] == 401
        assert (await app.post(body, timestamp=int(time.time()) - 360))[0] == 401
        status, text = await app.post({"type": "url_verification", "challenge": "c-123", "token": "t"})
        assert (status, json.loads(text)) == (200, {"challenge": "c-123"})
        assert (await app.post(callback(dm("U2", "signed", "1700000002.000100"), "Ev2")))[0] == 200
        await eventually(lambda: slack.posted())
    assert texts(slack) == ["answer to: signed"]  # the refused requests reached nobody
    assert query(app.runtime, "SELECT platform, platform_user_id FROM identities") == [("slack", "T1:U2")]
    assert query(app.runtime, "SELECT count(*) FROM messages WHERE role = 'user'") == [(1,)]


# --- DMs, mentions, threads ------------------------------------------------------------------


async def test_a_dm_goes_to_its_own_private_agent_in_the_zone_of_the_slack_profile(
    fake_server, runtime_for, slack
):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack) as app:
        status, _ = await app.post(
            callback(dm("U1", "hello <https://ex.com/a|the page>", "1700000001.000100"), "Ev1")
        )
        assert status == 200
        await eventually(lambda: slack.posted())
    [reply] = slack.posted()
    assert reply["channel"] == "DU1" and "thread_ts" not in reply and reply["mrkdwn"] is True
    assert reply["text"] == "answer to: hello the page (https://ex.com/a)"
    assert query(app.runtime, "SELECT display_name, timezone FROM agents") == [("Ann", "Asia/Tokyo")]
    assert query(app.runtime, "SELECT channel_id, private FROM conversations") == [("DU1", 1)]
    system = fake.agent_requests[-1]["messages"][0]["content"]
    assert "private conversation" in system and "Ann" in system


async def test_a_mention_is_answered_in_its_thread_and_a_follow_up_by_its_speaker_s_agent(
    fake_server, runtime_for, slack
):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack) as app:
        ts = "1700000010.000100"
        await app.post(callback(mention("U1", "what is <@U2> up to?", ts), "Ev10"))
        # the same message also comes as a message event: answered once
        await app.post(callback(channel_message("U1", f"<@{BOT_USER}> what is <@U2> up to?", ts), "Ev11"))
        await eventually(lambda: slack.posted())
        await app.post(
            callback(channel_message("U2", "me? painting", "1700000011.000100", thread_ts=ts), "Ev12")
        )
        await eventually(lambda: len(slack.posted()) == 2)
        # a channel message outside the bot's threads is not for it
        await app.post(callback(channel_message("U2", "lunch?", "1700000012.000100"), "Ev13"))
        await app.post(callback(dm("U2", "are you there?", "1700000013.000100"), "Ev14"))
        await eventually(lambda: len(slack.posted()) == 3)
    first, follow_up, _ = slack.posted()
    assert (first["channel"], first["thread_ts"], first["text"]) == (
        "C1",
        ts,
        "answer to: what is @Bob up to?",
    )
    assert (follow_up["channel"], follow_up["thread_ts"], follow_up["text"]) == (
        "C1",
        ts,
        "answer to: me? painting",
    )
    prompts = [r["messages"][0]["content"] for r in fake.agent_requests]
    assert "public channel a thread in #general in Acme on slack" in prompts[0] and "Ann" in prompts[0]
    assert "Bob" in prompts[1]
    rows = query(
        app.runtime,
        "SELECT a.platform_user_id, m.content FROM messages m "
        "JOIN identities a ON a.agent_id = m.agent_id WHERE m.role = 'user' ORDER BY m.id",
    )
    assert [(user, content.split("] ", 1)[-1]) for user, content in rows] == [
        ("T1:U1", "what is @Bob up to?"),
        ("T1:U2", "me? painting"),
        ("T1:U2", "are you there?"),
    ]


async def test_a_thread_whose_first_message_mentions_the_bot_is_followed_after_a_restart(
    fake_server, runtime_for, slack
):
    fake = fake_server(answering)
    slack.threads[("C1", "1700000020.000100")] = {
        "text": f"<@{BOT_USER}> hi",
        "user": "U1",
        "reply_users": ["UBOT"],
    }
    async with running(runtime_for, fake, slack) as app:
        event = channel_message(
            "U1", "and one more thing", "1700000021.000100", thread_ts="1700000020.000100"
        )
        await app.post(callback(event, "Ev21"))
        await eventually(lambda: slack.posted())
    [reply] = slack.posted()
    assert reply["thread_ts"] == "1700000020.000100" and reply["text"] == "answer to: and one more thing"


async def test_the_ack_goes_back_before_the_agent_works(fake_server, runtime_for, slack):
    release = threading.Event()

    def slow(request: dict[str, Any]) -> Answer:
        if request.get("tools") and last_message(request)["role"] != "tool":
            release.wait(20)  # the model answers only when the test says so
        return answering(request)

    fake = fake_server(slow)
    try:
        async with running(runtime_for, fake, slack) as app:
            status, _ = await app.post(callback(dm("U1", "take your time", "1700000025.000100"), "Ev25"))
            assert status == 200 and slack.posted() == []  # acknowledged while the model still thinks
            release.set()
            await eventually(lambda: slack.posted())
    finally:
        release.set()
    assert texts(slack) == ["answer to: take your time"]


async def test_a_retried_event_is_answered_once_also_after_a_restart(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    body = callback(dm("U1", "remember teal", "1700000030.000100"), "Ev30")
    async with running(runtime_for, fake, slack) as app:
        await app.post(body)
        await app.post(body, retry=1)
        await eventually(lambda: slack.posted())
        await app.post(callback(dm("U1", "second", "1700000031.000100"), "Ev31"))
        await eventually(lambda: len(slack.posted()) == 2)
    async with running(runtime_for, fake, slack) as app:
        assert (await app.post(body, retry=2))[0] == 200
        await app.post(callback(dm("U1", "third", "1700000032.000100"), "Ev32"))
        await eventually(lambda: len(slack.posted()) == 3)
    assert texts(slack) == ["answer to: remember teal", "answer to: second", "answer to: third"]


async def test_bots_edits_deletions_and_joins_are_ignored(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    ignored = [
        dm("U9", "a bot speaks", "1700000040.000100", bot_id="B9", subtype="bot_message"),
        dm("U1", "me, echoed", "1700000040.000200", bot_id="BBOT"),
        dm(BOT_USER, "my own words", "1700000040.000300"),
        dm("U1", "", "1700000040.000400", subtype="message_changed", message={"text": "edited"}),
        dm("U1", "", "1700000040.000500", subtype="message_deleted"),
        channel_message("U1", "<@U1> has joined the channel", "1700000040.000600", subtype="channel_join"),
        dm("U1", "", "1700000040.000700"),
    ]
    async with running(runtime_for, fake, slack) as app:
        for number, event in enumerate(ignored):
            assert (await app.post(callback(event, f"EvX{number}")))[0] == 200
        await app.post(callback(dm("U2", "a person", "1700000041.000100"), "Ev41"))
        await eventually(lambda: slack.posted())
    assert texts(slack) == ["answer to: a person"]
    assert query(app.runtime, "SELECT count(*) FROM messages WHERE role = 'user'") == [(1,)]


async def test_a_text_file_is_downloaded_with_the_token_and_read(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    slack.files["notes.txt"] = b"buy teal paint"
    files = [
        {
            "name": "notes.txt",
            "size": 14,
            "mimetype": "text/plain",
            "url_private": f"{slack.base}/files/notes.txt",
        },
        {
            "name": "photo.png",
            "size": 2048,
            "mimetype": "image/png",
            "url_private": f"{slack.base}/files/photo.png",
        },
    ]
    async with running(runtime_for, fake, slack) as app:
        await app.post(
            callback(dm("U1", "see", "1700000050.000100", subtype="file_share", files=files), "Ev50")
        )
        await eventually(lambda: slack.posted())
    assert slack.downloads == [("notes.txt", f"Bearer {BOT_TOKEN}")]
    heard = last_user_text(fake.agent_requests[0])
    assert "notes.txt" in heard and "photo.png" in heard
    assert query(app.runtime, "SELECT count(*) FROM passages WHERE content LIKE '%buy teal paint%'") == [(1,)]


async def test_a_failing_event_gets_an_apology_and_the_app_goes_on(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "broken", "not-a-timestamp"), "Ev60"))
        await eventually(lambda: slack.posted())
        await app.post(callback(dm("U1", "fine", "1700000061.000100"), "Ev61"))
        await eventually(lambda: len(slack.posted()) == 2)
    assert texts(slack) == ["Sorry, something went wrong on my side; please try again.", "answer to: fine"]
    assert not any("Traceback" in t for t in texts(slack))


# --- delivery --------------------------------------------------------------------------------


async def test_a_429_is_waited_out_and_the_reply_delivered_once(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    slack.fail("chat.postMessage", "429")
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "hi", "1700000070.000100"), "Ev70"))
        await eventually(lambda: slack.posted())
        await eventually(lambda: query(app.runtime, "SELECT state FROM outbox") == [("sent",)])
    assert [c.status for c in slack.called("chat.postMessage")] == [429, 200]
    assert texts(slack) == ["answer to: hi"]


async def test_a_refusal_retrying_cannot_cure_is_marked_failed_at_once(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    slack.fail("chat.postMessage", "is_archived")
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "hi", "1700000071.000100"), "Ev71"))
        await eventually(lambda: query(app.runtime, "SELECT state, attempts FROM outbox") == [("failed", 1)])
    assert "is_archived" in query(app.runtime, "SELECT error FROM outbox")[0][0]
    assert len(slack.called("chat.postMessage")) == 1


async def test_a_long_reply_comes_in_parts_with_its_code_block_whole_in_each(fake_server, runtime_for, slack):
    code = "\n".join(f"line {n} " + "x" * 60 for n in range(100))
    long = "**Here** it is:\n```python\n" + code + "\n```\nDone."
    fake = fake_server(
        lambda r: say(long) if r.get("tools") and last_message(r)["role"] != "tool" else Answer(content="ok")
    )
    async with running(runtime_for, fake, slack) as app:
        await app.post(callback(dm("U1", "show me", "1700000072.000100"), "Ev72"))
        await eventually(lambda: query(app.runtime, "SELECT state FROM outbox") == [("sent",)])
    parts = texts(slack)
    assert len(parts) == 2 and all(len(p) <= 4000 for p in parts)
    assert parts[0].startswith("*Here* it is:\n```\nline 0") and parts[0].endswith("\n```")
    assert parts[1].startswith("```\n") and parts[1].endswith("```\nDone.")
    assert "".join(parts).count("line ") == 100


async def test_a_reminder_opens_the_dm_and_posts_there(fake_server, runtime_for, slack):
    fake = fake_server(
        lambda r: Answer(content="ok") if last_message(r)["role"] == "tool" else say("Time to stretch!")
    )
    async with running(runtime_for, fake, slack) as app:
        agent = await app.runtime.agent_for("slack", "T1:U1", "Ann")
        await app.runtime.wake(agent.id, Event.direct("slack", "T1:U1", "stretch", kind=Kind.REMINDER))
        await eventually(lambda: slack.posted())
    assert [c.args["users"] for c in slack.called("conversations.open")] == ["U1"]
    [post] = slack.posted()
    assert (post["channel"], post["text"]) == ("DU1", "Time to stretch!")


# --- commands --------------------------------------------------------------------------------


async def test_the_slash_command_answers_that_person_alone(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack) as app:
        status, _ = await app.command("memory", response_url=f"{slack.base}/response/r1")
        assert status == 200
        await eventually(lambda: slack.responses)
        await app.command("timezone Asia/Tokyo", user="U2")
        await eventually(lambda: slack.called("chat.postEphemeral"))
        await app.command("dance", response_url=f"{slack.base}/response/r2")
        await eventually(lambda: len(slack.responses) == 2)
        await app.command("help", response_url=f"{slack.base}/response/r3")
        await eventually(lambda: len(slack.responses) == 3)
        await app.post(callback(dm("U1", "/help", "1700000080.000100"), "Ev80"))
        await eventually(lambda: slack.posted())
    memory, unknown, help_ = slack.responses
    assert "/membot timezone ZONE" in help_["text"] and "/membot memory" in help_["text"]
    assert memory["response_type"] == "ephemeral" and "[persona]" in memory["text"]
    assert unknown["text"] == "Unknown command; try /membot help"
    [ephemeral] = slack.called("chat.postEphemeral")
    assert ephemeral.args["user"] == "U2" and ephemeral.args["text"] == "Your time zone is now Asia/Tokyo."
    assert query(app.runtime, "SELECT display_name, timezone FROM agents ORDER BY id") == [
        ("Ann", "Asia/Tokyo"),
        ("Bob", "Asia/Tokyo"),
    ]
    assert texts(slack, "DU1")[0].startswith("Commands: /memory")
    assert fake.requests == []  # no command reached the model


# --- Socket Mode -----------------------------------------------------------------------------


async def test_a_socket_mode_envelope_is_acked_with_its_id_and_answered(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    async with running(runtime_for, fake, slack, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=""):
        await eventually(lambda: slack.sockets == 1)
        envelope = {
            "envelope_id": "env-1",
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": callback(dm("U1", "over the socket", "1700000090.000100"), "Ev90"),
        }
        slack.push(envelope)
        await eventually(lambda: slack.posted())
    assert {"envelope_id": "env-1"} in slack.acks
    assert texts(slack) == ["answer to: over the socket"]


async def test_a_refused_token_or_a_missing_secret_stops_the_start_naming_the_fix(
    fake_server, runtime_for, slack
):
    fake = fake_server(answering)
    for env, wanted in [
        ({"SLACK_BOT_TOKEN": "xoxb-wrong"}, "Slack refused SLACK_BOT_TOKEN (invalid_auth)"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "SLACK_BOT_TOKEN does not start with xoxb-"),
        ({"SLACK_SIGNING_SECRET": ""}, "neither SLACK_APP_TOKEN nor SLACK_SIGNING_SECRET"),
        ({"SLACK_APP_TOKEN": "xapp-wrong"}, "Slack refused SLACK_APP_TOKEN (invalid_auth)"),
    ]:
        settings = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.url}
        runtime = await runtime_for(fake, **(settings | env))
        with pytest.raises(ConfigError) as raised:
            await serve(runtime, asyncio.Event())
        assert wanted in str(raised.value)
        assert BOT_TOKEN not in str(raised.value)


async def test_a_port_in_use_names_membot_http_port(fake_server, runtime_for, slack):
    fake = fake_server(answering)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = await runtime_for(
            fake,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=slack.url,
            MEMBOT_HTTP_PORT=str(port),
        )
        with pytest.raises(ConfigError, match="MEMBOT_HTTP_PORT"):
            await serve(runtime, asyncio.Event())


# --- mrkdwn ----------------------------------------------------------------------------------


def test_markdown_becomes_mrkdwn():
    markdown = "\n".join(
        [
            "# Plan for *today*",
            "**Bold**, __also bold__, *italic*, _italic_ and ~~gone~~.",
            "- first [docs](https://ex.com/a?b=1&c=2)",
            "* second",
            "  - nested",
            "1 < 2 & 3 > 2, `a < b **not bold**`",
            "> quoted **text**",
            "```python",
            "if a < b and **kw:",
            "    print('*x*')",
            "```",
        ]
    )
    assert to_mrkdwn(markdown).split("\n") == [
        "*Plan for _today_*",
        "*Bold*, *also bold*, _italic_, _italic_ and ~gone~.",
        "• first <https://ex.com/a?b=1&c=2|docs>",
        "• second",
        "  • nested",
        "1 &lt; 2 &amp; 3 &gt; 2, `a &lt; b **not bold**`",
        "> quoted *text*",
        "```",
        "if a &lt; b and **kw:",
        "    print('*x*')",
        "```",
    ]


def test_an_unclosed_code_block_is_closed():
    assert to_mrkdwn("see:\n```\ncode") == "see:\n```\ncode\n```"


def test_a_short_text_is_one_message_and_an_empty_one_none():
    assert split("hello") == ["hello"]
    assert split("  \n ") == []


def test_splitting_closes_and_reopens_a_code_block_across_the_cut():
    text = "intro\n```\n" + "\n".join(f"row {n:04d} " + "y" * 50 for n in range(120)) + "\n```\noutro"
    parts = split(text, limit=1000)
    assert len(parts) > 1 and all(len(p) <= 1000 for p in parts)
    for part in parts:
        fences = [line for line in part.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, part  # every part opens and closes its code
    rows = [line for part in parts for line in part.split("\n") if line.startswith("row ")]
    assert rows == [f"row {n:04d} " + "y" * 50 for n in range(120)]
    assert parts[0].startswith("intro\n```") and parts[-1].endswith("```\noutro")


def test_a_long_line_without_breaks_is_cut_at_spaces_or_at_the_limit():
    words = " ".join(["word"] * 600)  # 2,999 characters
    parts = split(words, limit=1000)
    assert all(len(p) <= 1000 for p in parts) and " ".join(parts) == words
    solid = "z" * 2500
    parts = split(solid, limit=1000)
    assert all(len(p) <= 1000 for p in parts) and "".join(parts) == solid


# --- `membot slack` as a process -------------------------------------------------------------


def http_post(port: int, body: dict[str, Any], secret: str = SECRET, retry: int = 0) -> int:
    data = json.dumps(body).encode()
    headers = signed(data, secret) | {"Content-Type": "application/json"}
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/slack/events", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for(condition: Callable[[], object], proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"membot exited with {proc.returncode}: {proc.communicate()[1].decode()}")
        time.sleep(0.05)
    raise AssertionError(f"still not true after {seconds} s")


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def membot_slack(fake: FakeOpenAI, home: Path, slack: StandIn, **extra: str) -> subprocess.Popen[bytes]:
    settings = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": slack.url}
    env = environment(fake, home, **(settings | extra))
    command = [sys.executable, "-m", "adapters.cli", "slack"]
    return subprocess.Popen(command, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_membot_slack_answers_a_dm_and_a_mention_once_and_stops_on_sigterm(fake_server, tmp_path, slack):
    fake = fake_server(answering)
    port = free_port()
    proc = membot_slack(fake, tmp_path, slack, MEMBOT_HTTP_PORT=str(port), MEMBOT_LOG_LEVEL="DEBUG")
    try:
        wait_for(lambda: accepts(port), proc)
        direct = callback(dm("U1", "hello from afar", "1700000101.000100"), "EvP1")
        assert http_post(port, direct, secret="forged") == 401
        assert http_post(port, direct) == 200
        wait_for(lambda: slack.posted(), proc)
        assert http_post(port, direct, retry=1) == 200
        assert http_post(port, callback(mention("U2", "in the channel", "1700000102.000100"), "EvP2")) == 200
        wait_for(lambda: len(slack.posted()) == 2, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert BOT_TOKEN not in log and SECRET not in log and "hello from afar" not in log
    direct_reply, thread_reply = slack.posted()
    assert (direct_reply["channel"], direct_reply["text"]) == ("DU1", "answer to: hello from afar")
    assert (thread_reply["channel"], thread_reply["thread_ts"]) == ("C1", "1700000102.000100")
    assert thread_reply["text"] == "answer to: in the channel"


def test_membot_slack_with_a_wrong_token_is_one_line_naming_the_fix(fake_server, tmp_path, slack):
    fake = fake_server(answering)
    proc = membot_slack(
        fake, tmp_path, slack, SLACK_BOT_TOKEN="xoxb-revoked-token", MEMBOT_HTTP_PORT=str(free_port())
    )
    _, err = proc.communicate(timeout=60)
    log = err.decode()
    assert proc.returncode == 1, log
    assert "Traceback" not in log and "xoxb-revoked-token" not in log
    [line] = [line for line in log.splitlines() if line.startswith("membot:")]
    assert "Slack refused SLACK_BOT_TOKEN (invalid_auth)" in line and "OAuth & Permissions" in line
