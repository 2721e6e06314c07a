"""The outbox: every message an agent sends, written before it is delivered.

Table `outbox`: id (send order), agent_id, conversation_id, platform, text, recipient (the
platform user id of the agent's person), reply_to (the platform message id it answers), state
(pending, sent, failed), attempts, error (the last failure's cause), tool_call_id (the
send_message call that wrote it), created_at, updated_at, claimed_by and claimed_until (which
process is delivering it, and until when: its lease). A row is written in the same transaction
as the tool result that says it was sent; it is marked sent only after the platform took it, so
a restart sends what is pending and never what is marked sent.

Many processes may deliver from one database: a process sends a row only after `claim` (or the
sweep's `claim_pending`) gave it to its holder id, until `claimed_until`. A claim that was not
renewed in time (its process died) lets another process take the row; marking it sent or failed,
or `release`, gives it up. An agent's messages in one conversation go out in id order: a row is
not taken while an earlier pending one of that agent and conversation is another holder's (or,
for `claim`, anyone's but ours); the sweep takes it with those earlier ones.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection
from storage.postgres import dialect

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
    """Messages for `platform` not yet delivered, oldest first, claimed or not (read across
    agents; each goes only to its own conversation)."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM outbox WHERE platform = ? AND state = 'pending' ORDER BY id LIMIT ?",
        (platform, limit),
    )
    return [Entry(*row) for row in rows]


def claim(conn: Connection, agent_id: int, entry_id: int, holder: str, now: str, until: str) -> bool:
    """Take this row for delivery by `holder` until `until` (or renew its claim): True if it is
    pending, not claimed by another holder whose lease runs past `now`, and no earlier pending row
    of its agent and conversation waits unless `holder` has it too (so none goes out of order)."""
    cursor = conn.execute(
        "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE agent_id = ? AND id = ? "
        "AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?) "
        "AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.agent_id = outbox.agent_id "
        "AND e.conversation_id = outbox.conversation_id AND e.state = 'pending' AND e.id < outbox.id "
        "AND (e.claimed_by IS NULL OR e.claimed_by != ?))",
        (holder, until, agent_id, entry_id, now, holder, holder),
    )
    return int(cursor.rowcount) == 1


def _channels(platform: str, channels: Collection[str] | None) -> tuple[str, tuple[object, ...]]:
    """The filter for one process's share of a platform: only these channel ids (None: all)."""
    if channels is None:
        return "", ()
    return (
        " AND conversation_id IN (SELECT id FROM conversations WHERE platform = ? AND channel_id IN "
        "(SELECT value FROM json_each(?)))",
        (platform, json.dumps(sorted(channels))),
    )


def claim_pending(
    conn: Connection,
    platform: str,
    holder: str,
    now: str,
    until: str,
    limit: int = 500,
    channels: Collection[str] | None = None,
) -> list[Entry]:
    """The sweep: claim for `holder` (until `until`) the oldest pending rows of `platform` (in
    `channels`, if given) that no other holder's lease covers at `now`, at most `limit`, and
    return them oldest first. A row is left while an earlier pending row of its agent and
    conversation is not taken with it (another holder has it; on PostgreSQL, another transaction
    is claiming it: those rows are skipped, not waited for). Reads across agents."""
    where, extra = _channels(platform, channels)
    skip = " FOR UPDATE SKIP LOCKED" if dialect(conn) == "postgres" else ""
    rows = conn.execute(
        "WITH candidates AS (SELECT id, agent_id, conversation_id FROM outbox "
        "WHERE platform = ? AND state = 'pending' "
        f"AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?){where} "
        f"ORDER BY id LIMIT ?{skip}) "
        "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT c.id FROM candidates AS c "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.agent_id = c.agent_id "
        "AND e.conversation_id = c.conversation_id AND e.state = 'pending' AND e.id < c.id "
        f"AND e.id NOT IN (SELECT id FROM candidates))) RETURNING {COLUMNS}",
        (platform, now, holder, *extra, limit, holder, until),
    )
    return sorted((Entry(*row) for row in rows), key=lambda entry: entry.id)


def release(conn: Connection, agent_id: int, entry_id: int, holder: str) -> None:
    """`holder` gives this row back unsent (another process may take it at once)."""
    conn.execute(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL "
        "WHERE agent_id = ? AND id = ? AND claimed_by = ?",
        (agent_id, entry_id, holder),
    )


def release_all(conn: Connection, platform: str, holder: str) -> int:
    """`holder` gives back every pending row of `platform` it has claimed (it stops); how many."""
    cursor = conn.execute(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL "
        "WHERE platform = ? AND state = 'pending' AND claimed_by = ?",
        (platform, holder),
    )
    return int(cursor.rowcount)


def mark_sent(conn: Connection, agent_id: int, entry_id: int) -> None:
    conn.execute(
        "UPDATE outbox SET state = 'sent', attempts = attempts + 1, error = '', updated_at = ?, "
        "claimed_by = NULL, claimed_until = NULL WHERE agent_id = ? AND id = ?",
        (now_iso(), agent_id, entry_id),
    )


def mark_attempt(conn: Connection, agent_id: int, entry_id: int, error: str, failed: bool) -> None:
    """A delivery attempt failed with `error`; `failed`: no more attempts. The claim is given up
    (a retry claims the row again first)."""
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, error = ?, state = ?, updated_at = ?, "
        "claimed_by = NULL, claimed_until = NULL WHERE agent_id = ? AND id = ?",
        (error[:500], FAILED if failed else PENDING, now_iso(), agent_id, entry_id),
    )
