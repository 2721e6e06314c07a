"""The inbox: events received and not yet answered, so none is lost to a crash or a restart.

Table `inbox`: id (arrival order), agent_id, source_key (the platform's message key, unique: a
redelivery is dropped), event (the neutral event as JSON), message_id (NULL while the event waits
for its agent; the stored message once its turn has begun), attempts (turns begun for it),
received_at. A row is deleted when its turn ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

COLUMNS = "id, agent_id, source_key, event, message_id, attempts, received_at"


@dataclass(frozen=True)
class Item:
    id: int
    agent_id: int
    source_key: str | None
    event: str
    message_id: int | None
    attempts: int
    received_at: str


def seen(conn: Connection, source_key: str) -> bool:
    """Whether a message with this platform key was already received (answered or waiting)."""
    if not source_key:
        return False
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM inbox WHERE source_key = ?) "
        "OR EXISTS (SELECT 1 FROM messages WHERE source_key = ?)",
        (source_key, source_key),
    ).fetchone()
    return bool(row[0])


def add(conn: Connection, agent_id: int, source_key: str, event: str, message_id: int | None = None) -> Item:
    values = (agent_id, source_key or None, event, message_id, 0 if message_id is None else 1, now_iso())
    cursor = conn.execute(
        "INSERT INTO inbox (agent_id, source_key, event, message_id, attempts, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        values,
    )
    return Item(int(cursor.lastrowid), *values)


def begin(conn: Connection, agent_id: int, item_id: int, message_id: int | None) -> None:
    """A turn for this item has begun (its event is stored as `message_id`, if not already)."""
    conn.execute(
        "UPDATE inbox SET message_id = coalesce(?, message_id), attempts = attempts + 1 "
        "WHERE agent_id = ? AND id = ?",
        (message_id, agent_id, item_id),
    )


def done(conn: Connection, agent_id: int, item_id: int) -> None:
    conn.execute("DELETE FROM inbox WHERE agent_id = ? AND id = ?", (agent_id, item_id))


def waits(conn: Connection, agent_id: int, item_id: int) -> bool:
    """Whether this item of this agent is still unanswered."""
    row = conn.execute("SELECT 1 FROM inbox WHERE agent_id = ? AND id = ?", (agent_id, item_id)).fetchone()
    return row is not None


def before(conn: Connection, agent_id: int, item_id: int | None, limit: int = 20) -> list[Item]:
    """This agent's items stored before `item_id` (None: all) whose turn has not begun, oldest
    first: events another process stored while it waited for the agent."""
    last = " AND id < ?" if item_id is not None else ""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM inbox WHERE agent_id = ? AND attempts = 0{last} ORDER BY id LIMIT ?",
        (agent_id, *(() if item_id is None else (item_id,)), limit),
    )
    return [Item(*row) for row in rows]


def ahead(conn: Connection, agent_id: int, item_id: int, limit: int = 20) -> tuple[bool, list[Item]]:
    """Whether this item still waits, and the items `before` it, in one query."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM inbox WHERE agent_id = ? AND id <= ? AND (id = ? OR attempts = 0) "
        "ORDER BY id = ? DESC, id LIMIT ?",
        (agent_id, item_id, item_id, item_id, limit + 1),
    )
    items = [Item(*row) for row in rows]
    waits = bool(items) and items[0].id == item_id
    return waits, items[1:] if waits else items


def waiting(conn: Connection) -> list[Item]:
    """Every unanswered item, oldest first (at start-up: what a crash or a stop left behind).
    Reads across agents to find them; each is then answered by its own agent."""
    return [Item(*row) for row in conn.execute(f"SELECT {COLUMNS} FROM inbox ORDER BY id")]
