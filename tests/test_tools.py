"""Each MemGPT tool, called by the scripted model, against a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bot.events import Event
from storage import blocks, passages
from tests.fake_openai import Answer, call, last_message, say


def steps(*answers: Answer, then: str = "ok"):
    """A model that plays `answers` in order, then reports the last tool result with send_message."""
    queue = list(answers)

    def script(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary")
        if queue:
            return queue.pop(0)
        last = last_message(request)
        return say(f"{then}: {last['content']}" if last["role"] == "tool" else then)

    return script


def tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]


async def run(fake_server, runtime_for, user: str, answers: Iterable[Answer], text: str = "go", **env: str):
    fake = fake_server(steps(*answers))
    runtime = await runtime_for(fake, **env)
    turn = await runtime.handle(Event.direct("terminal", user, text, name=user))
    return fake, runtime, turn


async def test_core_memory_append_and_replace(fake_server, runtime_for):
    fake, runtime, _turn = await run(
        fake_server,
        runtime_for,
        "ann",
        [
            call("core_memory_append", label="human", content="Likes: climbing", request_heartbeat=True),
            call(
                "core_memory_replace",
                label="human",
                old_content="climbing",
                new_content="bouldering",
                request_heartbeat=True,
            ),
            call("core_memory_replace", label="human", old_content="not there", new_content="x"),
        ],
    )
    agent = await runtime.agent_for("terminal", "ann")
    assert (await runtime.db.run(blocks.get, agent.id, "human")).value == "Name: ann\nLikes: bouldering"
    results = tool_results(fake.requests[-1])
    assert results[0]["status"] == "OK" and "/2000 characters" in results[0]["message"]
    assert results[-1]["status"] == "Failed" and "was not found in block 'human'" in results[-1]["message"]
    assert "Likes: bouldering" in fake.requests[-1]["messages"][0]["content"]


async def test_replace_with_empty_deletes_the_line(fake_server, runtime_for):
    _, runtime, _ = await run(
        fake_server,
        runtime_for,
        "ben",
        [
            call("core_memory_append", label="human", content="Pet: none", request_heartbeat=True),
            call("core_memory_replace", label="human", old_content="Pet: none", new_content=""),
        ],
    )
    agent = await runtime.agent_for("terminal", "ben")
    assert (await runtime.db.run(blocks.get, agent.id, "human")).value == "Name: ben"


async def test_block_limit_error_reaches_the_model_and_nothing_is_written(fake_server, runtime_for):
    fake, runtime, _turn = await run(
        fake_server,
        runtime_for,
        "cat",
        [call("core_memory_append", label="human", content="x" * 300)],
        MEMBOT_BLOCK_LIMIT="200",
    )
    result = tool_results(fake.requests[-1])[0]
    assert result["status"] == "Failed" and "over its limit of 200" in result["message"]
    assert "archival_memory_insert" in result["message"]
    agent = await runtime.agent_for("terminal", "cat")
    assert (await runtime.db.run(blocks.get, agent.id, "human")).value == "Name: cat"


async def test_unknown_block_label(fake_server, runtime_for):
    fake, _, _ = await run(
        fake_server, runtime_for, "cal", [call("core_memory_append", label="diary", content="x")]
    )
    result = tool_results(fake.requests[-1])[0]
    assert result["status"] == "Failed" and "No core memory block 'diary'" in result["message"]
    assert "persona, human" in result["message"]


async def test_archival_insert_and_paginated_search(fake_server, runtime_for):
    facts = [f"Fact {i}: the user visited city number {i} in spring" for i in range(7)]
    inserts = [call("archival_memory_insert", content=f, request_heartbeat=True) for f in facts]
    fake, runtime, _turn = await run(
        fake_server,
        runtime_for,
        "dot",
        [
            *inserts,
            call(
                "archival_memory_insert", content="The user's bike is a red Brompton", request_heartbeat=True
            ),
            call("archival_memory_search", query="what bike does the user ride", request_heartbeat=True),
            call("archival_memory_search", query="visited city spring", page=1, request_heartbeat=True),
        ],
        MEMBOT_MAX_STEPS="15",
    )
    agent = await runtime.agent_for("terminal", "dot")
    assert await runtime.db.run(passages.count, agent.id) == 8
    results = tool_results(fake.requests[-1])
    first_search = results[-2]["message"]
    assert first_search.startswith("Showing passages 1-5 of 8")
    assert "red Brompton" in first_search.split("\n")[1]
    second_page = results[-1]["message"]
    assert second_page.startswith("Showing passages 6-8 of 8")


async def test_conversation_search_finds_past_messages_not_the_current_one(fake_server, runtime_for):
    fake = fake_server(steps())
    runtime = await runtime_for(fake)
    for text in ["I adopted a greyhound called Pixel", "Work was busy today", "Lunch was soup"]:
        await runtime.handle(Event.direct("terminal", "eve", text))
    fake.script = steps(call("conversation_search", query="greyhound", request_heartbeat=True))
    turn = await runtime.handle(Event.direct("terminal", "eve", "what dog greyhound did I adopt?"))
    result = tool_results(fake.requests[-1])[-1]["message"]
    lines = result.split("\n")
    assert "user: I adopted a greyhound called Pixel" in lines[1]
    assert not any("what dog greyhound" in line for line in lines)
    assert "Pixel" in turn.replies[0]


async def test_conversation_search_date_in_the_users_zone(fake_server, runtime_for):
    fake = fake_server(steps())
    runtime = await runtime_for(fake, MEMBOT_TIMEZONE="Pacific/Auckland")
    await runtime.handle(Event.direct("terminal", "fin", "today I planted tomatoes"))
    agent = await runtime.agent_for("terminal", "fin")
    memory = runtime.memory(agent)
    today = memory.local(__import__("datetime").datetime.now(__import__("datetime").UTC)).date().isoformat()
    fake.script = steps(
        call("conversation_search_date", start_date=today, end_date=today, request_heartbeat=True),
        call(
            "conversation_search_date", start_date="2001-01-01", end_date="2001-01-02", request_heartbeat=True
        ),
        call("conversation_search_date", start_date="yesterday", end_date=today),
    )
    await runtime.handle(Event.direct("terminal", "fin", "what did I do today?"))
    results = tool_results(fake.requests[-1])
    assert "planted tomatoes" in results[-3]["message"]
    assert results[-3]["message"].startswith("Showing messages 1-")
    assert results[-2]["message"].startswith("No messages found")
    assert results[-1]["status"] == "Failed" and "YYYY" not in results[-1]["message"]
    assert "must be a date like" in results[-1]["message"]


async def test_lenient_argument_coercion(fake_server, runtime_for):
    fake, _, _ = await run(
        fake_server,
        runtime_for,
        "gil",
        [call("archival_memory_search", query="anything", page="0", request_heartbeat="true")],
    )
    results = tool_results(fake.requests[-1])
    assert results[0]["status"] == "OK"
    assert len(fake.agent_requests) == 2  # the string "true" chained a second step
