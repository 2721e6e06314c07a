"""The agent's reminder tools, called as the step loop calls them (arguments as JSON, effects in a
transaction of the real database): times read in the person's zone, recurrences, refusals that
say what to fix, and scope (another agent's, or a private reminder seen from public, never shows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.errors import ToolError
from bot.events import Event
from bot.memory import Scope
from bot.reminder_tools import next_time
from bot.runtime import Runtime
from bot.tools import Address, ToolContext
from storage import agents, conversations, heartbeats, reminders
from storage.clock import from_iso
from tests.fake_openai import FakeOpenAI
from tests.platform import dm

FUTURE = "2031-01-15T09:00"  # a Wednesday


async def context(runtime: Runtime, user: str, private: bool = True, zone: str = "UTC") -> ToolContext:
    agent = await runtime.agent_for("chat", user, user.title())
    await runtime.set_timezone(agent.id, zone)
    agent = await runtime.db.read(agents.get, agent.id)
    channel = f"D-{user}" if private else "C-general"
    conversation_id = await runtime.db.run(conversations.ensure, "chat", channel, "", private, channel)
    memory = runtime.memory(agent, Scope(conversation_id, private))
    return ToolContext(memory, Address(conversation_id, "chat", user))


async def call(runtime: Runtime, ctx: ToolContext, name: str, **arguments: Any) -> tuple[bool, str]:
    outcome = await runtime.tools.call(ctx, name, json.dumps(arguments))
    if outcome.effect is not None:
        try:
            return True, await runtime.db.run(outcome.effect)
        except ToolError as exc:
            return False, str(exc)
    return outcome.ok, json.loads(outcome.content)["message"]


async def start(runtime_for, fake_server) -> Runtime:
    fake: FakeOpenAI = fake_server()
    runtime: Runtime = await runtime_for(fake)
    return runtime


async def test_schedule_list_and_cancel(runtime_for, fake_server):
    runtime = await start(runtime_for, fake_server)
    ctx = await context(runtime, "ann")
    ok, text = await call(runtime, ctx, "schedule_reminder", message="call the dentist", when=FUTURE)
    assert ok, text
    assert "2031-01-15 09:00" in text
    ok, listed = await call(runtime, ctx, "list_reminders")
    assert ok and "call the dentist" in listed and listed.startswith("1 pending")
    [made] = await runtime.db.read(reminders.pending_for, ctx.memory.agent_id)
    ann = Event.direct("chat", "ann", "hi").person
    shown = await runtime.command(ann, "/memory")
    assert shown is not None and "reminders: 1 scheduled (next: 2031-01-15 09:00 UTC)" in shown
    ok, text = await call(runtime, ctx, "cancel_reminder", reminder_id=made.id)
    assert ok, text
    ok, listed = await call(runtime, ctx, "list_reminders")
    assert listed == "No pending reminders."
    assert "reminders: none scheduled" in (await runtime.command(ann, "/memory") or "")
    ok, text = await call(runtime, ctx, "cancel_reminder", reminder_id=made.id)
    assert not ok and "list_reminders" in text


async def test_the_same_local_time_is_a_different_instant_in_tokyo_and_los_angeles(runtime_for, fake_server):
    runtime = await start(runtime_for, fake_server)
    tokyo = await context(runtime, "aki", zone="Asia/Tokyo")
    angeles = await context(runtime, "lou", zone="America/Los_Angeles")
    for ctx in (tokyo, angeles):
        ok, text = await call(runtime, ctx, "schedule_reminder", message="stretch", when=FUTURE)
        assert ok, text
    [t] = await runtime.db.read(reminders.pending_for, tokyo.memory.agent_id)
    [a] = await runtime.db.read(reminders.pending_for, angeles.memory.agent_id)
    assert from_iso(t.due_at) == datetime(2031, 1, 15, 0, 0, tzinfo=UTC)  # 09:00 JST
    assert from_iso(a.due_at) == datetime(2031, 1, 15, 17, 0, tzinfo=UTC)  # 09:00 PST
    ok, text = await call(runtime, angeles, "schedule_reminder", message="x", when="2031-01-15T09:00+01:00")
    assert ok, text  # an explicit offset wins over the zone


async def test_daily_recurrence_keeps_the_local_time_across_daylight_saving(runtime_for, fake_server):
    runtime = await start(runtime_for, fake_server)
    ctx = await context(runtime, "ann", zone="America/New_York")
    ok, text = await call(
        runtime, ctx, "schedule_reminder", message="pills", when="2031-03-08T09:00", recurrence="daily"
    )
    assert ok, text
    [made] = await runtime.db.read(reminders.pending_for, ctx.memory.agent_id)
    assert made.recurrence == "0 9 * * *"
    zone = ZoneInfo("America/New_York")
    first = from_iso(made.due_at)
    second = next_time(made.recurrence, zone, first)
    assert second is not None
    third = next_time(made.recurrence, zone, second)
    assert third is not None
    assert [d.astimezone(zone).strftime("%m-%d %H:%M") for d in (first, second, third)] == [
        "03-08 09:00",
        "03-09 09:00",
        "03-10 09:00",
    ]
    assert second - first == timedelta(hours=23)  # clocks went forward on March 9th
    ok, _ = await call(
        runtime, ctx, "schedule_reminder", message="standup", when="2031-01-18T10:30", recurrence="weekdays"
    )
    standup = [
        r for r in await runtime.db.read(reminders.pending_for, ctx.memory.agent_id) if r.text == "standup"
    ]
    local = from_iso(standup[0].due_at).astimezone(zone)
    assert (local.strftime("%a %H:%M"), local.day) == ("Mon 10:30", 20)  # the 18th is a Saturday


async def test_past_times_impossible_recurrences_and_bad_input_are_refused_with_the_fix(
    runtime_for, fake_server
):
    runtime = await start(runtime_for, fake_server)
    ctx = await context(runtime, "ann")
    cases = [
        ({"message": "x", "when": "2020-01-01T09:00"}, "in the past"),
        ({"message": "x", "when": "next tuesday"}, "ISO 8601"),
        ({"message": "x", "when": FUTURE, "recurrence": "0 9 30 2 *"}, "never comes due"),
        ({"message": "x", "when": FUTURE, "recurrence": "every full moon"}, "cron expression"),
        ({"message": "  ", "when": FUTURE}, "non-empty"),
    ]
    for arguments, advice in cases:
        ok, text = await call(runtime, ctx, "schedule_reminder", **arguments)
        assert not ok and advice in text, (arguments, text)
    ok, text = await call(runtime, ctx, "pause_heartbeats", minutes=-5)
    assert not ok and "between 0 and" in text
    assert await runtime.db.read(reminders.pending_for, ctx.memory.agent_id) == []


async def test_private_reminders_stay_invisible_in_public_and_other_agents_never_see_any(
    runtime_for, fake_server
):
    runtime = await start(runtime_for, fake_server)
    ann_private = await context(runtime, "ann")
    ann_public = await context(runtime, "ann", private=False)
    bob = await context(runtime, "bob")
    await call(runtime, ann_private, "schedule_reminder", message="therapy at 5", when=FUTURE)
    await call(runtime, ann_public, "schedule_reminder", message="team lunch", when=FUTURE)
    _, public_list = await call(runtime, ann_public, "list_reminders")
    assert "team lunch" in public_list and "therapy" not in public_list
    _, private_list = await call(runtime, ann_private, "list_reminders")
    assert "team lunch" in private_list and "therapy" in private_list
    _, bobs = await call(runtime, bob, "list_reminders")
    assert bobs == "No pending reminders."
    therapy = [
        r for r in await runtime.db.read(reminders.pending_for, ann_private.memory.agent_id) if r.private
    ]
    for ctx in (bob, ann_public):
        ok, text = await call(runtime, ctx, "cancel_reminder", reminder_id=therapy[0].id)
        assert not ok and "no pending reminder" in text
    assert len(await runtime.db.read(reminders.pending_for, ann_private.memory.agent_id)) == 2


async def test_pause_heartbeats_holds_them_until_the_time_given(runtime_for, fake_server):
    runtime = await start(runtime_for, fake_server)
    await runtime.handle(dm("ann", "hello"))
    ctx = await context(runtime, "ann")
    ok, text = await call(runtime, ctx, "pause_heartbeats", minutes=90)
    assert ok and "paused until" in text
    row = await runtime.db.read(heartbeats.get, ctx.memory.agent_id)
    assert row is not None and row.paused_until is not None and row.next_at == row.paused_until
    paused = from_iso(row.paused_until) - datetime.now(UTC)
    assert timedelta(minutes=89) < paused <= timedelta(minutes=90)
    ok, text = await call(runtime, ctx, "pause_heartbeats", minutes=0)
    row = await runtime.db.read(heartbeats.get, ctx.memory.agent_id)
    assert ok and row is not None and row.paused_until is None
