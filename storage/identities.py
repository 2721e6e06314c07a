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
