"""The rules of proactive work, apart from the timers: when a due heartbeat is skipped (and
until when), the jittered interval, and what the agent is told when a reminder or a heartbeat
wakes it. Pure functions of the settings, the stored rows and the time, so they are easy to test
and the scheduler (bot/scheduler.py) holds only the mechanics."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.reminder_tools import describe
from bot.settings import Settings
from storage.agents import Agent
from storage.clock import from_iso
from storage.heartbeats import Heartbeat
from storage.reminders import Reminder

LATE_AFTER = timedelta(minutes=1)  # a reminder fired later than this is told it is late


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def interval(settings: Settings, rng: random.Random) -> timedelta:
    """The time to an agent's next heartbeat: MEMBOT_HEARTBEAT_MINUTES, give or take 10 %, so
    agents made at the same moment do not all wake together."""
    return timedelta(minutes=settings.heartbeat_minutes * rng.uniform(0.9, 1.1))


def in_quiet_hours(hour: int, quiet: tuple[int, int] | None) -> bool:
    if quiet is None:
        return False
    start, end = quiet
    return start <= hour < end if start < end else hour >= start or hour < end


def quiet_end(local: datetime, quiet: tuple[int, int]) -> datetime:
    """When the quiet hours `local` falls in end (local time)."""
    end = datetime.combine(local.date(), time(quiet[1]), local.tzinfo)
    return end if end > local else end + timedelta(days=1)


@dataclass(frozen=True)
class Skip:
    """A due heartbeat not run: why, and its next time (None with `idle`: when they speak)."""

    reason: str
    next_at: datetime | None
    idle: bool = False


def skip(
    settings: Settings, heartbeat: Heartbeat, agent: Agent, now: datetime, rng: random.Random
) -> Skip | None:
    """Whether to skip this due heartbeat (None: run it)."""
    local = now.astimezone(zone_of(agent.timezone))
    later = now + interval(settings, rng)
    if not heartbeat.enabled:
        return Skip("switched off with /quiet", None, idle=False)
    if heartbeat.paused_until and from_iso(heartbeat.paused_until) > now:
        return Skip("paused", from_iso(heartbeat.paused_until))
    spoke = from_iso(heartbeat.last_spoke_at or agent.created_at)
    idle_days = settings.heartbeat_idle_days
    if idle_days and now - spoke > timedelta(days=idle_days):
        return Skip(f"silent for over {idle_days:g} days", None, idle=True)
    active = settings.active_skip_minutes
    if heartbeat.last_spoke_at and active and now - spoke < timedelta(minutes=active):
        return Skip("the person spoke recently", later)
    quiet = settings.quiet_range
    if quiet is not None and in_quiet_hours(local.hour, quiet):
        return Skip("quiet hours", max(later, quiet_end(local, quiet)))
    cap = settings.max_unprompted_per_day
    if heartbeat.sent_on(local.date().isoformat()) >= cap:
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), local.tzinfo)
        return Skip("today's unprompted messages are used up", max(later, midnight))
    return None


def ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} days"


def heartbeat_text(
    settings: Settings, heartbeat: Heartbeat, agent: Agent, now: datetime, pending: list[Reminder]
) -> str:
    """What a heartbeat tells the agent: the person's time, their silence, what is pending."""
    zone = zone_of(agent.timezone)
    local = now.astimezone(zone)
    spoke = (
        f"they last wrote {ago(now - from_iso(heartbeat.last_spoke_at))} ago"
        if heartbeat.last_spoke_at
        else "they have not written yet"
    )
    left = settings.max_unprompted_per_day - heartbeat.sent_on(local.date().isoformat())
    lines = [
        f"Heartbeat: a timed wake-up, nobody is waiting. It is {local:%Y-%m-%d %H:%M %a} for the user "
        f"({agent.timezone}); {spoke}.",
        "Pending reminders: " + ("; ".join(describe(r) for r in pending[:5]) if pending else "none") + ".",
    ]
    if heartbeat.notes:
        lines.append(f"Notes: {heartbeat.notes}")
    lines.append(
        f"Send a message only if it is clearly worth it ({left} unprompted left today); you may also "
        "update memory. Doing nothing is usually right."
    )
    return "\n".join(lines)


def reminder_text(reminder: Reminder, now: datetime) -> str:
    """What a due reminder tells the agent (and that it is late, after a restart)."""
    zone = zone_of(reminder.timezone)
    due = from_iso(reminder.due_at)
    late = now - due
    when = due.astimezone(zone).strftime("%Y-%m-%d %H:%M %a")
    text = f'Reminder #{reminder.id} is due: "{reminder.text}". It was set for {when} ({reminder.timezone})'
    if late >= LATE_AFTER:
        text += f"; it fires late by {ago(late)} (membot was not running when it came due)"
    if reminder.recurrence:
        text += f"; it repeats (cron '{reminder.recurrence}')"
    return (
        text + ". Send it to the user now with send_message, in your own words and with what you "
        "remember; if you send nothing, its text is sent as it is."
    )


def missed_note(reminder: Reminder, now: datetime) -> str:
    zone = zone_of(reminder.timezone)
    when = from_iso(reminder.due_at).astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return (
        f'Reminder #{reminder.id} ("{reminder.text}") was due {when} but membot was not running '
        f"then; it was {ago(now - from_iso(reminder.due_at))} late, past the grace window, so it was not "
        "sent. Mention it to the user if it still matters."
    )


def fallback_text(reminder: Reminder) -> str:
    return f"Reminder: {reminder.text}"
