"""Archival memory: passages the agent chose to keep (and documents a user imported).

Table `passages`: id, agent_id, content, source (agent or import), created_at, conversation_id
and private (stored while answering in a private conversation: never shown in public).
`passages_fts` indexes content; `passages_vec` holds its embedding, partitioned by agent. Reads
for a public conversation pass `public_only=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage import agents, vectors
from storage.clock import now_iso
from storage.db import Connection
from storage.fulltext import bm25_matches


@dataclass(frozen=True)
class Passage:
    id: int
    content: str
    source: str
    created_at: str
    private: bool = True


def insert(
    conn: Connection,
    agent_id: int,
    content: str,
    embedding: bytes,
    source: str = "agent",
    private: bool = True,
    conversation_id: int | None = None,
) -> Passage:
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO passages (agent_id, content, source, created_at, private, conversation_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (agent_id, content, source, now, int(private), conversation_id),
    )
    passage_id = int(cursor.lastrowid)
    vectors.put(conn, "passages_vec", agent_id, passage_id, embedding, private)
    agents.mark_memory_updated(conn, agent_id)
    return Passage(passage_id, content, source, now, private)


def count(conn: Connection, agent_id: int) -> int:
    """How many passages this agent has (a counter kept by triggers, not a scan)."""
    row = conn.execute("SELECT passage_count FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return int(row[0]) if row else 0


def get_many(conn: Connection, agent_id: int, ids: list[int], public_only: bool = False) -> list[Passage]:
    """These passages of this agent (others' ids are ignored), in the order of `ids`."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    scope = " AND private = 0" if public_only else ""
    rows = conn.execute(
        f"SELECT id, content, source, created_at, private FROM passages "
        f"WHERE agent_id = ? AND id IN ({marks}){scope}",
        (agent_id, *ids),
    )
    found = {row[0]: Passage(row[0], row[1], row[2], row[3], bool(row[4])) for row in rows}
    return [found[i] for i in ids if i in found]


def text_matches(
    conn: Connection, agent_id: int, query: str, limit: int, public_only: bool = False
) -> list[tuple[int, float]]:
    """Passages of this agent matching words of `query`, best BM25 first: (id, score)."""
    return bm25_matches(conn, "passages", agent_id, query, limit, public_only=public_only)


def nearest(
    conn: Connection, agent_id: int, vector: bytes, k: int, public_only: bool = False
) -> list[tuple[int, float]]:
    return vectors.nearest(conn, "passages_vec", agent_id, vector, k, public_only)


def texts(conn: Connection, agent_id: int, after_id: int, limit: int) -> list[tuple[int, str, bool]]:
    """(id, content, private) of this agent's passages after `after_id`, for re-embedding."""
    rows = conn.execute(
        "SELECT id, content, private FROM passages WHERE agent_id = ? AND id > ? ORDER BY id LIMIT ?",
        (agent_id, after_id, limit),
    )
    return [(int(i), str(text), bool(private)) for i, text, private in rows]
