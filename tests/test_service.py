"""What every long-running service shares: text attachments, a graceful stop, the commands' checks.

Through the real Runtime on a real SQLite file, the scripted model on 127.0.0.1, and the recording
stand-in of a platform; the command checks run `membot` as a process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.events import Attachment, Event
from storage import inbox, messages
from tests.fake_openai import Answer, last_message, last_user_text, say
from tests.platform import RecordingPlatform, dm, eventually
from tests.test_terminal_chat import environment


def heard(request: dict[str, Any]) -> Answer:
    """Echoes the whole last user message back, so a test sees exactly what reached the model."""
    if not request.get("tools"):
        return Answer(content="summary")
    if last_message(request)["role"] == "tool":
        return Answer(content="done")
    return say("heard: " + last_user_text(request))


def with_files(event: Event, *files: Attachment) -> Event:
    return Event(event.person, event.conversation, event.text, event.kind, event.message_id, None, files)


def text_file(name: str, data: bytes) -> Attachment:
    async def read() -> bytes:
        return data

    return Attachment(name, len(data), "text/plain", read)


async def test_a_text_file_is_loaded_into_archival_memory_and_others_are_only_named(fake_server, runtime_for):
    fake = fake_server(heard)
    runtime = await runtime_for(fake, MEMBOT_ATTACHMENT_MAX_BYTES="100")

    async def broken() -> bytes:
        raise OSError("connection reset")

    event = with_files(
        dm("ann", "see my notes"),
        text_file("notes.md", b"# Plan\nbuy teal paint"),
        text_file("big.txt", b"x" * 500),
        text_file("latin1.txt", "caf\xe9".encode("latin-1")),
        Attachment("lost.txt", 10, "text/plain", broken),
        Attachment("photo.png", 2048, "image/png"),
    )
    turn = await runtime.handle(event)
    [reply] = turn.replies
    assert "[file notes.md (21 bytes) loaded into your archival memory as document 1, 1 passages" in reply
    assert "big.txt: 500 bytes, over the 100 bytes I load; not loaded" in reply
    assert "latin1.txt: not loaded: latin1.txt is not UTF-8 text" in reply
    assert "lost.txt: could not be downloaded" in reply
    assert "xxxx" not in reply and "photo.png" in reply  # named in the stored message, never fetched
    assert "buy teal paint" not in reply  # the file's text is in archival memory, not in the message
    stored = await runtime.db.read(messages.in_context, turn_agent(runtime))
    assert "buy teal paint" not in stored[0].content
    [agent] = [a for a in [await runtime.find_agent("chat", "ann")] if a is not None]
    [found] = await runtime.memory(agent).search_passages("teal paint", 1)
    assert found.content == "buy teal paint"


def turn_agent(runtime: Any) -> int:
    [agent_id] = runtime.reception.agents.values()
    return int(agent_id)


def slow(seconds: float):
    def script(request: dict[str, Any]) -> Answer:
        answer = heard(request)
        if request.get("tools") and last_message(request)["role"] != "tool":
            answer.delay = seconds
        return answer

    return script


async def test_a_stop_lets_running_turns_finish_and_stores_what_arrives_meanwhile(fake_server, runtime_for):
    fake = fake_server(slow(1.0))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    await runtime.register_sender("chat", platform)
    first = asyncio.create_task(runtime.handle(dm("ann", "one", message_id="m1")))
    await eventually(lambda: fake.in_flight == 1)
    draining = asyncio.create_task(runtime.drain(grace=30))
    await eventually(lambda: runtime.stopping)
    late = await runtime.handle(dm("bob", "two", message_id="m2"))  # arrives while stopping
    assert await draining is True
    assert (await first).replies == ["heard: one"] and platform.texts == ["heard: one"]
    assert late.replies == [] and len(fake.agent_requests) == 1  # bob's message waits for the next start
    waiting = await runtime.db.read(inbox.waiting)
    assert [event_text(item.event) for item in waiting] == ["two"]


def event_text(raw: str) -> str:
    from bot.events import event_from_json

    return event_from_json(raw).text


async def test_a_turn_past_the_grace_is_cut_off_and_answered_once_at_the_next_start(fake_server, runtime_for):
    fake = fake_server(slow(3.0))
    runtime = await runtime_for(fake)
    await runtime.register_sender("chat", RecordingPlatform())
    turn = asyncio.create_task(runtime.handle(dm("ann", "slow one", message_id="m1")))
    await eventually(lambda: fake.in_flight == 1)
    assert await runtime.drain(grace=0.2) is False
    assert turn.cancelled() or turn.done()
    assert len(await runtime.db.read(inbox.waiting)) == 1  # left open, nothing half-written
    await runtime.close()

    fake.script = heard
    again = await runtime_for(fake)
    platform = RecordingPlatform()
    await again.register_sender("chat", platform)
    assert await again.recover() == 1
    await eventually(lambda: platform.texts)
    assert platform.texts == ["heard: slow one"]
    assert await again.db.read(inbox.waiting) == []
    assert await again.recover() == 0


def membot(home: Path, fake: Any, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        env=environment(fake, home, **extra),
        cwd=home,
        timeout=60,
    )


def test_run_without_any_platform_says_what_to_set(fake_server, tmp_path: Path):
    fake = fake_server(heard)
    result = membot(tmp_path, fake, "run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "membot: no platform is configured: set DISCORD_TOKEN and/or SLACK_BOT_TOKEN in .env, "
        "or use `membot chat` in the terminal."
    ]


def test_discord_and_slack_without_their_tokens_name_the_setting(fake_server, tmp_path: Path):
    fake = fake_server(heard)
    discord = membot(tmp_path, fake, "discord")
    slack = membot(tmp_path, fake, "slack")
    assert discord.returncode == 1 and "DISCORD_TOKEN is not set" in discord.stderr
    assert slack.returncode == 1 and "SLACK_BOT_TOKEN is not set" in slack.stderr
    assert "Traceback" not in discord.stderr + slack.stderr
