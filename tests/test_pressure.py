"""Memory pressure: a small window, a long conversation, nothing over budget, nothing lost."""

from __future__ import annotations

import json
from typing import Any

from bot.events import Event
from bot.tokens import encoding
from storage import messages
from tests.fake_openai import Answer, call, last_message, last_user_text, say

WINDOW = 4000
FILLER = "the weather and the garden and the plans for the weekend " * 6


def o200k_size(request: dict[str, Any]) -> int:
    """Tokens of every message field and tool schema, counted independently of the bot's counter."""
    enc = encoding()
    total = 0
    for message in request["messages"]:
        for _key, value in message.items():
            if isinstance(value, str):
                total += len(enc.encode(value, disallowed_special=()))
        for tool_call in message.get("tool_calls") or []:
            total += len(enc.encode(json.dumps(tool_call), disallowed_special=()))
    for tool in request.get("tools") or []:
        total += len(enc.encode(json.dumps(tool), disallowed_special=()))
    return total


def chatty(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="Summary: the user talked about the garden; first said zebrafish-kumquat.")
    last = last_message(request)
    if last["role"] == "tool":
        if "conversation_search" in json.dumps(request["messages"][-2]):
            return say("found: " + last["content"])
        return Answer(content="")
    if "first thing" in last_user_text(request):
        return call("conversation_search", query="zebrafish kumquat", request_heartbeat=True)
    return say("Lovely. " + FILLER)


async def test_two_hundred_turns_in_a_4000_token_window(fake_server, runtime_for):
    fake = fake_server(chatty)
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW=str(WINDOW))
    await runtime.handle(Event.direct("terminal", "ivy", "My secret words are zebrafish kumquat."))
    for i in range(200):
        turn = await runtime.handle(Event.direct("terminal", "ivy", f"turn {i}: {FILLER}"))
        assert not turn.failed, turn.replies
    sizes = [o200k_size(r) for r in fake.requests]
    assert max(sizes) <= WINDOW, max(sizes)

    summaries = [r for r in fake.requests if not r.get("tools")]
    assert summaries, "no summariser call was made"
    assert all("tools" not in r for r in summaries)
    system = fake.agent_requests[-1]["messages"][0]["content"]
    assert "Summary of the" in system and "zebrafish-kumquat" in system

    warnings = [
        m
        for r in fake.agent_requests[-1:]
        for m in r["messages"]
        if "Memory pressure" in (m.get("content") or "")
    ]
    assert len(warnings) <= 1

    agent = await runtime.agent_for("terminal", "ivy")
    everything = await runtime.db.run(messages.count, agent.id)
    in_view = await runtime.db.run(messages.in_context, agent.id)
    assert everything > 600 and len(in_view) < 100

    turn = await runtime.handle(Event.direct("terminal", "ivy", "what was the first thing I told you?"))
    assert len(turn.replies) == 1
    assert "My secret words are zebrafish kumquat." in turn.replies[0]


async def test_summariser_failure_still_evicts_and_the_turn_goes_on(fake_server, runtime_for):
    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(status=500, error="summariser down")
        return say("ok " + FILLER)

    fake = fake_server(script)
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW=str(WINDOW))
    for i in range(60):
        turn = await runtime.handle(Event.direct("terminal", "jon", f"message {i} {FILLER}"))
        assert not turn.failed
    assert any(not r.get("tools") for r in fake.requests)
    assert max(o200k_size(r) for r in fake.requests) <= WINDOW
    agent = await runtime.agent_for("terminal", "jon")
    assert "summariser failed" in agent.summary
    assert agent.summary_covers > 0


async def test_provider_overflow_error_flushes_harder_and_retries(fake_server, runtime_for):
    state = {"refused": 0}

    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="Summary: lots of talk.")
        if len(request["messages"]) > 8 and state["refused"] < 1:
            state["refused"] += 1
            return Answer(
                status=400,
                error="This model's maximum context length is 4096 tokens (context_length_exceeded)",
            )
        return say("fine")

    fake = fake_server(script)
    runtime = await runtime_for(fake)
    for i in range(6):
        await runtime.handle(Event.direct("terminal", "kim", f"note {i}"))
    assert state["refused"] == 1
    agent = await runtime.agent_for("terminal", "kim")
    assert agent.summary_covers > 0
    agent_calls = fake.agent_requests
    refused = next(i for i, r in enumerate(agent_calls) if len(r["messages"]) > 8)
    assert len(agent_calls[refused + 1]["messages"]) < len(agent_calls[refused]["messages"])


async def test_huge_message_is_kept_whole_on_disk_and_cut_in_context(fake_server, runtime_for):
    fake = fake_server()
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW=str(WINDOW))
    huge = "lorem ipsum dolor " * 6000  # ~100 kB
    turn = await runtime.handle(Event.direct("terminal", "lee", huge))
    assert not turn.failed and turn.replies
    assert max(o200k_size(r) for r in fake.requests) <= WINDOW
    agent = await runtime.agent_for("terminal", "lee")
    stored = await runtime.db.run(messages.in_context, agent.id)
    assert stored[0].content == huge
