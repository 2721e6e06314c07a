"""Documents a person loaded into their agent's archival memory, and the passages cut from them.

Table `documents`: id, agent_id, name (what the person and the agent call it: a file name, or a
path under the folder loaded), origin (where it came from: an absolute path for `membot load`,
"chat:<platform>" for an attachment), kind (text, markdown, pdf, html), sha256 and size of the
file's bytes, passage_count, private and conversation_id (the scope it was loaded in, as for
passages: a private document never reaches a public conversation), created_at.

A document's passages are ordinary rows of `passages` (searched with everything else in
archival memory) with `document_id`, `position` (1, 2, 3... in reading order) and `section`.
They share the document's privacy. Every read is scoped by agent id and, for a public
conversation, by `public_only`. Deleting a document deletes its passages with their vectors
and full-text rows (storage.lifecycle), never by a cascade that would leave vectors behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage import agents, lifecycle, vectors
from storage.clock import now_iso
from storage.db import Connection

COLUMNS = "id, name, origin, kind, sha256, size, passage_count, private, conversation_id, created_at"


@dataclass(frozen=True)
class Document:
    id: int
    name: str
    origin: str
    kind: str
    sha256: str
    size: int
    passages: int
    private: bool
    conversation_id: int | None
    created_at: str


@dataclass(frozen=True)
class NewPassage:
    position: int
    section: str
    content: str
    embedding: bytes


@dataclass(frozen=True)
class Source:
    """Where a passage stands: its document, its place in it, and the section it is in."""

    document_id: int
    name: str
    position: int
    passages: int
    section: str


@dataclass(frozen=True)
class Page:
    """A passage read in order (reading on from a search hit)."""

    id: int
    position: int
    section: str
    content: str


def _document(row: tuple[object, ...]) -> Document:
    values = list(row)
    values[7] = bool(values[7])
    return Document(*values)  # type: ignore[arg-type]


def _scope(public_only: bool) -> str:
    return " AND private = 0" if public_only else ""


def with_content(conn: Connection, agent_id: int, sha256: str, public_only: bool = False) -> Document | None:
    """A document of this agent with exactly these bytes, that this view sees (None if none)."""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM documents WHERE agent_id = ? AND sha256 = ?{_scope(public_only)} "
        "ORDER BY id LIMIT 1",
        (agent_id, sha256),
    ).fetchone()
    return _document(row) if row else None


def same_file(conn: Connection, agent_id: int, name: str, origin: str, private: bool) -> list[Document]:
    """This agent's documents that are the same file as (name, origin) in the same scope: an
    earlier version, replaced when the file changed."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM documents WHERE agent_id = ? AND name = ? AND origin = ? AND private = ? "
        "ORDER BY id",
        (agent_id, name, origin, int(private)),
    )
    return [_document(row) for row in rows]


def store(
    conn: Connection,
    agent_id: int,
    name: str,
    origin: str,
    kind: str,
    sha256: str,
    size: int,
    passages: list[NewPassage],
    private: bool = True,
    conversation_id: int | None = None,
) -> Document:
    """A document and its passages (with their vectors), inside the caller's transaction."""
    now = now_iso()
    row = conn.execute(
        "INSERT INTO documents (agent_id, name, origin, kind, sha256, size, passage_count, private, "
        f"conversation_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}",
        (agent_id, name, origin, kind, sha256, size, len(passages), int(private), conversation_id, now),
    ).fetchone()
    document = _document(row)
    for passage in passages:
        cursor = conn.execute(
            "INSERT INTO passages (agent_id, content, source, created_at, private, conversation_id, "
            "document_id, position, section) VALUES (?, ?, 'document', ?, ?, ?, ?, ?, ?)",
            (
                agent_id,
                passage.content,
                now,
                int(private),
                conversation_id,
                document.id,
                passage.position,
                passage.section,
            ),
        )
        vectors.put(conn, "passages_vec", agent_id, int(cursor.lastrowid), passage.embedding, private)
    agents.mark_memory_updated(conn, agent_id)
    return document


def remove(conn: Connection, agent_id: int, document_id: int) -> int:
    """Delete this agent's document and its passages (vectors and full-text rows too); how many
    passages went (0, and nothing done, if it is not this agent's)."""
    ids = [
        int(i)
        for (i,) in conn.execute(
            "SELECT id FROM passages WHERE agent_id = ? AND document_id = ?", (agent_id, document_id)
        )
    ]
    gone = lifecycle.delete_passages(conn, agent_id, ids)
    conn.execute("DELETE FROM documents WHERE agent_id = ? AND id = ?", (agent_id, document_id))
    return gone


