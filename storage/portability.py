"""One agent's memory as plain rows, out and back in: what `membot export` and `import` move.

`dump` reads everything of one agent (its row, identities, blocks, messages, passages and the
conversations they point at) as dicts of plain values, in time order; vectors are left out (they
belong to an embedder, and the importing side embeds again). `restore` writes such rows as a new
agent inside the caller's transaction: messages keep their dates, speakers, roles and context
flags, then turns and neighbour context are recomputed (`lifecycle`), and the caller adds vectors.
Every read is scoped by agent id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from storage import conversations, lifecycle
from storage.clock import now_iso
from storage.db import Connection
from storage.errors import StorageError

AGENT_FIELDS = (
    "display_name",
    "timezone",
    "summary",
    "summary_covers",
    "public_summary",
    "public_summary_covers",
    "created_at",
    "last_active_at",
)
IDENTITY_FIELDS = ("platform", "platform_user_id", "display_name", "created_at")
BLOCK_FIELDS = ("scope", "label", "description", "value", "char_limit", "updated_at")
MESSAGE_FIELDS = (
    "role",
    "kind",
    "content",
    "tool_calls",
    "tool_call_id",
    "tool_name",
    "search_text",
    "speaker",
    "created_at",
    "private",
    "in_context",
    "public_in_context",
)
PASSAGE_FIELDS = ("content", "source", "created_at", "private", "position", "section")
DOCUMENT_FIELDS = ("name", "origin", "kind", "sha256", "size", "passage_count", "private", "created_at")
REMINDER_FIELDS = (
    "platform",
    "private",
    "text",
    "due_at",
    "recurrence",
    "timezone",
    "state",
    "fired_count",
    "missed_count",
    "last_fired_at",
    "created_at",
)
HEARTBEAT_FIELDS = ("enabled", "paused_until")
CONVERSATION_FIELDS = ("platform", "channel_id", "thread_id", "private", "name", "place")
BOOLEANS = {"private", "in_context", "public_in_context", "enabled"}


def _rows(conn: Connection, sql: str, fields: tuple[str, ...], *args: object) -> list[dict[str, Any]]:
    out = []
    for row in conn.execute(sql, args):
        item = dict(zip(fields, row, strict=True))
        for name in BOOLEANS & item.keys():
            item[name] = bool(item[name])
        out.append(item)
    return out


def dump(conn: Connection, agent_id: int) -> dict[str, Any]:
    """Everything of this agent as plain values (raises if there is no such agent)."""
    found_agent = _rows(
        conn, f"SELECT {', '.join(AGENT_FIELDS)} FROM agents WHERE id = ?", AGENT_FIELDS, agent_id
    )
    if not found_agent:
        raise StorageError(f"There is no agent {agent_id} to export.")
    agent = found_agent[0]
    refs: dict[int, int] = {}  # conversation id -> its index in the file
    used = [
        int(i)
        for (i,) in conn.execute(
            " UNION ".join(
                f"SELECT DISTINCT conversation_id FROM {table} WHERE agent_id = ? AND conversation_id IS NOT NULL"
                for table in ("messages", "passages", "documents", "reminders")
            ),
            (agent_id,) * 4,
        )
    ]
    found: list[dict[str, Any]] = []
    for conversation_id in sorted(used):
        row = conversations.get(conn, conversation_id)
        if row is not None:
            refs[conversation_id] = len(found)
            found.append({name: getattr(row, name) for name in CONVERSATION_FIELDS})

    def with_ref(sql: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        items = []
        for row in conn.execute(sql, (agent_id,)):
            *values, conversation_id = row
            item = dict(zip(fields, values, strict=True))
            for name in BOOLEANS & item.keys():
                item[name] = bool(item[name])
            item["conversation"] = refs.get(conversation_id) if conversation_id is not None else None
            items.append(item)
        return items

    document_ids = [
        int(i)
        for (i,) in conn.execute("SELECT id FROM documents WHERE agent_id = ? ORDER BY id", (agent_id,))
    ]
    document_refs = {document_id: n for n, document_id in enumerate(document_ids)}
    passages = with_ref(
        f"SELECT {', '.join(PASSAGE_FIELDS)}, document_id, conversation_id FROM passages WHERE agent_id = ? "
        "ORDER BY created_at, id",
        (*PASSAGE_FIELDS, "document"),
    )
    for passage in passages:
        passage["document"] = (
            document_refs.get(passage["document"]) if passage["document"] is not None else None
        )
    heartbeat = _rows(
        conn,
        f"SELECT {', '.join(HEARTBEAT_FIELDS)} FROM heartbeats WHERE agent_id = ?",
        HEARTBEAT_FIELDS,
        agent_id,
    )

    return {
        "agent": agent,
        "identities": _rows(
            conn,
            f"SELECT {', '.join(IDENTITY_FIELDS)} FROM identities WHERE agent_id = ? ORDER BY created_at, platform",
            IDENTITY_FIELDS,
            agent_id,
        ),
        "conversations": found,
        "blocks": _rows(
            conn,
            f"SELECT {', '.join(BLOCK_FIELDS)} FROM blocks WHERE agent_id = ? ORDER BY scope, rowid",
            BLOCK_FIELDS,
            agent_id,
        ),
        "messages": with_ref(
            f"SELECT {', '.join(MESSAGE_FIELDS)}, conversation_id FROM messages WHERE agent_id = ? "
            "ORDER BY created_at, id",
            MESSAGE_FIELDS,
        ),
        "documents": with_ref(
            f"SELECT {', '.join(DOCUMENT_FIELDS)}, conversation_id FROM documents WHERE agent_id = ? ORDER BY id",
            DOCUMENT_FIELDS,
        ),
        "passages": passages,
        "reminders": with_ref(
            f"SELECT {', '.join(REMINDER_FIELDS)}, conversation_id FROM reminders WHERE agent_id = ? "
            "ORDER BY created_at, id",
            REMINDER_FIELDS,
        ),
        "heartbeats": heartbeat[0] if heartbeat else {"enabled": True, "paused_until": None},
    }


def _insert(
    conn: Connection,
    table: str,
    agent_id: int,
    fields: tuple[str, ...],
    items: list[dict[str, Any]],
    refs: Callable[[dict[str, Any]], tuple[int | None, ...]],
    extra: tuple[str, ...] = (),
) -> list[int]:
    """Insert `items` as rows of this agent, each with its mapped references (`extra` columns,
    then conversation_id); their new ids, in order."""
    columns = ", ".join((*fields, *extra, "conversation_id"))
    marks = ", ".join("?" * (len(fields) + len(extra) + 1))
    sql = f"INSERT INTO {table} (agent_id, {columns}) VALUES (?, {marks})"
    return [int(conn.execute(sql, (agent_id, *(i[f] for f in fields), *refs(i))).lastrowid) for i in items]


def restore(conn: Connection, data: dict[str, Any]) -> tuple[int, list[int], list[int]]:
    """Write `data` (as `dump` makes it, already checked) as a new agent, in the caller's
    transaction. Returns the agent id and the ids of its searchable messages and passages, in
    order, for the caller to embed. Raises StorageError if an identity already has an agent."""
    identities = data["identities"]
    for identity in identities:
        taken = conn.execute(
            "SELECT agent_id FROM identities WHERE platform = ? AND platform_user_id = ?",
            (identity["platform"], identity["platform_user_id"]),
        ).fetchone()
        if taken is not None:
            raise StorageError(
                f"{identity['platform']} user {identity['platform_user_id']!r} already has memory here "
                f"(agent {taken[0]}); forget it first, or import under another --user."
            )
    agent = data["agent"]
    first = identities[0]
    cursor = conn.execute(
        f"INSERT INTO agents (platform, platform_user_id, {', '.join(AGENT_FIELDS)}, memory_updated_at) "
        f"VALUES (?, ?, {', '.join('?' * len(AGENT_FIELDS))}, ?)",
        (first["platform"], first["platform_user_id"], *(agent[f] for f in AGENT_FIELDS), now_iso()),
    )
    agent_id = int(cursor.lastrowid)
    conn.executemany(
        f"INSERT INTO identities (agent_id, {', '.join(IDENTITY_FIELDS)}) VALUES (?, ?, ?, ?, ?)",
        [(agent_id, *(i[f] for f in IDENTITY_FIELDS)) for i in identities],
    )
    conn.executemany(
        f"INSERT INTO blocks (agent_id, {', '.join(BLOCK_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(agent_id, *(b[f] for f in BLOCK_FIELDS)) for b in data["blocks"]],
    )
    ids = [conversations.ensure(conn, *(c[f] for f in CONVERSATION_FIELDS)) for c in data["conversations"]]

    def ref(item: dict[str, Any]) -> int | None:
        index = item.get("conversation")
        return None if index is None else ids[index]

    document_ids = _insert(
        conn, "documents", agent_id, DOCUMENT_FIELDS, data["documents"], lambda d: (ref(d),)
    )

    def document(item: dict[str, Any]) -> int | None:
        index = item.get("document")
        return None if index is None else document_ids[index]

    message_ids = _insert(conn, "messages", agent_id, MESSAGE_FIELDS, data["messages"], lambda m: (ref(m),))
    passage_ids = _insert(
        conn,
        "passages",
        agent_id,
        PASSAGE_FIELDS,
        data["passages"],
        lambda p: (document(p), ref(p)),
        extra=("document_id",),
    )
    conn.executemany(
        f"INSERT INTO reminders (agent_id, {', '.join(REMINDER_FIELDS)}, conversation_id) "
        f"VALUES (?, {', '.join('?' * len(REMINDER_FIELDS))}, ?)",
        [(agent_id, *(r[f] for f in REMINDER_FIELDS), ref(r)) for r in data["reminders"]],
    )
    beat = data["heartbeats"]
    conn.execute(
        "UPDATE heartbeats SET enabled = ?, paused_until = ? WHERE agent_id = ?",
        (int(bool(beat.get("enabled", True))), beat.get("paused_until"), agent_id),
    )
    lifecycle.renumber_turns(conn, agent_id)
    lifecycle.rebuild_context(conn, agent_id)
    conn.execute(
        "INSERT OR IGNORE INTO speakers (agent_id, name) "
        "SELECT DISTINCT agent_id, speaker FROM messages WHERE agent_id = ? AND speaker != ''",
        (agent_id,),
    )
    searchable = [
        message_id
        for message_id, message in zip(message_ids, data["messages"], strict=True)
        if message["search_text"]
    ]
    return agent_id, searchable, passage_ids
