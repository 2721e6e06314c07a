"""Deleting and re-parenting memory for real: messages, passages, vectors, full-text rows, cache.

A message lives in several places at once: its row in `messages`, its `messages_fts` entry (kept
by triggers), its vector in `messages_vec` (and maybe in the in-memory vector cache), its
neighbours' `context` column (and their FTS entries), its place in the agent's `turn` numbering
and its speaker in `speakers`. Deleting the row alone leaves its words in the neighbours' index
and its vector searchable; these functions remove or move all of it, in the caller's transaction:

- `delete_messages`, `delete_passages`: some rows of one agent;
- `delete_agent`: everything of one agent, the agent row last;
- `move_agent`: re-parent one agent's memory to another (linking a person's two accounts);
- `renumber_turns`, `rebuild_context`: recompute an agent's turn numbers ((created_at, id)
  order) and context column (the rule of `messages.append`), e.g. after importing older messages.

Every function is scoped by agent id: ids of other agents are ignored. Counters
(`agents.message_count`, `passage_count`) are kept by the schema's triggers. Freed pages are not
overwritten here (no secure_delete or VACUUM).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

from storage import agents, vectors
from storage.blocks import Block
from storage.clock import from_iso
from storage.db import Connection
from storage.errors import AgentNotFoundError, StorageError
from storage.messages import CONTEXT_CHARS, CONVERSATION_GAP
from storage.postgres import dialect

# Tables with an `agent_id` column that `delete_agent` and `move_agent` handle one by one.
HANDLED = frozenset({"agents", "messages", "passages", "blocks", "speakers"})


@dataclass(frozen=True)
class Deleted:
    """What `delete_agent` removed."""

    messages: int
    passages: int
    vectors: int


@dataclass(frozen=True)
class Moved:
    """What `move_agent` re-parented, and what it dropped for the caller to keep or not: the
    source agent's blocks and its two views' recursive summaries."""

    messages: int
    passages: int
    vectors: int
    identities: int
    blocks: tuple[Block, ...]
    summary: str
    public_summary: str


def _owned(conn: Connection, table: str, agent_id: int, ids: list[int]) -> list[int]:
    """Those of `ids` that are rows of `table` belonging to this agent."""
    rows = conn.execute(
        f"SELECT id FROM {table} WHERE agent_id = ? AND id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (agent_id, json.dumps([int(i) for i in ids])),
    )
    return [int(i) for (i,) in rows]


def delete_messages(conn: Connection, agent_id: int, ids: list[int]) -> int:
    """Delete these messages of this agent, with their vectors, FTS rows, unembedded and inbox
    rows; renumber the agent's turns and rebuild its neighbours' context. How many went."""
    found = _owned(conn, "messages", agent_id, ids)
    if not found:
        return 0
    vectors.delete(conn, "messages_vec", agent_id, found)
    listed = json.dumps(found)
    for table, column in (("unembedded", "message_id"), ("inbox", "message_id"), ("messages", "id")):
        conn.execute(
            f"DELETE FROM {table} WHERE agent_id = ? AND {column} IN (SELECT value FROM json_each(?))",
            (agent_id, listed),
        )
    renumber_turns(conn, agent_id)
    rebuild_context(conn, agent_id)
    _refresh_speakers(conn, agent_id)
    return len(found)


def delete_passages(conn: Connection, agent_id: int, ids: list[int]) -> int:
    """Delete these passages of this agent, with their vectors and FTS rows. How many went."""
    found = _owned(conn, "passages", agent_id, ids)
    if not found:
        return 0
    vectors.delete(conn, "passages_vec", agent_id, found)
    conn.execute(
        "DELETE FROM passages WHERE agent_id = ? AND id IN (SELECT value FROM json_each(?))",
        (agent_id, json.dumps(found)),
    )
    agents.mark_memory_updated(conn, agent_id)
    return len(found)


def _agent_tables(conn: Connection) -> list[str]:
    """Every ordinary table with an `agent_id` column, except those handled one by one."""
    if dialect(conn) == "postgres":
        from storage.postgres_schema import AGENT_TABLES

        return sorted(name for name in AGENT_TABLES if name not in HANDLED and name != "agents")
    rows = conn.execute(
        "SELECT m.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c "
        "WHERE m.type = 'table' AND c.name = 'agent_id' AND m.sql NOT LIKE 'CREATE VIRTUAL TABLE%' "
        "ORDER BY m.name"
    )
    return [str(name) for (name,) in rows if name not in HANDLED]


def delete_agent(conn: Connection, agent_id: int) -> Deleted:
    """Delete everything of this agent: messages, passages, every vector in its partitions, FTS
    rows, blocks, speakers, and its rows of every other table with an `agent_id` column
    (identities, inbox, outbox, unembedded, ...), then its row.
    Nothing of another agent is touched; deleting an agent that is gone deletes nothing."""
    removed = sum(vectors.delete_all(conn, table, agent_id) for table in vectors.TABLES)
    counts = [
        int(conn.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,)).rowcount)
        for table in ("messages", "passages")
    ]
    for table in [*_agent_tables(conn), "blocks", "speakers"]:
        conn.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
    conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
    return Deleted(counts[0], counts[1], removed)


def _move_vectors(conn: Connection, table: str, from_agent: int, to_agent: int, source: str) -> int:
    """Re-insert the vectors of `from_agent`'s rows of `source` under `to_agent` (vec0 cannot
    update a partition key), keeping `private`; drop any other vector of `from_agent`."""
    if not vectors.tables_exist(conn):
        return 0
    for agent_id in (from_agent, to_agent):  # cheaper to read again than to follow row by row
        vectors.invalidate(conn, table, agent_id)
    if dialect(conn) == "postgres":  # a plain column here, unlike vec0's partition key
        moved = conn.execute(
            f"UPDATE {table} SET agent_id = ? WHERE agent_id = ? AND rowid IN "
            f"(SELECT id FROM {source} WHERE agent_id = ?)",
            (to_agent, from_agent, from_agent),
        ).rowcount
        conn.execute(f"DELETE FROM {table} WHERE agent_id = ?", (from_agent,))
        return int(moved)
    ids = [int(i) for (i,) in conn.execute(f"SELECT id FROM {source} WHERE agent_id = ?", (from_agent,))]
    moved = 0
    for start in range(0, len(ids), 500):
        found = [
            (rowid, row)
            for rowid in ids[start : start + 500]
            if (row := conn.execute(_VECTOR.format(table), (rowid, from_agent)).fetchone()) is not None
        ]
        vectors.delete(conn, table, from_agent, [rowid for rowid, _ in found])
        for rowid, (private, embedding) in found:
            vectors.put(conn, table, to_agent, rowid, bytes(embedding), bool(private))
        moved += len(found)
    vectors.delete_all(conn, table, from_agent)
    vectors.invalidate(conn, table, to_agent)
    return moved


_VECTOR = "SELECT private, embedding FROM {} WHERE rowid = ? AND agent_id = ?"


def _existing(conn: Connection, agent_id: int) -> tuple[str, str]:
    """This agent's two summaries; raises if there is no such agent."""
    row = conn.execute("SELECT summary, public_summary FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is None:
        raise AgentNotFoundError(f"There is no agent {agent_id} (it may have been forgotten).")
    return str(row[0]), str(row[1])


def _take_blocks(conn: Connection, agent_id: int) -> tuple[Block, ...]:
    rows = conn.execute(
        "SELECT label, description, value, char_limit, updated_at, scope FROM blocks "
        "WHERE agent_id = ? ORDER BY scope, rowid",
        (agent_id,),
    ).fetchall()
    conn.execute("DELETE FROM blocks WHERE agent_id = ?", (agent_id,))
    return tuple(Block(*row) for row in rows)


def move_agent(conn: Connection, from_agent: int, to_agent: int) -> Moved:
    """Make `from_agent`'s memory `to_agent`'s, then delete `from_agent`.

    Messages and passages change owner (the FTS update trigger rewrites their owner tokens, the
    counter triggers move the counts), vectors are re-inserted in `to_agent`'s partitions, the
    cache forgets both agents, `to_agent`'s turns are renumbered in time order and its context
    rebuilt, speakers merged; its rows of every other table with an `agent_id` column
    (identities, inbox, outbox, unembedded, ...) are re-pointed. Moved messages leave both context queues (they stay in recall memory), so two
    conversations' queues are never interleaved. `from_agent`'s blocks and summaries are
    deleted and returned."""
    if from_agent == to_agent:
        raise StorageError(f"Cannot move agent {from_agent} into itself.")
    summary, public_summary = _existing(conn, from_agent)
    _existing(conn, to_agent)
    moved_vectors = sum(
        _move_vectors(conn, table, from_agent, to_agent, vectors.SOURCES[table]) for table in vectors.TABLES
    )
    counts = [
        int(conn.execute(sql, (to_agent, from_agent)).rowcount)
        for sql in (
            "UPDATE messages SET agent_id = ?, in_context = 0, public_in_context = 0 WHERE agent_id = ?",
            "UPDATE passages SET agent_id = ? WHERE agent_id = ?",
            "UPDATE identities SET agent_id = ? WHERE agent_id = ?",
        )
    ]
    for table in _agent_tables(conn):  # identities (done above), inbox, outbox, unembedded, ...
        if dialect(conn) == "postgres":  # no UPDATE OR IGNORE: the one key that can clash is heartbeats'
            if table == "heartbeats":
                conn.execute("DELETE FROM heartbeats WHERE agent_id = ?", (from_agent,))
                continue
            conn.execute(f"UPDATE {table} SET agent_id = ? WHERE agent_id = ?", (to_agent, from_agent))
        else:
            conn.execute(
                f"UPDATE OR IGNORE {table} SET agent_id = ? WHERE agent_id = ?", (to_agent, from_agent)
            )
        conn.execute(f"DELETE FROM {table} WHERE agent_id = ?", (from_agent,))  # key clashes
    conn.execute("DELETE FROM speakers WHERE agent_id = ?", (from_agent,))
    blocks = _take_blocks(conn, from_agent)
    conn.execute("DELETE FROM agents WHERE id = ?", (from_agent,))
    renumber_turns(conn, to_agent)
    rebuild_context(conn, to_agent)
    _refresh_speakers(conn, to_agent)
    if counts[1]:
        agents.mark_memory_updated(conn, to_agent)
    return Moved(counts[0], counts[1], moved_vectors, counts[2], blocks, summary, public_summary)


def renumber_turns(conn: Connection, agent_id: int) -> int:
    """Number this agent's searchable messages 1, 2, 3... in (created_at, id) order (NULL for the
    others); rows already right are not written. How many changed."""
    changed = conn.execute(
        "UPDATE messages SET turn = ranked.n FROM ("
        "SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM messages "
        "WHERE agent_id = ? AND search_text != ''"
        ") AS ranked WHERE messages.id = ranked.id AND messages.turn IS DISTINCT FROM ranked.n",
        (agent_id,),
    ).rowcount
    cleared = conn.execute(
        "UPDATE messages SET turn = NULL WHERE agent_id = ? AND search_text = '' AND turn IS NOT NULL",
        (agent_id,),
    ).rowcount
    return int(changed) + int(cleared)


@dataclass(frozen=True)
class _Row:
    id: int
    text: str
    created_at: str
    conversation_id: int | None
    private: bool
    context: str


def _linked(a: _Row, b: _Row) -> bool:
    """Whether two neighbouring searchable messages share words (the rule of messages.append)."""
    return (
        a.conversation_id == b.conversation_id
        and a.private == b.private
        and abs(from_iso(b.created_at) - from_iso(a.created_at)) <= CONVERSATION_GAP
    )


def _context(previous: _Row | None, current: _Row, following: _Row | None) -> str:
    """What messages.append leaves in `current.context`: the previous message's text, then (once
    it arrives) the next one's after a newline, leading newlines trimmed."""
    before = previous.text[:CONTEXT_CHARS] if previous and _linked(previous, current) else ""
    if following is None or not _linked(current, following):
        return before
    return (before + "\n" + following.text[:CONTEXT_CHARS]).lstrip("\n")


def _searchable(conn: Connection, agent_id: int) -> Iterator[_Row]:
    rows = conn.execute(
        "SELECT id, search_text, created_at, conversation_id, private, context FROM messages "
        "WHERE agent_id = ? AND turn IS NOT NULL ORDER BY turn, id",
        (agent_id,),
    )
    for i, text, created_at, conversation_id, private, context in rows:
        yield _Row(int(i), str(text), str(created_at), conversation_id, bool(private), str(context))


def rebuild_context(conn: Connection, agent_id: int) -> int:
    """Recompute the `context` column of this agent's messages from their neighbours in turn order
    (call `renumber_turns` first after an import), by the rule of `messages.append`; rows already
    right are not written (each write re-indexes the row). How many changed."""
    changes: list[tuple[str, int, int]] = []
    previous: _Row | None = None
    current: _Row | None = None
    for following in chain(_searchable(conn, agent_id), [None]):
        if current is not None:
            text = _context(previous, current, following)
            if text != current.context:
                changes.append((text, current.id, agent_id))
        previous, current = current, following
    conn.executemany("UPDATE messages SET context = ? WHERE id = ? AND agent_id = ?", changes)
    cleared = conn.execute(
        "UPDATE messages SET context = '' WHERE agent_id = ? AND turn IS NULL AND context != ''", (agent_id,)
    ).rowcount
    return len(changes) + int(cleared)


def _refresh_speakers(conn: Connection, agent_id: int) -> None:
    """Make `speakers` hold exactly the names found in this agent's messages."""
    conn.execute(
        "DELETE FROM speakers WHERE agent_id = ? AND name NOT IN "
        "(SELECT speaker FROM messages WHERE agent_id = ?)",
        (agent_id, agent_id),
    )
    conn.execute(
        "INSERT OR IGNORE INTO speakers (agent_id, name) "
        "SELECT DISTINCT agent_id, speaker FROM messages WHERE agent_id = ? AND speaker != ''",
        (agent_id,),
    )
