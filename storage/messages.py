"""Recall memory: every message an agent ever saw, in order, never deleted.

Table `messages`: id (order), agent_id, role (system/user/assistant/tool, the wire role), kind
(user, event, assistant, tool, summary, warning, notice), content, tool_calls (JSON, wire format),
tool_call_id, tool_name, search_text (what text search and embeddings index: user words and what the
agent said), in_context (1 while the message is in the agent's FIFO queue; eviction sets 0),
created_at (UTC ISO), speaker (who said it, a name), turn (1, 2, 3... over the agent's searchable
messages, NULL for the rest: the order search uses to look at a hit's neighbours), context (the
text of the searchable messages just before and after, in the same conversation: indexed in a
second, lower-weighted full-text column), conversation_id and private (where it was said, and
whether that conversation is private), public_in_context (1 while in the public view's queue),
source_key (the platform's key of the message, unique). `messages_fts` indexes search_text and
context; `messages_vec` holds its embedding.

Every read takes the agent id; reads for a public conversation pass `public_only=True` and see
only messages said in public (the full-text owner token "p<id>", the vector table's `private`
column, and `private = 0` in SQL).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from datetime import timedelta

from storage import vectors
from storage.clock import from_iso, now_iso
from storage.db import Connection
from storage.fulltext import bm25_matches
from storage.postgres import dialect

CONVERSATION_GAP = timedelta(hours=2)  # a longer silence starts a new conversation
CONTEXT_CHARS = 2000  # how much of each neighbour goes into a message's context
TEXT_WEIGHT, CONTEXT_WEIGHT = 1.0, 0.3  # BM25 column weights (LoCoMo dev: +1.5-2 points R@10)

COLUMNS = (
    "id, role, kind, content, tool_calls, tool_call_id, tool_name, search_text, created_at, in_context, "
    "speaker, turn, conversation_id, private"
)


@dataclass(frozen=True)
class Message:
    id: int
    role: str
    kind: str
    content: str
    tool_calls: str | None
    tool_call_id: str | None
    tool_name: str | None
    search_text: str
    created_at: str
    in_context: bool
    speaker: str = ""
    turn: int | None = None
    conversation_id: int | None = None
    private: bool = True


@dataclass(frozen=True)
class Position:
    """Where a searchable message sits: its turn number, speaker and time (for ranking)."""

    id: int
    turn: int
    speaker: str
    created_at: str


def _row(row: tuple[object, ...]) -> Message:
    values = list(row)
    values[9] = bool(values[9])
    values[13] = bool(values[13])
    return Message(*values)  # type: ignore[arg-type]


def append(
    conn: Connection,
    agent_id: int,
    role: str,
    kind: str,
    content: str,
    *,
    tool_calls: str | None = None,
    tool_call_id: str | None = None,
    tool_name: str | None = None,
    search_text: str = "",
    embedding: bytes | None = None,
    created_at: str | None = None,
    in_context: bool = True,
    speaker: str = "",
    conversation_id: int | None = None,
    private: bool = True,
    source_key: str | None = None,
) -> Message:
    """Store one message. A searchable one gets the next turn number and shares words with the
    searchable message before it when both were said in the same conversation within
    CONVERSATION_GAP (so a public message never indexes words said in private)."""
    created_at = created_at or now_iso()
    turn, context = None, ""
    if search_text:
        previous = conn.execute(
            "SELECT id, turn, search_text, created_at, conversation_id, private FROM messages "
            "WHERE agent_id = ? AND turn IS NOT NULL ORDER BY turn DESC LIMIT 1",
            (agent_id,),
        ).fetchone()
        turn = previous[1] + 1 if previous else 1
        if (
            previous
            and previous[4] == conversation_id
            and bool(previous[5]) == private
            and abs(from_iso(created_at) - from_iso(previous[3])) <= CONVERSATION_GAP
        ):
            context = previous[2][:CONTEXT_CHARS]
            conn.execute(
                "UPDATE messages SET context = ltrim(context || char(10) || ?, char(10)) WHERE id = ?",
                (search_text[:CONTEXT_CHARS], previous[0]),
            )
    message = Message(
        0,
        role,
        kind,
        content,
        tool_calls,
        tool_call_id,
        tool_name,
        search_text,
        created_at,
        in_context,
        speaker,
        turn,
        conversation_id,
        private,
    )
    stored = astuple(message)[1:]  # the columns of COLUMNS after id, in order
    cursor = conn.execute(
        f"INSERT INTO messages (agent_id, {COLUMNS.removeprefix('id, ')}, context, public_in_context, "
        f"source_key) VALUES ({', '.join('?' * (len(stored) + 4))})",
        (agent_id, *stored, context, in_context and not private, source_key or None),
    )
    message = replace(message, id=int(cursor.lastrowid))
    if embedding is not None and search_text:
        vectors.put(conn, "messages_vec", agent_id, message.id, embedding, private)
    return message


def _view(public_only: bool) -> str:
    """The column that says a message is in the queue of the private or the public view."""
    return "public_in_context" if public_only else "in_context"


def in_context(conn: Connection, agent_id: int, public_only: bool = False) -> list[Message]:
    """The agent's FIFO queue, oldest first: every message in private, public ones in public."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE agent_id = ? AND {_view(public_only)} = 1 ORDER BY id",
        (agent_id,),
    )
    return [_row(row) for row in rows]


