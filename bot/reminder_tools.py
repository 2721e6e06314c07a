"""The agent's tools for proactive work: reminders it schedules, and pausing its heartbeats.

Times are read in the person's zone (the agent's `timezone`) when they carry no offset, and
stored in UTC. A recurrence is kept as a five-field cron expression in that zone ("daily" at
09:00 is `0 9 * * *`), so each next time is computed in the zone and stays 09:00 across DST.

`bot/scheduler.py` fires what these tools store. A tool that changes the schedule calls
`changed(at)` so that the scheduler of this process re-arms at once (it is a plain list of
callbacks because tools see no runtime, only their `ToolContext`; another process's changes are
found by its periodic sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.errors import ToolError
from bot.tools import Effect, ToolContext, tool
from storage import heartbeats, reminders
from storage.clock import from_iso, to_iso
from storage.db import Connection

log = logging.getLogger(__name__)

MAX_TEXT = 1000
MAX_PENDING = 200  # pending reminders one agent may hold
MAX_PAUSE_MINUTES = 60 * 24 * 30
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

listeners: list[Callable[[datetime], None]] = []


def changed(at: datetime) -> None:
    """Something may now be due at `at`: tell this process's schedulers."""
    for listener in list(listeners):
        listener(at)


def parse_when(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """An ISO 8601 time ('2025-03-01T09:00', with or without an offset) or a bare local time
    ('09:00', the next one to come) as an aware datetime; naive times are in `zone`."""
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        try:
            clock = time.fromisoformat(raw)
        except ValueError:
            raise ToolError(
                f"'when' must be an ISO 8601 time such as 2025-03-01T09:00 (in the person's zone) "
                f"or 2025-03-01T09:00+02:00, not {text!r}."
            ) from None
        today = now.astimezone(zone).date()
        moment = datetime.combine(today, clock.replace(tzinfo=None))
        if moment.replace(tzinfo=zone) <= now:
            moment += timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


def cron_for(recurrence: str | None, first: datetime) -> str | None:
    """The cron expression of a recurrence ('daily', 'weekly', 'weekdays' at `first`'s local
    time, or a five-field cron expression as given); None for a one-off."""
    if recurrence is None or not recurrence.strip() or recurrence.strip().lower() in ("none", "once"):
        return None
    word = recurrence.strip().lower()
    at = f"{first.minute} {first.hour}"
    if word == "daily":
        return f"{at} * * *"
    if word == "weekly":
        return f"{at} * * {WEEKDAYS[first.weekday()]}"
    if word == "weekdays":
        return f"{at} * * mon-fri"
    return " ".join(recurrence.split())


def trigger(cron: str, zone: ZoneInfo) -> CronTrigger:
    try:
        if len(cron.split()) != 5:
            raise ValueError("not five fields")
        return CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as exc:
        raise ToolError(
            f"recurrence {cron!r} is not one I can follow ({exc}): use 'daily', 'weekly', 'weekdays' "
            "or a five-field cron expression such as '30 8 * * mon-fri' (minute hour day month weekday)."
        ) from None


def next_time(cron: str, zone: ZoneInfo, after: datetime, inclusive: bool = False) -> datetime | None:
    """The first time of `cron` in `zone` after `after` (or at it, if `inclusive`); None if it
    never comes (Feb 30th)."""
    found = trigger(cron, zone).get_next_fire_time(None if inclusive else after, after)
    return found.astimezone(UTC) if found is not None else None


def describe(reminder: reminders.Reminder) -> str:
    zone = ZoneInfo(reminder.timezone)
    when = from_iso(reminder.due_at).astimezone(zone).strftime("%Y-%m-%d %H:%M %a")
    repeats = (
        f", repeats (cron '{reminder.recurrence}' in {reminder.timezone})" if reminder.recurrence else ""
    )
    return f"#{reminder.id} at {when}{repeats}: {reminder.text}"


@tool()
async def schedule_reminder(
    ctx: ToolContext, message: str, when: str, recurrence: str | None = None
) -> Effect:
    """Schedule a reminder: at `when` you are woken with it and write the message yourself.

    Args:
        message: What to remind the user of, self-contained (you see it again when it is due).
        when: ISO 8601 time, e.g. 2025-03-01T09:00 (the user's time zone when no offset is given).
        recurrence: Leave out for once; or 'daily', 'weekly', 'weekdays' (at that time), or a
            cron expression 'minute hour day month weekday' in the user's time zone.
    """
    text = message.strip()
    if not text:
        raise ToolError("schedule_reminder needs a non-empty 'message'.")
    if len(text) > MAX_TEXT:
        raise ToolError(f"The reminder's message is {len(text)} characters; keep it under {MAX_TEXT}.")
    agent = ctx.memory.agent
    try:
        zone = ZoneInfo(agent.timezone)
    except (KeyError, ValueError):
        raise ToolError(
            f"The user's time zone {agent.timezone!r} is unknown; ask them to set it with /timezone ZONE."
        ) from None
    now = datetime.now(UTC)
    first = parse_when(when, zone, now)
    cron = cron_for(recurrence, first.astimezone(zone))
    if cron is not None:
        found = next_time(cron, zone, first, inclusive=True)
        if found is None:
            raise ToolError(f"recurrence {cron!r} never comes due; check the day and month fields.")
        first = found
    if first <= now:
        local_now = now.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        raise ToolError(
            f"{when!r} is in the past (it is now {local_now} in {agent.timezone}); give a future time."
        )
    due_at = to_iso(first)
    scope = ctx.memory.scope

    def effect(conn: Connection) -> str:
        if reminders.count_pending(conn, agent.id) >= MAX_PENDING:
            raise ToolError(
                f"You already have {MAX_PENDING} pending reminders; cancel some (list_reminders) first."
            )
        made = reminders.add(
            conn,
            agent.id,
            ctx.address.conversation_id,
            ctx.address.platform,
            scope.private,
            text,
            due_at,
            cron,
            agent.timezone,
        )
        return f"Scheduled reminder {describe(made)}"

    changed(first)
    return effect


@tool()
async def list_reminders(ctx: ToolContext) -> str:
    """List the user's pending reminders, soonest first (in public only those made in public)."""
    found = await ctx.memory.db.read(reminders.pending_for, ctx.memory.agent_id, ctx.memory.public)
    if not found:
        return "No pending reminders."
    return f"{len(found)} pending reminders:\n" + "\n".join(describe(r) for r in found)


@tool()
async def cancel_reminder(ctx: ToolContext, reminder_id: int) -> Effect:
    """Cancel a pending reminder (a recurring one stops for good).

    Args:
        reminder_id: The reminder's number, as list_reminders shows it (#12 -> 12).
    """

    def effect(conn: Connection) -> str:
        gone = reminders.cancel(conn, ctx.memory.agent_id, reminder_id, ctx.memory.public)
        if gone is None:
            raise ToolError(f"There is no pending reminder #{reminder_id}; list_reminders shows them.")
        return f"Cancelled reminder #{gone.id}."

    return effect


@tool()
async def pause_heartbeats(ctx: ToolContext, minutes: float) -> Effect:
    """Pause your timed heartbeats (unprompted wake-ups) for a while, e.g. when the user asks
    for quiet. 0 ends a pause.

    Args:
        minutes: How long, in minutes (up to 43200, 30 days).
    """
    if not 0 <= minutes <= MAX_PAUSE_MINUTES:
        raise ToolError(f"minutes must be between 0 and {MAX_PAUSE_MINUTES} (30 days), not {minutes}.")
    now = datetime.now(UTC)
    until = now + timedelta(minutes=minutes) if minutes else None

    def effect(conn: Connection) -> str:
        heartbeats.pause(conn, ctx.memory.agent_id, to_iso(until) if until else None)
        if until is None:
            return "Heartbeats resume."
        local = until.astimezone(ctx.memory.zone).strftime("%Y-%m-%d %H:%M")
        return f"Heartbeats paused until {local}."

    if until is None:
        changed(now)
    return effect


TOOLS = [schedule_reminder, list_reminders, cancel_reminder, pause_heartbeats]


def unprompted(conn: Connection, ctx: ToolContext, cap: int) -> None:
    """Count a message of a heartbeat turn against the person's daily cap; refuse it past the cap
    (send_message calls this inside its effect: the count and the outbox row commit together)."""
    day = ctx.memory.local(datetime.now(UTC)).date().isoformat()
    if not heartbeats.take_unprompted(conn, ctx.memory.agent_id, day, cap):
        raise ToolError(
            f"The user already got {cap} unprompted message(s) today, the most they want; do not "
            "send more now. Save what you wanted to say in memory for when they next write."
        )
