"""Heartbeats: when each agent is next woken unprompted, and what limits it.

Table `heartbeats`, one row per agent (made by a trigger with the agent): next_at (UTC; NULL:
not scheduled yet, or off), enabled (0 after `/quiet`), idle (1 once the person has been silent
too long; their next message clears it), paused_until (the agent's `pause_heartbeats`), day and
sent_today (the person's local day and the unprompted messages they got on it), platform (the
one they last used), conversation_id (their latest private conversation; NULL: a DM on
`platform`), last_spoke_at (their latest message; kept by a trigger on `messages`), notes (what
the next heartbeat must tell the agent, e.g. a reminder missed while membot was down).

Rows are read across agents only to find those due; each is then woken as its own agent. Every
change to a row is conditional on the `next_at` that was read, so two processes sharing the file
never both take one heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from storage.db import Connection

COLUMNS = (
    "h.agent_id, h.next_at, h.enabled, h.idle, h.paused_until, h.day, h.sent_today, h.platform, "
    "h.conversation_id, h.last_spoke_at, h.notes"
)


@dataclass(frozen=True)
class Heartbeat:
    agent_id: int
    next_at: str | None
    enabled: bool
    idle: bool
    paused_until: str | None
    day: str
    sent_today: int
    platform: str
    conversation_id: int | None
    last_spoke_at: str | None
    notes: str

    def sent_on(self, day: str) -> int:
        """Unprompted messages the person got on local `day`."""
        return self.sent_today if self.day == day else 0


def _row(row: tuple[object, ...]) -> Heartbeat:
    values = list(row)
    values[2], values[3] = bool(values[2]), bool(values[3])
    return Heartbeat(*values)  # type: ignore[arg-type]


def get(conn: Connection, agent_id: int) -> Heartbeat | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM heartbeats AS h WHERE h.agent_id = ?", (agent_id,)).fetchone()
    return _row(row) if row else None


def _channels(platform: str, channels: Collection[str] | None) -> tuple[str, tuple[object, ...]]:
    """Only the rows whose conversation is one of `channels` (None: every row of the platform)."""
    if channels is None:
        return "", ()
    return (
        " AND h.conversation_id IN (SELECT id FROM conversations WHERE platform = ? AND channel_id IN "
        "(SELECT value FROM json_each(?)))",
        (platform, json.dumps(sorted(channels))),
    )


def due(
    conn: Connection, platform: str, channels: Collection[str] | None, at: str, limit: int
) -> list[Heartbeat]:
    """Heartbeats of `platform` (in `channels`) due at `at` or before, oldest first."""
    where, extra = _channels(platform, channels)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM heartbeats AS h WHERE h.platform = ? AND h.next_at IS NOT NULL "
        f"AND h.next_at <= ?{where} ORDER BY h.next_at LIMIT ?",
        (platform, at, *extra, limit),
    )
    return [_row(row) for row in rows]


def next_due(conn: Connection, platform: str, channels: Collection[str] | None, after: str) -> str | None:
    where, extra = _channels(platform, channels)
    row = conn.execute(
        f"SELECT min(h.next_at) FROM heartbeats AS h WHERE h.platform = ? AND h.next_at > ?{where}",
        (platform, after, *extra),
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def unscheduled(conn: Connection, platform: str, channels: Collection[str] | None, limit: int) -> list[int]:
    """Agents of `platform` whose heartbeats are on but have no time yet (new agents, /quiet off)."""
    where, extra = _channels(platform, channels)
    rows = conn.execute(
        "SELECT h.agent_id FROM heartbeats AS h WHERE h.platform = ? AND h.next_at IS NULL "
        f"AND h.enabled = 1 AND h.idle = 0{where} LIMIT ?",
        (platform, *extra, limit),
    )
    return [int(row[0]) for row in rows]


def schedule(conn: Connection, times: list[tuple[str, int]]) -> None:
    """Give these (next_at, agent_id) their first time, unless another process just did."""
    conn.executemany(
        "UPDATE heartbeats SET next_at = ? WHERE agent_id = ? AND next_at IS NULL AND enabled = 1", times
    )


def move(conn: Connection, heartbeat: Heartbeat, next_at: str | None, idle: bool = False) -> bool:
    """Skip this due heartbeat: next time `next_at` (None with `idle`: not until the person
    speaks again). True if this process took it."""
    cursor = conn.execute(
        "UPDATE heartbeats SET next_at = ?, idle = ? WHERE agent_id = ? AND next_at = ?",
        (next_at, int(idle), heartbeat.agent_id, heartbeat.next_at),
    )
    return int(cursor.rowcount) == 1


def claim(conn: Connection, heartbeat: Heartbeat, next_at: str) -> bool:
    """Take this due heartbeat for firing and set the next one; its notes are read once."""
    cursor = conn.execute(
        "UPDATE heartbeats SET next_at = ?, notes = '' WHERE agent_id = ? AND next_at = ?",
        (next_at, heartbeat.agent_id, heartbeat.next_at),
    )
    return int(cursor.rowcount) == 1


def take_unprompted(conn: Connection, agent_id: int, day: str, cap: int) -> bool:
    """Count one unprompted message on local `day` if the person has not had `cap` yet."""
    cursor = conn.execute(
        "UPDATE heartbeats SET sent_today = CASE WHEN day = ? THEN sent_today + 1 ELSE 1 END, day = ? "
        "WHERE agent_id = ? AND (day != ? OR sent_today < ?)",
        (day, day, agent_id, day, cap),
    )
    return int(cursor.rowcount) == 1


def set_enabled(conn: Connection, agent_id: int, enabled: bool) -> None:
    """`/quiet` (off: no more heartbeats) and `/quiet off` (on again, scheduled at the next sweep)."""
    conn.execute(
        "UPDATE heartbeats SET enabled = ?, next_at = NULL, idle = 0 WHERE agent_id = ?",
        (int(enabled), agent_id),
    )


def pause(conn: Connection, agent_id: int, until: str | None) -> None:
    """No heartbeat before `until` (None: the pause ends now; the next time is set at a sweep)."""
    if until is None:
        conn.execute(
            "UPDATE heartbeats SET paused_until = NULL, next_at = NULL WHERE agent_id = ? AND enabled = 1",
            (agent_id,),
        )
        return
    conn.execute(
        "UPDATE heartbeats SET paused_until = ?, "
        "next_at = CASE WHEN enabled = 0 THEN NULL WHEN next_at IS NULL OR next_at < ? THEN ? "
        "ELSE next_at END "
        "WHERE agent_id = ?",
        (until, until, until, agent_id),
    )


def add_note(conn: Connection, agent_id: int, note: str) -> None:
    """Something the agent's next heartbeat tells it (kept short: the oldest notes go first)."""
    conn.execute(
        "UPDATE heartbeats SET notes = substr(CASE WHEN notes = '' THEN ? ELSE notes || char(10) || ? END, -2000) "
        "WHERE agent_id = ?",
        (note, note, agent_id),
    )


def hide_turn(conn: Connection, agent_id: int, source_key: str) -> int:
    """Take a silent heartbeat's turn (its event and the agent's steps after it, up to the next
    input) out of both FIFO views: it stays in recall memory but costs no more context."""
    row = conn.execute(
        "SELECT id FROM messages WHERE source_key = ? AND agent_id = ?", (source_key, agent_id)
    ).fetchone()
    if row is None:
        return 0
    start = int(row[0])
    cursor = conn.execute(
        "UPDATE messages SET in_context = 0, public_in_context = 0 WHERE agent_id = ? AND id >= ? "
        "AND id < coalesce((SELECT min(id) FROM messages WHERE agent_id = ? AND id > ? AND role = 'user'), "
        "9223372036854775807) AND (in_context = 1 OR public_in_context = 1)",
        (agent_id, start, agent_id, start),
    )
    return int(cursor.rowcount)
