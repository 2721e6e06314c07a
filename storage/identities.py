"""Identities: a person's accounts, each mapped to the person's one agent.

Table `identities`: (platform, platform_user_id) key, agent_id, display_name, created_at. An
agent is created with its first identity (`agents.create`); `link` maps another account of the
same person to it, so both reach one memory and one lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

COLUMNS = "platform, platform_user_id, agent_id, display_name, created_at"


@dataclass(frozen=True)
class Identity:
    platform: str
    platform_user_id: str
    agent_id: int
    display_name: str
    created_at: str


def find(conn: Connection, platform: str, platform_user_id: str) -> Identity | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM identities WHERE platform = ? AND platform_user_id = ?",
        (platform, platform_user_id),
    ).fetchone()
    return Identity(*row) if row else None


def link(
    conn: Connection, platform: str, platform_user_id: str, agent_id: int, display_name: str = ""
) -> Identity:
    """Map this account to `agent_id` (a new account, or one that had an agent of its own)."""
    conn.execute(
        "INSERT INTO identities (platform, platform_user_id, agent_id, display_name, created_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (platform, platform_user_id) DO UPDATE SET agent_id = excluded.agent_id",
        (platform, platform_user_id, agent_id, display_name, now_iso()),
    )
    found = find(conn, platform, platform_user_id)
    assert found is not None
    return found


def count(conn: Connection, agent_id: int) -> int:
    return int(conn.execute("SELECT count(*) FROM identities WHERE agent_id = ?", (agent_id,)).fetchone()[0])


def split(conn: Connection, agent_id: int, platform: str, platform_user_id: str) -> bool:
    """Take this account off the agent, unless it is the agent's last; whether it was."""
    if count(conn, agent_id) < 2:
        return False
    conn.execute(
        "DELETE FROM identities WHERE platform = ? AND platform_user_id = ? AND agent_id = ?",
        (platform, platform_user_id, agent_id),
    )
    # the agent row names its first account (unique): hand that to an account it keeps
    conn.execute(
        "UPDATE agents SET (platform, platform_user_id) = (SELECT platform, platform_user_id FROM identities "
        "WHERE agent_id = ? ORDER BY created_at, platform, platform_user_id LIMIT 1) "
        "WHERE id = ? AND platform = ? AND platform_user_id = ?",
        (agent_id, agent_id, platform, platform_user_id),
    )
    return True
