"""The failure paths a chat platform hits on its first day (issue 7's list), each on real parts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.pressure import KEEP_LAST, choose_cut
from bot.runtime import Runtime
from storage import agents, blocks, inbox, messages
from storage.db import connect
from storage.errors import AgentNotFoundError
from storage.messages import Message
from tests.conftest import make_settings
from tests.fake_openai import Answer, call, last_message, last_user_text, say
from tests.platform import RecordingPlatform, dm, eventually

BIG = "many words about gardens and weather " * 60


def queue_of(roles: list[str]) -> list[Message]:
    return [
        Message(i + 1, role, role, "x", None, None, None, "", "2026-01-01T00:00:00.000000Z", True)
        for i, role in enumerate(roles)
    ]


def test_eviction_never_takes_the_turn_being_answered():
    # an old exchange, then the current turn: the event (id 4) and a chain of calls and results
    queue = queue_of(
        ["user", "assistant", "tool", "user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]
    )
    tokens = [10] * len(queue)
    assert choose_cut(queue, tokens, 0.1) == 6  # without protection the event (id 4) would go
    assert choose_cut(queue, tokens, 0.1, protect_from=4) == 3


def test_many_parallel_calls_never_empty_the_queue():
    # one assistant message with six parallel calls and their results, then a short tail
    queue = queue_of(["user", "assistant", *["tool"] * 6, "user", "assistant", "tool"])
    tokens = [5, 5, *[200] * 6, 5, 5, 5]
    cut = choose_cut(queue, tokens, 0.5)
    assert 0 < cut <= len(queue) - KEEP_LAST
    assert queue[cut].role != "tool"  # not between a call and its results


async def test_a_long_chain_in_a_small_window_keeps_the_message_it_answers(fake_server, runtime_for):
    def model(request: dict[str, Any]) -> Answer:
        if not request.get("tools"):
            return Answer(content="summary of older talk")
        texts = [m["content"] for m in request["messages"] if m["role"] == "user"]
        assert any("the question being answered" in t for t in texts), "the current message was evicted"
        searches = sum(1 for m in request["messages"] if m["role"] == "tool")
        if searches >= 8:
            return say("done")
        return Answer(
            tool_calls=[
                ("archival_memory_insert", {"content": f"{BIG} {i}", "request_heartbeat": True})
                for i in range(3)
            ]
        )

    fake = fake_server(model)
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW="4000", MEMBOT_MAX_STEPS="6")
    runtime.register_sender("chat", RecordingPlatform())
    for i in range(3):
        await runtime.handle(dm("kai", f"older message {i} {BIG}"))
    turn = await runtime.handle(dm("kai", "the question being answered"))
    assert not turn.failed
    assert [r for r in fake.requests if not r.get("tools")], "the test needs evictions during the chain"


async def test_an_embedder_failure_keeps_the_message_and_a_tool_fails_softly(fake_server, tmp_path):
    def model(request: dict[str, Any]) -> Answer:
        last = last_message(request)
        if last["role"] == "tool":
            return say("after the tool: " + json.loads(last["content"])["status"])
        if "store" in last_user_text(request):
            return call("archival_memory_insert", content="the spare key is under the mat")
        return say("heard you")

    fake = fake_server(model)
    runtime = await Runtime.start(make_settings(tmp_path, fake, MEMBOT_EMBEDDER="openai:fake-embed"))
    runtime.register_sender("chat", RecordingPlatform())
    fake.embedding_status = 503
    turn = await runtime.handle(dm("lia", "please store: my spare key is under the mat"))
    assert turn.replies == ["after the tool: Failed"]  # the insert failed as a tool, the turn went on
    agent = await runtime.agent_for("chat", "lia")
    stored = await runtime.db.run(messages.in_context, agent.id)
    assert stored[0].content == "please store: my spare key is under the mat"
    waiting = await runtime.db.run(messages.unembedded, agent.id)
    assert stored[0].id in [i for i, _, _ in waiting]

    fake.embedding_status = 200
    await runtime.handle(dm("lia", "hello again"))
    assert await runtime.db.run(messages.unembedded, agent.id) == []
    found = await runtime.memory(agent).search_messages("spare key mat", 5)
    assert found and found[0].id == stored[0].id
    await runtime.close()


async def test_handle_never_raises_when_the_database_fails_under_it(fake_server, runtime_for):
    def model(request: dict[str, Any]) -> Answer:
        return Answer(tool_calls=[("send_message", {"message": "hi"})], delay=0.3)

    fake = fake_server(model)
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    task = asyncio.create_task(runtime.handle(dm("max", "hello")))
    await eventually(lambda: fake.requests)

    def break_file(conn: Any) -> None:  # the schema goes away under the running turn
        conn.execute("DROP TABLE outbox")

    await runtime.db.run(break_file)
    turn = await task
    assert turn.failed
    assert platform.texts == [
        "My memory store failed while I was answering, so I stopped. Your message is saved; please try again later."
    ]


async def test_core_memory_replace_with_nothing_removes_only_that_line(fake_server, runtime_for):
    fake = fake_server(
        lambda request: (
            say("ok")
            if last_message(request)["role"] == "tool"
            else call("core_memory_replace", label="human", old_content="Likes: jazz", new_content="")
        )
    )
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    agent = await runtime.agent_for("chat", "noa", "Noa")
    await runtime.db.run(
        blocks.write, agent.id, "human", "Name: Noa\n\nLikes: jazz\n\nPlans:\n- Lisbon in May"
    )
    await runtime.handle(dm("noa", "I went off jazz"))
    block = await runtime.db.run(blocks.get, agent.id, "human")
    assert block.value == "Name: Noa\n\n\nPlans:\n- Lisbon in May"


async def test_a_missing_agent_is_a_storage_error_naming_it(fake_server, runtime_for):
    runtime = await runtime_for(fake_server())
    with pytest.raises(AgentNotFoundError, match="no agent 999"):
        await runtime.db.run(agents.get, 999)


async def test_close_releases_the_embedders_http_client(fake_server, tmp_path):
    fake = fake_server()
    runtime = await Runtime.start(make_settings(tmp_path, fake, MEMBOT_EMBEDDER="openai:fake-embed"))
    client = runtime.embedder._client  # type: ignore[attr-defined]
    await runtime.close()
    assert client.is_closed()


async def test_time_zone_can_change_and_shows_in_the_prompt(fake_server, runtime_for):
    from bot.errors import InvalidInput

    fake = fake_server(lambda request: say("ok"))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    agent = await runtime.agent_for("chat", "oli")
    assert await runtime.set_timezone(agent.id, "Europe/Sofia") == "Europe/Sofia"
    with pytest.raises(InvalidInput, match="IANA"):
        await runtime.set_timezone(agent.id, "Mars/Olympus")
    await runtime.handle(dm("oli", "what time is it?"))
    assert "(Europe/Sofia)" in fake.agent_requests[-1]["messages"][0]["content"]


async def test_restart_answers_what_was_stored_but_never_answered_once(fake_server, runtime_for):
    fake = fake_server(lambda request: say("answer to: " + last_user_text(request)))
    first = await runtime_for(fake)
    event = dm("pia", "asked just before a crash")
    await first.db.run(first.reception.receive, event, None)  # received and stored, then the process died
    await first.close()

    second = await runtime_for(fake)
    platform = RecordingPlatform()
    second.register_sender("chat", platform)
    assert await second.recover() == 1
    await second.delivery.idle(5)
    assert platform.texts == ["answer to: asked just before a crash"]
    assert await second.db.run(inbox.waiting) == []
    assert await second.recover() == 0


async def test_imported_older_messages_take_their_place_in_time(fake_server, runtime_for):
    from datetime import UTC, datetime

    from bot.memory import Imported

    fake = fake_server(lambda request: say("ok"))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    await runtime.handle(dm("quin", "today's news"))
    agent = await runtime.agent_for("chat", "quin")
    old = [Imported("user", "Quin", f"old note {i}", datetime(2020, 1, 1, 12, i)) for i in range(3)]
    await runtime.memory(agent).import_messages(old)
    history = await runtime.db.run(lambda conn: messages.at_turns(conn, agent.id, list(range(1, 10))))
    ordered = sorted(history, key=lambda p: p.turn)
    assert [p.created_at[:4] for p in ordered][:3] == ["2020"] * 3
    assert ordered[-1].created_at[:4] == str(datetime.now(UTC).year)


async def test_a_huge_message_is_kept_whole_but_indexed_in_part(fake_server, runtime_for, tmp_path):
    fake = fake_server(lambda request: say("that is a lot"))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    huge = "word " * 400_000  # 2 MB on one line
    await runtime.handle(dm("ria", huge))
    await runtime.handle(dm("ria", "and a short one"))
    agent = await runtime.agent_for("chat", "ria")
    [stored] = [m for m in await runtime.db.run(messages.in_context, agent.id) if len(m.content) > 1000]
    assert stored.content == huge  # the original, whole
    assert len(stored.search_text) <= 20_000
    other = connect(tmp_path / "membot.db")
    pages, free, page_size = (
        other.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
    )
    other.close()
    live = (pages - free) * page_size
    assert live < 1.5 * len(huge), live  # before: indexed whole, a 5 MB line made a 21.6 MB file
