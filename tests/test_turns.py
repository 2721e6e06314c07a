"""The step loop end to end: the real openai client over HTTP to a scripted model."""

from __future__ import annotations

from typing import Any

from bot.events import Event
from storage import messages
from tests.fake_openai import Answer, call, last_message, say


async def test_reply_goes_through_send_message_and_everything_is_on_disk(fake_server, runtime_for):
    fake = fake_server()
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "alice", "hello there"))
    assert turn.replies == ["heard: hello there"]
    agent = await runtime.agent_for("terminal", "alice")
    stored = await runtime.db.run(messages.in_context, agent.id)
    assert [(m.role, m.kind) for m in stored] == [
        ("user", "user"),
        ("assistant", "assistant"),
        ("tool", "tool"),
    ]
    assert stored[0].content == "hello there"
    request = fake.requests[0]
    assert request["messages"][0]["role"] == "system"
    assert "<human" in request["messages"][0]["content"]
    assert request["messages"][-1]["content"].endswith("] hello there")
    assert {t["function"]["name"] for t in request["tools"]} >= {
        "send_message",
        "core_memory_append",
        "core_memory_replace",
        "archival_memory_insert",
        "archival_memory_search",
        "conversation_search",
        "conversation_search_date",
    }


async def test_plain_text_answer_is_delivered_as_the_reply(fake_server, runtime_for):
    fake = fake_server(lambda request: Answer(content="Hi! I answer without tools."))
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "bob", "hey"))
    assert turn.replies == ["Hi! I answer without tools."]
    assert len(fake.requests) == 1


def _then_say(first: Answer, text: str = "recovered"):
    def script(request: dict[str, Any]) -> Answer:
        if last_message(request)["role"] == "tool":
            return say(text + " after " + last_message(request)["content"])
        return first

    return script


async def test_bad_json_arguments_go_back_to_the_model_as_a_failed_result(fake_server, runtime_for):
    fake = fake_server(
        _then_say(Answer(tool_calls=[("core_memory_append", '{"label": "human", "content": ')]))
    )
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "carol", "hi"))
    assert len(turn.replies) == 1 and turn.replies[0].startswith("recovered after")
    assert "not valid JSON" in turn.replies[0] and '"Failed"' in turn.replies[0]


async def test_unknown_tool_and_missing_argument_are_reported_to_the_model(fake_server, runtime_for):
    fake = fake_server(_then_say(Answer(tool_calls=[("fly_to_moon", {}), ("send_message", {})])))
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "dan", "hi"))
    assert len(turn.replies) == 1
    tool_results = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "tool"]
    assert any("no tool named 'fly_to_moon'" in r for r in tool_results)
    assert any("Invalid arguments for send_message: message: Field required" in r for r in tool_results)


async def test_model_that_chains_forever_is_capped(fake_server, runtime_for):
    fake = fake_server(lambda request: call("archival_memory_search", query="x", request_heartbeat=True))
    runtime = await runtime_for(fake, MEMBOT_MAX_STEPS="4")
    turn = await runtime.handle(Event.direct("terminal", "erin", "loop please"))
    assert len(fake.requests) == 4
    assert turn.replies and "stuck" in turn.replies[0]
    follow = await runtime.handle(Event.direct("terminal", "erin", "still there?"))
    assert follow.steps == 4


async def test_server_error_leaves_a_reply_and_the_message_in_history(fake_server, runtime_for):
    fake = fake_server(lambda request: Answer(status=500, error="boom"))
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "fay", "please remember my locker is 42"))
    assert turn.failed
    assert turn.replies == ["The language model failed (HTTP 500). Your message is saved; please try again."]
    agent = await runtime.agent_for("terminal", "fay")
    stored = await runtime.db.run(messages.in_context, agent.id)
    assert [m.content for m in stored] == ["please remember my locker is 42"]
    fake.script = lambda request: say("ok")
    again = await runtime.handle(Event.direct("terminal", "fay", "are you back?"))
    assert again.replies == ["ok"]
    texts = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "user"]
    assert any("locker is 42" in t for t in texts)


async def test_garbage_body_is_a_clear_failure(fake_server, runtime_for):
    fake = fake_server(lambda request: Answer(raw=b"<html>oops</html>"))
    runtime = await runtime_for(fake)
    turn = await runtime.handle(Event.direct("terminal", "gus", "hi"))
    assert turn.failed and "couldn't read" in turn.replies[0]


async def test_unreachable_endpoint(fake_server, runtime_for):
    fake = fake_server()
    runtime = await runtime_for(fake, OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    turn = await runtime.handle(Event.direct("terminal", "hal", "hi"))
    assert turn.failed and "can't reach the language model" in turn.replies[0]


async def test_one_agent_at_a_time_but_agents_in_parallel(fake_server, runtime_for):
    import asyncio

    def slow(request: dict[str, Any]) -> Answer:
        answer = say("done")
        answer.delay = 0.3
        return answer

    fake = fake_server(slow)
    runtime = await runtime_for(fake)
    same = [runtime.handle(Event.direct("terminal", "same", f"m{i}")) for i in range(3)]
    await asyncio.gather(*same)
    assert fake.max_in_flight == 1
    agent = await runtime.agent_for("terminal", "same")
    stored = [m.content for m in await runtime.db.run(messages.in_context, agent.id) if m.role == "user"]
    assert stored == ["m0", "m1", "m2"]
    await asyncio.gather(*(runtime.handle(Event.direct("terminal", f"user{i}", "hi")) for i in range(3)))
    assert fake.max_in_flight == 3


async def test_tool_call_left_unanswered_by_a_crash_is_repaired_on_the_wire(fake_server, runtime_for):
    fake = fake_server()
    runtime = await runtime_for(fake)
    agent = await runtime.agent_for("terminal", "ned")
    crashed_call = [
        {
            "id": "call_lost",
            "type": "function",
            "function": {"name": "archival_memory_insert", "arguments": "{}"},
        }
    ]
    await runtime.db.run(
        messages.append, agent.id, "user", "user", "before the crash", search_text="before the crash"
    )
    await runtime.db.run(
        messages.append,
        agent.id,
        "assistant",
        "assistant",
        "",
        tool_calls=__import__("json").dumps(crashed_call),
    )
    await runtime.handle(Event.direct("terminal", "ned", "after the restart"))
    wire = fake.requests[-1]["messages"]
    index = next(i for i, m in enumerate(wire) if m.get("tool_calls"))
    assert wire[index + 1]["role"] == "tool" and wire[index + 1]["tool_call_id"] == "call_lost"
    assert "Interrupted" in wire[index + 1]["content"]


async def test_no_secret_or_message_text_in_logs_by_default(fake_server, runtime_for, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    fake = fake_server()
    runtime = await runtime_for(fake, OPENAI_API_KEY="sk-verysecretvalue123456789")
    await runtime.handle(Event.direct("terminal", "oli", "my private diary entry xyzzy"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "verysecretvalue" not in text
    assert "xyzzy" not in "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("bot", "storage"))
    )
