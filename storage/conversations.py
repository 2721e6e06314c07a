"""Conversations: the DMs, channels and threads messages were exchanged in.

Table `conversations`: id, (platform, channel_id, thread_id) unique, private (1 for a DM or the
terminal, 0 for a channel or group), name and place (a channel's and its server's names, for the
prompt), created_at. A conversation holds no memory itself; messages and passages point at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection

COLUMNS = "id, platform, channel_id, thread_id, private, name, place"


@dataclass(frozen=True)
class Row:
    id: int
    platform: str
    channel_id: str
    thread_id: str
    private: bool
    name: str
    place: str


def _row(row: tuple[object, ...]) -> Row:
    values = list(row)
    values[4] = bool(values[4])
    return Row(*values)  # type: ignore[arg-type]


def ensure(
    conn: Connection,
    platform: str,
    channel_id: str,
    thread_id: str,
    private: bool,
    name: str = "",
    place: str = "",
) -> int:
    """The id of this conversation, made on first sight; names are kept current. Its privacy is
    fixed when it is first seen: a channel cannot turn into a DM."""
    row = conn.execute(
        "INSERT INTO conversations (platform, channel_id, thread_id, private, name, place, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, channel_id, thread_id) DO UPDATE SET "
        "name = CASE WHEN excluded.name != '' THEN excluded.name ELSE conversations.name END, "
        "place = CASE WHEN excluded.place != '' THEN excluded.place ELSE conversations.place END RETURNING id",
        (platform, channel_id, thread_id, int(private), name, place, now_iso()),
    ).fetchone()
    return int(row[0])


def get(conn: Connection, conversation_id: int) -> Row | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    return _row(row) if row else None
