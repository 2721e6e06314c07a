"""The outbox: every message an agent sends, written before it is delivered.

Table `outbox`: id (send order), agent_id, conversation_id, platform, text, recipient (the
platform user id of the agent's person), reply_to (the platform message id it answers), state
(pending, sent, failed), attempts, error (the last failure's cause), tool_call_id (the
send_message call that wrote it), created_at, updated_at. A row is written in the same transaction
as the tool result that says it was sent; it is marked sent only after the platform took it, so
a restart sends what is pending and never what is marked sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

PENDING, SENT, FAILED = "pending", "sent", "failed"
COLUMNS = "id, agent_id, conversation_id, platform, text, recipient, reply_to, state, attempts, error"


@dataclass(frozen=True)
class Entry:
    id: int
    agent_id: int
    conversation_id: int
    platform: str
    text: str
    recipient: str
    reply_to: str
    state: str
    attempts: int
    error: str


def add(
    conn: Connection,
    agent_id: int,
    conversation_id: int,
    platform: str,
    text: str,
    recipient: str = "",
    reply_to: str = "",
    tool_call_id: str | None = None,
) -> Entry:
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO outbox (agent_id, conversation_id, platform, text, recipient, reply_to, tool_call_id, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (agent_id, conversation_id, platform, text, recipient, reply_to, tool_call_id, now, now),
    )
    return Entry(
        int(cursor.lastrowid), agent_id, conversation_id, platform, text, recipient, reply_to, PENDING, 0, ""
    )


def for_agent(conn: Connection, agent_id: int, limit: int = 100) -> list[Entry]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM outbox WHERE agent_id = ? ORDER BY id DESC LIMIT ?", (agent_id, limit)
    )
    return [Entry(*row) for row in reversed(rows.fetchall())]


def pending(conn: Connection, platform: str, limit: int = 500) -> list[Entry]:
    """Messages for `platform` not yet delivered, oldest first (read across agents by the one
    deliverer of that platform; each goes only to its own conversation)."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM outbox WHERE platform = ? AND state = 'pending' ORDER BY id LIMIT ?",
        (platform, limit),
    )
    return [Entry(*row) for row in rows]


def mark_sent(conn: Connection, agent_id: int, entry_id: int) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'sent', attempts = attempts + 1, error = '', updated_at = ? "
        "WHERE agent_id = ? AND id = ?",
        (now_iso(), agent_id, entry_id),
    )


def mark_attempt(conn: Connection, agent_id: int, entry_id: int, error: str, failed: bool) -> None:
    """A delivery attempt failed with `error`; `failed`: no more attempts."""
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, state = ?, updated_at = ? "
        "WHERE agent_id = ? AND id = ?",
        (error[:500], FAILED if failed else PENDING, now_iso(), agent_id, entry_id),
    )