def of_passages(conn: Connection, agent_id: int, passage_ids: list[int]) -> dict[int, int]:
    """document id -> how many of these passages of this agent were cut from it."""
    rows = conn.execute(
        "SELECT document_id, count(*) FROM passages WHERE agent_id = ? AND document_id IS NOT NULL "
        "AND id IN (SELECT value FROM json_each(?)) GROUP BY document_id",
        (agent_id, json.dumps([int(i) for i in passage_ids])),
    )
    return {int(d): int(n) for d, n in rows}


def passages_removed(conn: Connection, agent_id: int, removed: dict[int, int]) -> None:
    """Some passages of these documents were deleted one by one (`of_passages` before): lower
    their passage counts, and delete a document left with none."""
    for document_id, count in removed.items():
        conn.execute(
            "UPDATE documents SET passage_count = CASE WHEN passage_count > ? THEN passage_count - ? ELSE 0 END "
            "WHERE agent_id = ? AND id = ?",
            (count, count, agent_id, document_id),
        )
        conn.execute(
            "DELETE FROM documents WHERE agent_id = ? AND id = ? AND passage_count = 0 AND NOT EXISTS "
            "(SELECT 1 FROM passages WHERE agent_id = ? AND document_id = ?)",
            (agent_id, document_id, agent_id, document_id),
        )


def last_position(conn: Connection, agent_id: int, document_id: int) -> int:
    """The position of this agent's document's last passage (its count, unless some were deleted)."""
    row = conn.execute(
        "SELECT coalesce(max(position), 0) FROM passages WHERE agent_id = ? AND document_id = ?",
        (agent_id, document_id),
    ).fetchone()
    return int(row[0])


def list_for(conn: Connection, agent_id: int, public_only: bool = False) -> list[Document]:
    """This agent's documents (public ones only, in public), oldest first."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM documents WHERE agent_id = ?{_scope(public_only)} ORDER BY id",
        (agent_id,),
    )
    return [_document(row) for row in rows]


def find(conn: Connection, agent_id: int, key: str, public_only: bool = False) -> list[Document]:
    """This agent's documents called `key`: its id, its name, or its origin (a path)."""
    key = key.strip()
    by_id = int(key) if key.isdigit() else -1
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM documents WHERE agent_id = ? AND (id = ? OR name = ? OR origin = ?)"
        f"{_scope(public_only)} ORDER BY id",
        (agent_id, by_id, key, key),
    )
    return [_document(row) for row in rows]


def sources(
    conn: Connection, agent_id: int, passage_ids: list[int], public_only: bool = False
) -> dict[int, Source]:
    """For those of these passages of this agent that came from a document: where they stand."""
    if not passage_ids:
        return {}
    marks = ",".join("?" * len(passage_ids))
    scope = " AND d.private = 0" if public_only else ""
    rows = conn.execute(
        "SELECT p.id, d.id, d.name, p.position, d.passage_count, p.section FROM passages AS p "
        "JOIN documents AS d ON d.id = p.document_id AND d.agent_id = p.agent_id "
        f"WHERE p.agent_id = ? AND p.id IN ({marks}){scope}",
        (agent_id, *passage_ids),
    )
    return {int(r[0]): Source(int(r[1]), str(r[2]), int(r[3]), int(r[4]), str(r[5])) for r in rows}


def read(
    conn: Connection, agent_id: int, document_id: int, first: int, last: int, public_only: bool = False
) -> list[Page]:
    """Passages `first`..`last` (positions, inclusive) of this agent's document, in order."""
    rows = conn.execute(
        "SELECT id, position, section, content FROM passages WHERE agent_id = ? AND document_id = ? "
        f"AND position BETWEEN ? AND ?{_scope(public_only)} ORDER BY position",
        (agent_id, document_id, first, last),
    )
    return [Page(int(i), int(p), str(s), str(c)) for i, p, s, c in rows]


def totals(conn: Connection, agent_id: int, public_only: bool = False) -> tuple[int, int]:
    """How many documents this agent has (in this view) and how many passages they hold."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(passage_count), 0) FROM documents "
        f"WHERE agent_id = ?{_scope(public_only)}",
        (agent_id,),
    ).fetchone()
    return int(row[0]), int(row[1])
