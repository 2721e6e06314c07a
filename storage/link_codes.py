"""One-time link codes (`/link`, bot/linking.py) and the wrong codes accounts tried.

Codes are kept by their sha256 only (the caller hashes). Every function runs in the caller's
transaction; times are ISO strings (storage.clock)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection


@dataclass(frozen=True)
class Code:
    agent_id: int
    platform: str
    platform_user_id: str


def store(
    conn: Connection, agent_id: int, platform: str, user_id: str, code_hash: str, now: str, expires: str
) -> None:
    """Keep this code for the agent, replacing its unused codes."""
    conn.execute("DELETE FROM link_codes WHERE agent_id = ? AND used_at IS NULL", (agent_id,))
    conn.execute(
        "INSERT INTO link_codes (code_hash, agent_id, platform, platform_user_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (code_hash, agent_id, platform, user_id, now, expires),
    )


def valid(conn: Connection, code_hash: str, now: str) -> Code | None:
    """The unused, unexpired code's owner, if there is one."""
    row = conn.execute(
        "SELECT agent_id, platform, platform_user_id FROM link_codes "
        "WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
        (code_hash, now),
    ).fetchone()
    return Code(int(row[0]), str(row[1]), str(row[2])) if row else None


def use(conn: Connection, code_hash: str, agent_id: int, now: str) -> bool:
    """Mark the code used, if it is still valid and still this agent's; whether it was."""
    cursor = conn.execute(
        "UPDATE link_codes SET used_at = ? WHERE code_hash = ? AND agent_id = ? AND used_at IS NULL "
        "AND expires_at > ?",
        (now, code_hash, agent_id, now),
    )
    return int(cursor.rowcount) == 1


def drop_for_agent(conn: Connection, agent_id: int) -> None:
    conn.execute("DELETE FROM link_codes WHERE agent_id = ?", (agent_id,))


def failures(conn: Connection, platform: str, user_id: str, since: str) -> int:
    """Wrong codes this account sent after `since` (older ones are deleted)."""
    conn.execute("DELETE FROM link_failures WHERE at <= ?", (since,))
    row = conn.execute(
        "SELECT count(*) FROM link_failures WHERE platform = ? AND platform_user_id = ? AND at > ?",
        (platform, user_id, since),
    ).fetchone()
    return int(row[0])


def record_failure(conn: Connection, platform: str, user_id: str, now: str) -> None:
    conn.execute(
        "INSERT INTO link_failures (platform, platform_user_id, at) VALUES (?, ?, ?)",
        (platform, user_id, now),
    )


def forget_failures(conn: Connection, agent_id: int) -> None:
    """The wrong codes this agent's accounts tried (they name the accounts, not the agent)."""
    conn.execute(
        "DELETE FROM link_failures WHERE (platform, platform_user_id) IN "
        "(SELECT platform, platform_user_id FROM identities WHERE agent_id = ?)",
        (agent_id,),
    )
