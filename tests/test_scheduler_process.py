"""The scheduler in `membot chat`, as a person runs it: real timers, real pipes, the fake model.

A reminder the model schedules reaches the terminal; one made in one process fires in the next;
with short heartbeats an idle chat gets exactly the day's cap of unprompted messages, and none
in quiet hours."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.fake_openai import Answer, FakeOpenAI, last_message, say
from tests.test_terminal_chat import Chat, query


def covering_now() -> str:
    hour = datetime.now(UTC).hour
    return f"{hour}-{(hour + 2) % 24}"


def script(request: dict[str, Any]) -> Answer:
    """Schedules a reminder 3 s ahead when asked, composes it when due, checks in on heartbeats."""
    if not request.get("tools"):
        return Answer(content="summary")
    last = last_message(request)
    if last["role"] == "tool":
        return Answer(content="done")
    text = str(last["content"])
    if "Reminder #" in text:
        return say("Time to stretch! (" + text.split('"')[1] + ")")
    if "Heartbeat:" in text:
        return say("check-in from your agent")
    if "remind me" in text:
        when = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        return Answer(
            tool_calls=[
                ("schedule_reminder", {"message": "stretch your legs", "when": when}),
                ("send_message", {"message": "I'll remind you."}),
            ]
        )
    return say("hi")


QUIET = {"MEMBOT_HEARTBEAT_MINUTES": "0", "MEMBOT_QUIET_HOURS": "none"}


def test_a_reminder_set_through_the_model_reaches_the_terminal(tmp_path: Path):
    with FakeOpenAI(script) as fake:
        chat = Chat(fake, tmp_path, "u", **QUIET)
        try:
            chat.send("please remind me to stretch")
            asked_at, _ = chat.read_until(b"I'll remind you.")
            due_at, seen = chat.read_until(b"Time to stretch! (stretch your legs)", timeout=20)
        finally:
            assert chat.close() == 0
    assert due_at - asked_at >= 1.5  # it waited for its time
    assert sum(b"Time to stretch" in line for line in seen) == 1
    assert query(tmp_path, "SELECT state, fired_count FROM reminders") == [("fired", 1)]


def test_a_reminder_made_in_one_process_fires_in_the_next(tmp_path: Path):
    with FakeOpenAI(script) as fake:
        first = Chat(fake, tmp_path, "u", **QUIET)
        try:
            first.send("remind me to stretch")
            first.read_until(b"I'll remind you.")
        finally:
            assert first.close() == 0
        assert query(tmp_path, "SELECT state FROM reminders") == [("pending",)]
        second = Chat(fake, tmp_path, "u", **QUIET)
        try:
            _, seen = second.read_until(b"Time to stretch!", timeout=20)
            time.sleep(1.5)  # a second firing would show up by now
            second.send("/memory")
            _, more = second.read_until(b"recall memory:")
        finally:
            assert second.close() == 0
    assert sum(b"Time to stretch" in line for line in seen + more) == 1
    assert query(tmp_path, "SELECT state, fired_count FROM reminders") == [("fired", 1)]


def test_an_idle_chat_gets_the_days_cap_of_unprompted_messages_and_none_in_quiet_hours(tmp_path: Path):
    settings = {"MEMBOT_HEARTBEAT_MINUTES": "0.05", "MEMBOT_ACTIVE_SKIP_MINUTES": "0"}
    settings["MEMBOT_MAX_UNPROMPTED_PER_DAY"] = "2"
    with FakeOpenAI(script) as fake:
        (tmp_path / "day").mkdir()
        (tmp_path / "night").mkdir()
        day = Chat(fake, tmp_path / "day", "u", MEMBOT_QUIET_HOURS="none", **settings)
        night = Chat(fake, tmp_path / "night", "u", MEMBOT_QUIET_HOURS=covering_now(), **settings)
        try:
            for chat in (day, night):
                chat.send("hello")
                chat.read_until(b"hi")
            started = time.monotonic()
            time.sleep(12)
            assert time.monotonic() - started >= 12
        finally:
            assert day.close() == 0 and night.close() == 0
        heard = [
            sum(b"check-in from your agent" in item[1] for item in list(chat.lines.queue) if item)
            for chat in (day, night)
        ]
    assert heard == [2, 0]
