"""Agents: one per (platform, platform user id).

Table `agents`: id, platform, platform_user_id, display_name, timezone, the recursive summary
(`summary`, `summary_covers` = how many messages it stands for), `pressure_warned` (a memory
pressure warning was given since the last flush), memory_updated_at, created_at, last_active_at, and message_count / passage_count (kept by triggers).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

COLUMNS = (
    "id, platform, platform_user_id, display_name, timezone, summary, summary_covers, "
    "pressure_warned, memory_updated_at, created_at, last_active_at"
)


@dataclass(frozen=True)
class Agent:
    id: int
    platform: str
    platform_user_id: str
    display_name: str
    timezone: str
    summary: str
    summary_covers: int
    pressure_warned: bool
    memory_updated_at: str | None
    created_at: str
    last_active_at: str


def _row(row: tuple[object, ...]) -> Agent:
    values = list(row)
    values[7] = bool(values[7])
    return Agent(*values)  # type: ignore[arg-type]


def find(conn: Connection, platform: str, platform_user_id: str) -> Agent | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM agents WHERE platform = ? AND platform_user_id = ?",
        (platform, platform_user_id),
    ).fetchone()
    return _row(row) if row else None


def get(conn: Connection, agent_id: int) -> Agent:
    row = conn.execute(f"SELECT {COLUMNS} FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is None:
        raise KeyError(f"no agent {agent_id}")
    return _row(row)


def create(conn: Connection, platform: str, platform_user_id: str, display_name: str, timezone: str) -> Agent:
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO agents (platform, platform_user_id, display_name, timezone, created_at, "
        "last_active_at, memory_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (platform, platform_user_id, display_name, timezone, now, now, now),
    )
    return get(conn, cursor.lastrowid)


def touch(conn: Connection, agent_id: int) -> None:
    conn.execute("UPDATE agents SET last_active_at = ? WHERE id = ?", (now_iso(), agent_id))


def mark_memory_updated(conn: Connection, agent_id: int) -> None:
    conn.execute("UPDATE agents SET memory_updated_at = ? WHERE id = ?", (now_iso(), agent_id))


def set_pressure_warned(conn: Connection, agent_id: int, warned: bool) -> None:
    conn.execute("UPDATE agents SET pressure_warned = ? WHERE id = ?", (int(warned), agent_id))


def set_summary(conn: Connection, agent_id: int, summary: str, covers: int) -> None:
    conn.execute(
        "UPDATE agents SET summary = ?, summary_covers = ?, pressure_warned = 0 WHERE id = ?",
        (summary, covers, agent_id),
    )


def ids(conn: Connection) -> list[int]:
    """Every agent id (for maintenance such as re-embedding; reads no memory)."""
    return [int(row[0]) for row in conn.execute("SELECT id FROM agents ORDER BY id")]