def evict(conn: Connection, agent_id: int, through_id: int, public_only: bool = False) -> int:
    """Take messages up to `through_id` out of one view's queue (they stay in recall memory)."""
    column = _view(public_only)
    cursor = conn.execute(
        f"UPDATE messages SET {column} = 0 WHERE agent_id = ? AND {column} = 1 AND id <= ?",
        (agent_id, through_id),
    )
    return int(cursor.rowcount)


def retire(conn: Connection, agent_id: int, kind: str, public_only: bool = False) -> int:
    """Take every message of `kind` (e.g. stale warnings) out of one view's queue."""
    column = _view(public_only)
    cursor = conn.execute(
        f"UPDATE messages SET {column} = 0 WHERE agent_id = ? AND {column} = 1 AND kind = ?",
        (agent_id, kind),
    )
    return int(cursor.rowcount)


def count(conn: Connection, agent_id: int) -> int:
    """How many messages this agent has (a counter kept by triggers, not a scan)."""
    row = conn.execute("SELECT message_count FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return int(row[0]) if row else 0


def _scope(public_only: bool) -> str:
    return " AND private = 0" if public_only else ""


def get_many(conn: Connection, agent_id: int, ids: list[int], public_only: bool = False) -> list[Message]:
    """These messages of this agent (others' ids are ignored), in the order of `ids`."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE agent_id = ? AND id IN ({marks}){_scope(public_only)}",
        (agent_id, *ids),
    )
    found = {row[0]: _row(row) for row in rows}
    return [found[i] for i in ids if i in found]


def text_matches(
    conn: Connection,
    agent_id: int,
    query: str,
    limit: int,
    public_only: bool = False,
    context_weight: float = CONTEXT_WEIGHT,
    ids: tuple[int, int] | None = None,
) -> list[tuple[int, float]]:
    """Searchable messages of this agent matching words of `query`, best BM25 first: (id, score);
    with `ids` (first, last), only messages in that id range."""
    weights = (TEXT_WEIGHT, context_weight)
    return bm25_matches(conn, "messages", agent_id, query, limit, weights, public_only=public_only, ids=ids)


def nearest(
    conn: Connection, agent_id: int, vector: bytes, k: int, public_only: bool = False
) -> list[tuple[int, float]]:
    return vectors.nearest(conn, "messages_vec", agent_id, vector, k, public_only)


def nearest_among(
    conn: Connection, agent_id: int, vector: bytes, ids: list[int], public_only: bool = False
) -> list[tuple[int, float]]:
    """(id, cosine distance) of these messages of this agent, nearest first: sqlite-vec's KNN
    over the agent's partition, limited to these rowids (at most vector_cache.MAX_K of them)."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    if dialect(conn) == "postgres":
        rows = conn.execute(
            f"SELECT rowid, embedding <=> ?::vector AS distance FROM messages_vec WHERE agent_id = ? "
            f"AND rowid IN ({marks}){_scope(public_only)} ORDER BY distance",
            (vectors.as_parameter(conn, vector), agent_id, *ids),
        )
        return [(int(rowid), float(distance)) for rowid, distance in rows]
    rows = conn.execute(
        f"SELECT rowid, distance FROM messages_vec WHERE embedding MATCH ? AND k = ? AND agent_id = ? "
        f"AND rowid IN ({marks}){_scope(public_only)} ORDER BY distance",
        (vector, len(ids), agent_id, *ids),
    )
    return [(int(rowid), float(distance)) for rowid, distance in rows]


def searchable_in(
    conn: Connection, agent_id: int, start: str, end: str, limit: int, public_only: bool = False
) -> list[int]:
    """Ids of this agent's searchable messages with start <= created_at < end (UTC ISO), oldest
    first, at most `limit` (an index range over (agent_id, created_at))."""
    rows = conn.execute(
        "SELECT id FROM messages WHERE agent_id = ? AND created_at >= ? AND created_at < ? "
        f"AND turn IS NOT NULL{_scope(public_only)} ORDER BY created_at LIMIT ?",
        (agent_id, start, end, limit),
    )
    return [int(i) for (i,) in rows]


def speakers(conn: Connection, agent_id: int) -> list[str]:
    """The names of everyone who has spoken in this agent's messages."""
    rows = conn.execute("SELECT name FROM speakers WHERE agent_id = ? ORDER BY name", (agent_id,))
    return [str(name) for (name,) in rows]


def positions(conn: Connection, agent_id: int, ids: list[int], public_only: bool = False) -> list[Position]:
    """Turn, speaker and time of these searchable messages of this agent (others' ids are ignored)."""
    return _positions(conn, agent_id, "id", ids, public_only)


def at_turns(conn: Connection, agent_id: int, turns: list[int], public_only: bool = False) -> list[Position]:
    """The searchable messages of this agent with these turn numbers."""
    return _positions(conn, agent_id, "turn", turns, public_only)


def _positions(
    conn: Connection, agent_id: int, column: str, keys: list[int], public_only: bool
) -> list[Position]:
    found: list[Position] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT id, turn, speaker, created_at FROM messages "
            f"WHERE agent_id = ? AND turn IS NOT NULL AND {column} IN ({marks}){_scope(public_only)}",
            (agent_id, *chunk),
        )
        found.extend(Position(int(i), int(t), str(s), str(c)) for i, t, s, c in rows)
    return found


