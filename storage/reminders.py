"""Reminders: what an agent was asked to say at a given time, once or again and again.

Table `reminders`: id, agent_id, conversation_id (where it was asked for, and where it is
delivered), platform (that conversation's, so a process picks only what it can deliver),
private (the conversation's privacy: a reminder made in private is invisible in public), text,
due_at (UTC, storage/clock.py's format), recurrence (NULL for once, else a five-field cron
expression read in `timezone`), timezone, state (pending, fired, cancelled, missed),
fired_count, missed_count, last_fired_at, created_at.

A due reminder is taken by one process only: `claim` and `miss` are conditional updates on
(id, state, due_at), run in the transaction that records what is done with it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

PENDING, FIRED, CANCELLED, MISSED = "pending", "fired", "cancelled", "missed"
COLUMNS = (
    "r.id, r.agent_id, r.conversation_id, r.platform, r.private, r.text, r.due_at, r.recurrence, "
    "r.timezone, r.state, r.fired_count, r.last_fired_at"
)


@dataclass(frozen=True)
class Reminder:
    id: int
    agent_id: int
    conversation_id: int
    platform: str
    private: bool
    text: str
    due_at: str
    recurrence: str | None
    timezone: str
    state: str
    fired_count: int
    last_fired_at: str | None


def _row(row: tuple[object, ...]) -> Reminder:
    values = list(row)
    values[4] = bool(values[4])
    return Reminder(*values)  # type: ignore[arg-type]


def add(
    conn: Connection,
    agent_id: int,
    conversation_id: int,
    platform: str,
    private: bool,
    text: str,
    due_at: str,
    recurrence: str | None,
    timezone: str,
) -> Reminder:
    cursor = conn.execute(
        "INSERT INTO reminders (agent_id, conversation_id, platform, private, text, due_at, recurrence, "
        "timezone, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (agent_id, conversation_id, platform, int(private), text, due_at, recurrence, timezone, now_iso()),
    )
    return Reminder(
        int(cursor.lastrowid),
        agent_id,
        conversation_id,
        platform,
        private,
        text,
        due_at,
        recurrence,
        timezone,
        PENDING,
        0,
        None,
    )


def pending_for(
    conn: Connection, agent_id: int, public_only: bool = False, limit: int = 200
) -> list[Reminder]:
    """This agent's pending reminders, soonest first (in public: only those made in public)."""
    scope = " AND r.private = 0" if public_only else ""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM reminders AS r WHERE r.agent_id = ? AND r.state = 'pending'{scope} "
        "ORDER BY r.due_at, r.id LIMIT ?",
        (agent_id, limit),
    )
    return [_row(row) for row in rows]


def count_pending(conn: Connection, agent_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM reminders WHERE agent_id = ? AND state = 'pending'", (agent_id,)
    ).fetchone()
    return int(row[0])


def cancel(conn: Connection, agent_id: int, reminder_id: int, public_only: bool = False) -> Reminder | None:
    """Cancel one pending reminder of this agent (in public: only one made in public); the
    reminder as it was, or None if there is no such pending one."""
    scope = " AND r.private = 0" if public_only else ""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM reminders AS r WHERE r.agent_id = ? AND r.id = ? AND r.state = 'pending'{scope}",
        (agent_id, reminder_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE reminders SET state = 'cancelled' WHERE agent_id = ? AND id = ?", (agent_id, reminder_id)
    )
    return _row(row)


def _channels(platform: str, channels: Collection[str] | None) -> tuple[str, tuple[object, ...]]:
    """The filter for one process's share of a platform: only these channel ids (None: all)."""
    if channels is None:
        return "", ()
    return (
        " AND r.conversation_id IN (SELECT id FROM conversations WHERE platform = ? AND channel_id IN "
        "(SELECT value FROM json_each(?)))",
        (platform, json.dumps(sorted(channels))),
    )


def due(
    conn: Connection, platform: str, channels: Collection[str] | None, at: str, limit: int
) -> list[Reminder]:
    """Pending reminders of `platform` (in `channels`, if given) due at `at` or before, oldest
    first, at most `limit`. Reads across agents: the scheduler hands each to its own agent."""
    where, extra = _channels(platform, channels)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM reminders AS r WHERE r.platform = ? AND r.state = 'pending' "
        f"AND r.due_at <= ?{where} ORDER BY r.due_at LIMIT ?",
        (platform, at, *extra, limit),
    )
    return [_row(row) for row in rows]


def next_due(conn: Connection, platform: str, channels: Collection[str] | None, after: str) -> str | None:
    """When the first pending reminder of `platform` (in `channels`) after `after` is due."""
    where, extra = _channels(platform, channels)
    row = conn.execute(
        f"SELECT min(r.due_at) FROM reminders AS r WHERE r.platform = ? AND r.state = 'pending' "
        f"AND r.due_at > ?{where}",
        (platform, after, *extra),
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def claim(conn: Connection, reminder: Reminder, fired_at: str, next_due_at: str | None) -> bool:
    """Take this due reminder for firing (True: ours; False: another process took it, or it was
    cancelled or changed). A recurring one stays pending at `next_due_at`."""
    cursor = conn.execute(
        "UPDATE reminders SET state = ?, due_at = coalesce(?, due_at), fired_count = fired_count + 1, "
        "last_fired_at = ? WHERE agent_id = ? AND id = ? AND state = 'pending' AND due_at = ?",
        (
            PENDING if next_due_at else FIRED,
            next_due_at,
            fired_at,
            reminder.agent_id,
            reminder.id,
            reminder.due_at,
        ),
    )
    return int(cursor.rowcount) == 1


def miss(conn: Connection, reminder: Reminder, next_due_at: str | None) -> bool:
    """Mark a reminder that came due too long ago (while no process ran) as missed; a recurring
    one stays pending at its next time. True if this process took it."""
    cursor = conn.execute(
        "UPDATE reminders SET state = ?, due_at = coalesce(?, due_at), missed_count = missed_count + 1 "
        "WHERE agent_id = ? AND id = ? AND state = 'pending' AND due_at = ?",
        (PENDING if next_due_at else MISSED, next_due_at, reminder.agent_id, reminder.id, reminder.due_at),
    )
    return int(cursor.rowcount) == 1
