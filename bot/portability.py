"""A person's memory as one JSON file: export, check, import (into a fresh agent, here or elsewhere).

The file (schema `membot-export`, version 1):

    {"format": "membot-export", "version": 1, "exported_at": "2026-12-01T10:00:00.000000Z",
     "sha256": "<hex of the canonical JSON of `memory`>",
     "memory": {
        "agent": {display_name, timezone, summary, summary_covers, public_summary,
                  public_summary_covers, created_at, last_active_at},
        "identities": [{platform, platform_user_id, display_name, created_at}],
        "conversations": [{platform, channel_id, thread_id, private, name, place}],
        "blocks": [{scope, label, description, value, char_limit, updated_at}],
        "messages": [{role, kind, content, tool_calls, tool_call_id, tool_name, search_text,
                      speaker, created_at, private, in_context, public_in_context, conversation}],
        "documents": [{name, origin, kind, sha256, size, passage_count, private, created_at,
                       conversation}],
        "passages": [{content, source, created_at, private, position, section, document,
                      conversation}],
        "reminders": [{platform, private, text, due_at, recurrence, timezone, state, fired_count,
                       missed_count, last_fired_at, created_at, conversation}],
        "heartbeats": {enabled, paused_until}}}

Timestamps are ISO 8601 in UTC; `conversation` is an index into `conversations` (or null),
`document` an index into `documents` (or null, for a passage the agent stored itself);
messages and passages are in time order. Vectors are not in the file: the importing side embeds
again with its own embedder. A file of another format or version, or whose checksum does not
match (damaged or edited), is refused before anything is written; an import is one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from bot.embedding import Embedder, to_blob
from bot.errors import InvalidInput
from bot.memory import EMBED_MAX_TOKENS, MAX_INDEXED_CHARS
from bot.tokens import truncate
from storage import portability, vectors
from storage.clock import now_iso
from storage.db import Connection, Database

FORMAT = "membot-export"
VERSION = 1
EMBED_BATCH = 256
SECTIONS = {
    "agent": dict,
    "identities": list,
    "conversations": list,
    "blocks": list,
    "messages": list,
    "documents": list,
    "passages": list,
    "reminders": list,
    "heartbeats": dict,
}


def _digest(memory: dict[str, Any]) -> str:
    canonical = json.dumps(memory, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def export(db: Database, agent_id: int) -> dict[str, Any]:
    """The export document of one agent (read in one transaction)."""
    memory = await db.read(portability.dump, agent_id)
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": now_iso(),
        "sha256": _digest(memory),
        "memory": memory,
    }


def parse(text: str | bytes) -> dict[str, Any]:
    """The `memory` of an export file, checked; InvalidInput naming what is wrong."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"This is not a membot export file (not JSON: {exc}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInput("This is not a membot export file (its 'format' is not membot-export).")
    if document.get("version") != VERSION:
        raise InvalidInput(
            f"This export file is version {document.get('version')!r}; this membot reads version {VERSION}. "
            "Import it with the membot version that wrote it, or export again from there."
        )
    memory = document.get("memory")
    if not isinstance(memory, dict) or any(not isinstance(memory.get(k), t) for k, t in SECTIONS.items()):
        raise InvalidInput("This export file is damaged: its 'memory' section is incomplete.")
    if document.get("sha256") != _digest(memory):
        raise InvalidInput("This export file is damaged or was edited: its checksum does not match.")
    _check_shape(memory)
    return memory


def _check_shape(memory: dict[str, Any]) -> None:
    fields = {
        "identities": portability.IDENTITY_FIELDS,
        "blocks": portability.BLOCK_FIELDS,
        "messages": portability.MESSAGE_FIELDS,
        "passages": portability.PASSAGE_FIELDS,
        "conversations": portability.CONVERSATION_FIELDS,
        "documents": portability.DOCUMENT_FIELDS,
        "reminders": portability.REMINDER_FIELDS,
    }
    missing = [f for f in portability.AGENT_FIELDS if f not in memory["agent"]]
    for section, names in fields.items():
        for item in memory[section]:
            if not isinstance(item, dict):
                missing.append(section)
                break
            missing += [f"{section}.{f}" for f in names if f not in item]
    count = len(memory["conversations"])
    for item in memory["messages"] + memory["passages"] + memory["documents"] + memory["reminders"]:
        ref = item.get("conversation") if isinstance(item, dict) else None
        if ref is not None and not (isinstance(ref, int) and 0 <= ref < count):
            missing.append("a conversation reference")
            break
    for item in memory["passages"]:
        ref = item.get("document") if isinstance(item, dict) else None
        if ref is not None and not (isinstance(ref, int) and 0 <= ref < len(memory["documents"])):
            missing.append("a document reference")
            break
    for item in memory["reminders"]:
        if isinstance(item, dict) and item.get("conversation") is None:
            missing.append("a reminder's conversation")
            break
    if not memory["identities"]:
        missing.append("identities")
    if missing:
        raise InvalidInput(f"This export file is damaged: missing {', '.join(sorted(set(missing))[:5])}.")


async def restore(
    db: Database,
    embedder: Embedder,
    memory: dict[str, Any],
    identity: tuple[str, str] | None = None,
    before: Callable[[Connection], object] | None = None,
) -> int:
    """Import checked `memory` as a new agent (under `identity` = (platform, user id) instead of
    the file's accounts, if given), searchable at once; its id. `before(conn)` runs first in the
    same transaction (an exception from it writes nothing)."""
    if identity is not None:
        platform, user_id = identity
        name = memory["agent"].get("display_name", "")
        memory = {
            **memory,
            "identities": [
                {
                    "platform": platform,
                    "platform_user_id": user_id,
                    "display_name": name,
                    "created_at": now_iso(),
                }
            ],
        }
    texts = [m["search_text"][:MAX_INDEXED_CHARS] for m in memory["messages"] if m["search_text"]]
    texts += [p["content"][:MAX_INDEXED_CHARS] for p in memory["passages"]]
    found = []
    for start in range(0, len(texts), EMBED_BATCH):
        batch = texts[start : start + EMBED_BATCH]
        found += await embedder.embed([truncate(t, EMBED_MAX_TOKENS) for t in batch])
    blobs = [to_blob(v) for v in found]

    def write(conn: Connection) -> int:
        if before is not None:
            before(conn)
        agent_id, message_ids, passage_ids = portability.restore(conn, memory)
        private = [bool(m["private"]) for m in memory["messages"] if m["search_text"]]
        private += [bool(p["private"]) for p in memory["passages"]]
        tables = ["messages_vec"] * len(message_ids) + ["passages_vec"] * len(passage_ids)
        for table, rowid, blob, is_private in zip(
            tables, message_ids + passage_ids, blobs, private, strict=True
        ):
            vectors.put(conn, table, agent_id, rowid, blob, is_private)
        return agent_id

    return await db.run(write)