def searchable_between(
    conn: Connection,
    agent_id: int,
    start: str,
    end: str,
    limit: int,
    offset: int,
    public_only: bool = False,
) -> tuple[list[Message], int]:
    """Searchable messages with start <= created_at < end (UTC ISO), oldest first, and their total."""
    where = "agent_id = ? AND search_text != '' AND created_at >= ? AND created_at < ?" + _scope(public_only)
    total = conn.execute(f"SELECT count(*) FROM messages WHERE {where}", (agent_id, start, end))
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM messages WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
        (agent_id, start, end, limit, offset),
    )
    return [_row(row) for row in rows], int(total.fetchone()[0])


def searchable_texts(
    conn: Connection, agent_id: int, after_id: int, limit: int
) -> list[tuple[int, str, bool]]:
    """(id, search_text, private) of this agent's searchable messages after `after_id`, for
    re-embedding."""
    rows = conn.execute(
        "SELECT id, search_text, private FROM messages WHERE agent_id = ? AND id > ? AND search_text != '' "
        "ORDER BY id LIMIT ?",
        (agent_id, after_id, limit),
    )
    return [(int(i), str(text), bool(private)) for i, text, private in rows]


def mark_unembedded(conn: Connection, agent_id: int, message_id: int) -> None:
    """Remember that this message was stored without its vector (the embedder failed)."""
    conn.execute(
        "INSERT OR IGNORE INTO unembedded (message_id, agent_id) VALUES (?, ?)", (message_id, agent_id)
    )


def unembedded(conn: Connection, agent_id: int, limit: int = 256) -> list[tuple[int, str, bool]]:
    """(id, search_text, private) of this agent's messages still waiting for a vector."""
    rows = conn.execute(
        "SELECT m.id, m.search_text, m.private FROM unembedded AS u JOIN messages AS m ON m.id = u.message_id "
        "WHERE u.agent_id = ? AND m.agent_id = ? ORDER BY m.id LIMIT ?",
        (agent_id, agent_id, limit),
    )
    return [(int(i), str(text), bool(private)) for i, text, private in rows]


def put_vectors(conn: Connection, agent_id: int, rows: list[tuple[int, bytes, bool]]) -> None:
    """Store vectors for messages that were waiting for them."""
    for message_id, vector, private in rows:
        vectors.put(conn, "messages_vec", agent_id, message_id, vector, private)
        conn.execute("DELETE FROM unembedded WHERE message_id = ? AND agent_id = ?", (message_id, agent_id))


def agents_unembedded(conn: Connection) -> list[int]:
    """The agents with messages waiting for a vector (at start-up; reads ids only)."""
    return [int(row[0]) for row in conn.execute("SELECT DISTINCT agent_id FROM unembedded")]
