"""Conversations: where events come from, private vs public, one agent per person, the inbox.

Everything runs through the real Runtime, a real SQLite file and the real openai client talking
to the scripted model on 127.0.0.1; a recording stand-in plays the chat platform.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from bot.events import Event, Kind
from storage import identities, inbox, messages, outbox
from tests.fake_openai import Answer, call, last_message, last_user_text, say
from tests.platform import CHANNEL, RecordingPlatform, dm, eventually, public

SECRET = "XYZZYPLUGH"
FILLER = " ".join(f"filler{i} words about the weather and other small talk" for i in range(40))


def is_public(request: dict[str, Any]) -> bool:
    return "This conversation is public" in request["messages"][0]["content"]


def summariser(request: dict[str, Any]) -> Answer:
    """Keeps every line that names the secret, so a secret in the input would show in the summary."""
    lines = request["messages"][-1]["content"].splitlines()
    return Answer(
        content="Summary: " + " ".join(line[:200] for line in lines if SECRET in line or "teal" in line)
    )


def privacy_model(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return summariser(request)
    last = last_message(request)
    if last["role"] == "tool":
        return say("public answer" if is_public(request) else "noted")
    text = last_user_text(request)
    if text.startswith("remember"):
        return Answer(
            tool_calls=[
                ("core_memory_append", {"label": "human", "content": f"Diagnosis: {SECRET}"}),
                (
                    "archival_memory_insert",
                    {"content": f"The user's diagnosis is {SECRET}", "request_heartbeat": True},
                ),
            ]
        )
    if text.startswith("my favourite colour"):
        return call(
            "core_memory_append", label="human", content="Favourite colour: teal", request_heartbeat=True
        )
    if text.startswith("what do you know"):
        today = datetime.now(UTC).date().isoformat()
        return Answer(
            tool_calls=[
                ("conversation_search", {"query": "diagnosis", "request_heartbeat": True}),
                ("archival_memory_search", {"query": "diagnosis", "request_heartbeat": True}),
                ("conversation_search_date", {"start_date": "2000-01-01", "end_date": today}),
            ]
        )
    return say("ok")


async def test_nothing_said_in_private_reaches_the_model_in_public(fake_server, runtime_for):
    fake = fake_server(privacy_model)
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW="4000")
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)

    await runtime.handle(dm("alice", f"remember this: my diagnosis is {SECRET}"))
    for i in range(4):  # enough to evict the secret into the private summary
        await runtime.handle(dm("alice", f"chatter {i} {FILLER}"))
    agent = await runtime.agent_for("chat", "alice")
    agent = await runtime.memory(agent).refresh()
    assert SECRET in agent.summary, "the test needs the secret in the private summary"

    seen = len(fake.requests)
    await runtime.handle(public("alice", "my favourite colour is teal"))
    for i in range(4):  # the public view evicts too: its summary must be made of public messages only
        await runtime.handle(public("alice", f"public chatter {i} {FILLER}"))
    turn = await runtime.handle(public("alice", "what do you know about me?"))
    agent = await runtime.memory(agent).refresh()
    assert "teal" in agent.public_summary and SECRET not in agent.public_summary
    in_public = fake.requests[seen:]
    assert turn.replies == ["public answer"]
    assert len([r for r in in_public if not r.get("tools")]) >= 1  # the public summariser ran
    assert SECRET not in json.dumps(in_public)
    results = [m["content"] for m in in_public[-1]["messages"] if m["role"] == "tool"][-3:]
    assert "Alice: my favourite colour is teal" in results[2], results  # speakers by name
    assert "No passages found" in results[1]

    seen = len(fake.requests)
    await runtime.handle(dm("alice", "what do you know about me?"))
    in_private = json.dumps(fake.requests[seen:])
    assert SECRET in in_private  # core memory, summary and searches all have it in private
    private_system = next(r for r in fake.requests[seen:] if r.get("tools"))["messages"][0]["content"]
    assert "Favourite colour: teal" in private_system  # learned in public, known in private too
    private_results = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "tool"][-3:]
    assert (
        SECRET in private_results[0] and SECRET in private_results[1]
    )  # archival search finds it in private


async def test_the_model_is_told_where_it_is_and_who_speaks(fake_server, runtime_for):
    fake = fake_server(lambda request: say("hi"))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    await runtime.handle(public("bob", "hello all"))
    await runtime.handle(dm("bob", "hello you"))
    in_channel, in_dm = (r["messages"][0]["content"] for r in fake.agent_requests)
    assert "You are talking with Bob in the public channel #general in Acme on chat" in in_channel
    assert "This conversation is public" in in_channel
    assert "You are talking with Bob in a private conversation" in in_dm and "is private" in in_dm
    later = fake.agent_requests[1]["messages"]
    assert any("in #general] hello all" in m["content"] for m in later if m["role"] == "user")


async def test_two_people_in_one_channel_each_have_their_own_agent(fake_server, runtime_for):
    fake = fake_server(lambda request: say("answer for " + last_user_text(request)))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    await asyncio.gather(runtime.handle(public("ann", "I am Ann")), runtime.handle(public("cy", "I am Cy")))
    ann = await runtime.agent_for("chat", "ann")
    cy = await runtime.agent_for("chat", "cy")
    assert ann.id != cy.id
    assert [m.content for m in await runtime.db.run(messages.in_context, ann.id) if m.role == "user"] == [
        "I am Ann"
    ]
    await runtime.delivery.idle(5)
    assert {(m.agent_id, m.text, m.recipient) for m in platform.sent} == {
        (ann.id, "answer for I am Ann", "ann"),
        (cy.id, "answer for I am Cy", "cy"),
    }


async def test_two_identities_of_one_person_share_one_agent_one_turn_at_a_time(fake_server, runtime_for):
    def slow(request: dict[str, Any]) -> Answer:
        return Answer(tool_calls=[("send_message", {"message": "done"})], delay=0.3)

    fake = fake_server(slow)
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    runtime.register_sender("other", RecordingPlatform())
    agent = await runtime.agent_for("chat", "dee", "Dee")
    await runtime.db.run(identities.link, "other", "dee-2", agent.id, "Dee")
    other = Event.direct("other", "dee-2", "from my other account", "Dee")
    await asyncio.gather(runtime.handle(dm("dee", "from chat")), runtime.handle(other))
    assert fake.max_in_flight == 1
    stored = [m.content for m in await runtime.db.run(messages.in_context, agent.id) if m.role == "user"]
    assert sorted(stored) == ["from chat", "from my other account"]
    assert (await runtime.agent_for("other", "dee-2")).id == agent.id
    assert len(runtime.locks) == 0  # the lock went away with its last user


async def test_a_redelivered_message_is_answered_once_also_after_a_restart(fake_server, runtime_for):
    fake = fake_server(lambda request: say("once"))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    first = await runtime.handle(dm("eli", "hi", message_id="m-1"))
    again = await runtime.handle(dm("eli", "hi", message_id="m-1"))
    assert first.replies == ["once"] and again.duplicate and again.replies == []
    await runtime.close()
    restarted = await runtime_for(fake)
    restarted.register_sender("chat", platform)
    assert (await restarted.handle(dm("eli", "hi", message_id="m-1"))).duplicate
    assert len(fake.agent_requests) == 1
    assert (await restarted.handle(dm("eli", "hi", message_id="m-2"))).replies == ["once"]


async def test_a_message_waiting_for_its_agent_is_already_on_disk(fake_server, runtime_for):
    fake = fake_server(lambda request: Answer(tool_calls=[("send_message", {"message": "ok"})], delay=0.5))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    slow = asyncio.create_task(runtime.handle(dm("fay", "first")))
    await eventually(lambda: fake.requests)
    waiting = asyncio.create_task(runtime.handle(dm("fay", "second, sent while you think")))
    await asyncio.sleep(0.1)
    items = await runtime.db.run(inbox.waiting)
    assert [json.loads(i.event)["text"] for i in items] == ["first", "second, sent while you think"]
    assert items[1].message_id is None  # stored on arrival, not yet in the agent's history
    await asyncio.gather(slow, waiting)
    assert await runtime.db.run(inbox.waiting) == []


async def test_plain_text_is_monologue_unless_it_is_the_only_answer_to_a_person(fake_server, runtime_for):
    def model(request: dict[str, Any]) -> Answer:
        last = last_message(request)
        if last["role"] == "tool":
            return Answer(content="I told them; now thinking privately about it.")
        if "[system event]" in last["content"]:
            return Answer(content="Nothing to say to anyone about this event.")
        return Answer(
            tool_calls=[
                ("send_message", {"message": "hello"}),
                ("archival_memory_search", {"query": "x", "request_heartbeat": True}),
            ]
        )

    fake = fake_server(model)
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    turn = await runtime.handle(dm("gil", "hi"))
    assert turn.replies == ["hello"]
    event = dm("gil", "The person's calendar changed.", kind=Kind.SYSTEM)
    assert (await runtime.handle(event)).replies == []
    await runtime.delivery.idle(5)
    assert platform.texts == ["hello"]


async def test_a_failed_system_event_apologises_to_nobody(fake_server, runtime_for):
    fake = fake_server(lambda request: Answer(status=500, error="boom"))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    turn = await runtime.handle(dm("hal", "It is 3 am: a heartbeat.", kind=Kind.HEARTBEAT))
    assert turn.failed and turn.replies == []
    await runtime.delivery.idle(5)
    assert platform.sent == []
    agent = await runtime.agent_for("chat", "hal")
    assert await runtime.db.run(outbox.for_agent, agent.id) == []
    mine = await runtime.handle(dm("hal", "and now me"))
    assert mine.replies == ["The language model failed (HTTP 500). Your message is saved; please try again."]


async def test_a_turn_past_its_deadline_frees_the_agent(fake_server, runtime_for):
    def model(request: dict[str, Any]) -> Answer:
        slow = "slow" in last_user_text(request)
        return Answer(
            tool_calls=[("send_message", {"message": "late" if slow else "quick"})], delay=3 if slow else 0
        )

    fake = fake_server(model)
    runtime = await runtime_for(fake, MEMBOT_TURN_DEADLINE="1")
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    slow = await runtime.handle(dm("ivy", "a slow question"))
    assert slow.failed and slow.replies == [
        "That took me too long, so I stopped. Your message is saved; please ask again in a moment."
    ]
    assert (await runtime.handle(dm("ivy", "a quick one"))).replies == ["quick"]
    agent = await runtime.agent_for("chat", "ivy")
    stored = [m.content for m in await runtime.db.run(messages.in_context, agent.id) if m.role == "user"]
    assert stored == ["a slow question", "a quick one"]


async def test_a_public_channel_gets_the_reply_in_its_own_conversation(fake_server, runtime_for):
    fake = fake_server(lambda request: say("to the channel"))
    runtime = await runtime_for(fake)
    platform = RecordingPlatform()
    runtime.register_sender("chat", platform)
    await runtime.handle(public("jo", "@membot hello", message_id="1700000000.0001"))
    await runtime.delivery.idle(5)
    [sent] = platform.sent
    assert sent.conversation == CHANNEL and sent.reply_to == "1700000000.0001" and sent.recipient == "jo"
    assert platform.signals == [("started", "C-general"), ("ended", "C-general")]


async def test_an_account_whose_agent_was_deleted_gets_a_new_one(fake_server, runtime_for):
    from storage import lifecycle

    fake = fake_server(lambda request: say("hello " + last_user_text(request)))
    runtime = await runtime_for(fake)
    runtime.register_sender("chat", RecordingPlatform())
    await runtime.handle(dm("uma", "first"))
    old = await runtime.agent_for("chat", "uma")
    await runtime.db.run(lifecycle.delete_agent, old.id)
    turn = await runtime.handle(dm("uma", "after being forgotten"))
    assert turn.replies == ["hello after being forgotten"]
    new = await runtime.agent_for("chat", "uma")
    stored = [m.content for m in await runtime.db.run(messages.in_context, new.id) if m.role == "user"]
    assert stored == ["after being forgotten"]  # a fresh agent: nothing of the deleted one
