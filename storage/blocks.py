"""Core memory blocks: always in the agent's context, edited by the agent.

Table `blocks`: (agent_id, scope, label) key, description (the block's purpose, shown to the
model), value, char_limit, updated_at. `scope` is 'private' or 'public': in a private
conversation the agent sees and edits its private blocks; in a public one, its public blocks, so
nothing written down in private is shown in public. `CHECK (length(value) <= char_limit)` holds
the limit for every writer, including hand edits in a SQL shell; `write` checks first to give a
helpful error.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import agents
from storage.clock import now_iso
from storage.db import Connection
from storage.errors import BlockLimitError, BlockNotFoundError

PRIVATE, PUBLIC = "private", "public"
COLUMNS = "label, description, value, char_limit, updated_at, scope"


@dataclass(frozen=True)
class Block:
    label: str
    description: str
    value: str
    char_limit: int
    updated_at: str
    scope: str = PRIVATE


def list_for(conn: Connection, agent_id: int, scope: str = PRIVATE) -> list[Block]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM blocks WHERE agent_id = ? AND scope = ? ORDER BY rowid",
        (agent_id, scope),
    )
    return [Block(*row) for row in rows]


def get(conn: Connection, agent_id: int, label: str, scope: str = PRIVATE) -> Block:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM blocks WHERE agent_id = ? AND scope = ? AND label = ?",
        (agent_id, scope, label),
    ).fetchone()
    if row is None:
        labels = ", ".join(b.label for b in list_for(conn, agent_id, scope))
        raise BlockNotFoundError(f"No core memory block '{label}'. The blocks are: {labels}.")
    return Block(*row)


def _check_limit(label: str, value: str, char_limit: int) -> None:
    if len(value) > char_limit:
        raise BlockLimitError(
            f"Core memory block '{label}' would hold {len(value)} characters, over its limit of "
            f"{char_limit}. Keep it short: move detail to archival memory with "
            "archival_memory_insert, or replace older lines with a shorter version."
        )


def create(
    conn: Connection,
    agent_id: int,
    label: str,
    description: str,
    value: str,
    char_limit: int,
    scope: str = PRIVATE,
) -> Block:
    _check_limit(label, value, char_limit)
    conn.execute(
        "INSERT INTO blocks (agent_id, scope, label, description, value, char_limit, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (agent_id, scope, label, description, value, char_limit, now_iso()),
    )
    return get(conn, agent_id, label, scope)


def write(conn: Connection, agent_id: int, label: str, value: str, scope: str = PRIVATE) -> Block:
    """Replace a block's value, enforcing its character limit."""
    block = get(conn, agent_id, label, scope)
    _check_limit(label, value, block.char_limit)
    conn.execute(
        "UPDATE blocks SET value = ?, updated_at = ? WHERE agent_id = ? AND scope = ? AND label = ?",
        (value, now_iso(), agent_id, scope, label),
    )
    agents.mark_memory_updated(conn, agent_id)
    return get(conn, agent_id, label, scope)
