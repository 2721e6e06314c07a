"""Delivery as it happens, through the outbox: states on disk, retries, restarts, failures mid-step."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from storage import messages, outbox, passages
from tests.fake_openai import Answer, last_message, say
from tests.platform import RecordingPlatform, dm, eventually


def two_parts(delay: float, arrivals: list[float]):
    """Sends "one" with a search chained after it; the next step takes `delay` s, then sends "two"."""

    def model(request: dict[str, Any]) -> Answer:
        last = last_message(request)
        if last["role"] == "tool" and "No passages" in last["content"]:
            arrivals.append(time.monotonic())
            return Answer(tool_calls=[("send_message", {"message": "two"})], delay=delay)
        if last["role"] == "tool":
            return Answer(content="done")
        return Answer(
            tool_calls=[
                ("send_message", {"message": "one"}),
                ("archival_memory_search", {"query": "anything", "request_heartbeat": True}),
            ]
        )

    return model


async def test_each_message_reaches_the_platform_when_it_is_sent(fake_server, runtime_for):
    arrivals: list[float] = []
    fake = fake_server(two_parts(1.5, arrivals))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    turn = await runtime.handle(dm("ada", "tell me in two parts"))
    await runtime.delivery.idle(5)
    assert turn.replies == ["one", "two"] and platform.texts == ["one", "two"]
    assert platform.times[0] < arrivals[0] + 1.5  # "one" was out before the slow step ended
    agent = await runtime.agent_for("chat", "ada")
    assert [(e.text, e.state, e.attempts) for e in await runtime.db.run(outbox.for_agent, agent.id)] == [
        ("one", "sent", 1),
        ("two", "sent", 1),
    ]


async def test_messages_for_a_platform_not_running_wait_and_go_out_when_it_starts(fake_server, runtime_for):
    fake = fake_server(lambda request: say("hello later"))
    runtime = await runtime_for(fake)
    turn = await runtime.handle(dm("bea", "hi"))
    assert turn.replies == ["hello later"]
    agent = await runtime.agent_for("chat", "bea")
    assert [e.state for e in await runtime.db.run(outbox.for_agent, agent.id)] == ["pending"]
    await runtime.close()

    restarted = await runtime_for(fake)
    platform = RecordingPlatform()
    assert await restarted.register_sender("chat", platform) == 1
    await restarted.delivery.idle(5)
    assert platform.texts == ["hello later"]
    assert [e.state for e in await restarted.db.run(outbox.for_agent, agent.id)] == ["sent"]
    await restarted.close()

    again = await runtime_for(fake)  # what is marked sent is never sent again
    twice = RecordingPlatform()
    assert await again.register_sender("chat", twice) == 0
    await again.delivery.idle(5)
    assert twice.sent == []


async def test_a_failed_send_is_retried_then_marked_failed_with_its_cause(fake_server, runtime_for, caplog):
    fake = fake_server(lambda request: say("are you there?"))
    runtime = await runtime_for(fake)
    runtime.delivery.backoff = (0.01, 0.01, 0.01)
    platform = RecordingPlatform(fail_next=2)
    runtime.register_sender("chat", platform)
    await runtime.handle(dm("cal", "one"))
    await runtime.delivery.idle(5)
    assert platform.texts == ["are you there?"]
    platform.fail_next = 10
    await runtime.handle(dm("cal", "two"))
    await runtime.delivery.idle(5)
    agent = await runtime.agent_for("chat", "cal")
    entries = await runtime.db.run(outbox.for_agent, agent.id)
    assert [(e.state, e.attempts) for e in entries] == [("sent", 3), ("failed", 4)]
    assert entries[1].error == "503 Service Unavailable"
    assert "not delivered to chat after 4 attempts (gave up): 503" in caplog.text


async def test_a_person_who_closed_their_dms_is_logged_not_retried(fake_server, runtime_for, caplog):
    fake = fake_server(lambda request: say("hello?"))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform(refuse=True))
    with caplog.at_level(logging.ERROR):
        await runtime.handle(dm("dan", "hi"))
        await runtime.delivery.idle(5)
    agent = await runtime.agent_for("chat", "dan")
    [entry] = await runtime.db.run(outbox.for_agent, agent.id)
    assert (entry.state, entry.attempts) == ("failed", 1) and "50007" in entry.error
    assert "(permanent)" in caplog.text


@pytest.mark.sqlite_only
async def test_a_storage_failure_later_in_a_step_keeps_what_was_already_sent(fake_server, runtime_for):
    """The disk fills after send_message ran: the message was delivered and its "Sent." result is
    on disk; the archival insert that could not be stored left no passage and no result."""
    arrivals: list[float] = []
    big = "a long passage " * 2000

    def model(request: dict[str, Any]) -> Answer:
        last = last_message(request)
        if last["role"] == "tool":
            arrivals.append(time.monotonic())
            return Answer(tool_calls=[("archival_memory_insert", {"content": big})], delay=0.5)
        return Answer(
            tool_calls=[
                ("send_message", {"message": "first part"}),
                ("archival_memory_search", {"query": "x", "request_heartbeat": True}),
            ]
        )

    fake = fake_server(model)
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    agent = await runtime.agent_for("chat", "eve")

    turn_task = asyncio.create_task(runtime.handle(dm("eve", "go")))
    await eventually(lambda: arrivals)

    def fill_disk(conn: Any) -> None:  # the file may not grow any more, as on a full disk
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await runtime.db.run(fill_disk)
    turn = await turn_task
    assert turn.failed
    assert platform.texts[0] == "first part"
    history = await runtime.db.run(messages.in_context, agent.id)
    results = [m.content for m in history if m.role == "tool"]
    assert results[0] == '{"status": "OK", "message": "Sent."}'
    assert not any("Stored as passage" in r for r in results)
    assert await runtime.db.run(passages.count, agent.id) == 0
    [entry] = [e for e in await runtime.db.run(outbox.for_agent, agent.id) if e.text == "first part"]
    assert entry.state == "sent"
