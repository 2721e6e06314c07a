"""Loading a document into an agent's archival memory: read, extract, chunk, embed, store once.

`load` is what `membot load` and a chat attachment share. It is idempotent on the file's bytes:
the same sha256 in the view being loaded into is stored once ("unchanged", nothing written);
the same file (name and origin, same scope) with other bytes replaces its earlier version. The
slow parts run off the event loop (reading and PDF/HTML parsing in a thread, embedding in the
embedder's batches); the write is one transaction at the end, so a failure at any point leaves
nothing half-loaded. Bad input is one `InvalidInput` naming the file and the fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.chunking import Chunk, chunk
from bot.embedding import Embedder, make_embedder, to_blob
from bot.errors import InvalidInput
from bot.events import Conversation
from bot.extract import extract
from bot.memory import AgentMemory, Scope
from bot.reception import Reception
from bot.settings import Settings
from storage import agents, documents
from storage.db import Connection, Database
from storage.documents import Document, NewPassage

log = logging.getLogger(__name__)

MAX_BYTES = 50 * 1024 * 1024  # `membot load`'s default limit; chat uses MEMBOT_ATTACHMENT_MAX_BYTES
BATCH = 128  # passages per embedder call (and per progress report)

Progress = Callable[[int, int], None]  # (passages embedded so far, passages in all)


@dataclass(frozen=True)
class Loaded:
    document: Document
    status: str  # "loaded", "replaced" (an earlier version went) or "unchanged" (already there)
    replaced: int = 0  # passages of the earlier version removed

    @property
    def passages(self) -> int:
        return self.document.passages


def size_text(size: int) -> str:
    """Bytes in a few characters: 512 bytes, 12 kB, 3.4 MB."""
    if size < 1000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1000:.0f} kB"
    return f"{size / 1_000_000:.1f} MB"


def _read(path: Path, name: str, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InvalidInput(_too_large(name, size, max_bytes))
        return path.read_bytes()
    except InvalidInput:
        raise
    except IsADirectoryError:
        raise InvalidInput(f"{name} is a folder; give its files, or the folder to `membot load`.") from None
    except OSError as exc:
        raise InvalidInput(
            f"{name} cannot be read ({exc.strerror or exc}): check it exists and you may read it."
        ) from None


def _too_large(name: str, size: int, max_bytes: int) -> str:
    return (
        f"{name} is {size_text(size)}, over the {size_text(max_bytes)} I load: split it into smaller files."
    )


def _prepare(data: bytes, name: str, media_type: str) -> tuple[str, list[Chunk]]:
    extracted = extract(data, name, media_type)
    return extracted.kind, chunk(extracted.parts)


async def load(
    memory: AgentMemory,
    source: Path | bytes,
    name: str,
    *,
    origin: str = "",
    media_type: str = "",
    max_bytes: int = MAX_BYTES,
    progress: Progress | None = None,
) -> Loaded:
    """Load a file (a path, or its bytes) into this memory's archival memory, in its scope."""
    if isinstance(source, Path):
        data = await asyncio.to_thread(_read, source, name, max_bytes)
    else:
        data = source
        if len(data) > max_bytes:
            raise InvalidInput(_too_large(name, len(data), max_bytes))
    sha256 = hashlib.sha256(data).hexdigest()
    found = await memory.db.read(documents.with_content, memory.agent_id, sha256, memory.public)
    if found is not None:
        return Loaded(found, "unchanged")
    kind, chunks = await asyncio.to_thread(_prepare, data, name, media_type)
    embedded: list[bytes] = []
    for start in range(0, len(chunks), BATCH):
        batch = chunks[start : start + BATCH]
        found_vectors = await memory.embedder.embed([_embedding_text(c) for c in batch])
        embedded.extend(to_blob(v) for v in found_vectors)
        if progress is not None:
            progress(len(embedded), len(chunks))
    rows = [NewPassage(c.position, c.section, c.text, v) for c, v in zip(chunks, embedded, strict=True)]
    scope = memory.scope

    def write(conn: Connection) -> Loaded:
        again = documents.with_content(conn, memory.agent_id, sha256, memory.public)
        if again is not None:  # loaded meanwhile (the same file twice at once)
            return Loaded(again, "unchanged")
        replaced = sum(
            documents.remove(conn, memory.agent_id, old.id)
            for old in documents.same_file(conn, memory.agent_id, name, origin, scope.private)
        )
        stored = documents.store(
            conn,
            memory.agent_id,
            name,
            origin,
            kind,
            sha256,
            len(data),
            rows,
            scope.private,
            scope.conversation_id,
        )
        return Loaded(stored, "replaced" if replaced else "loaded", replaced)

    loaded = await memory.db.run(write)
    log.info(
        "agent %s: document %s %s (%d passages, %d bytes)",
        memory.agent_id,
        loaded.document.id,
        loaded.status,
        loaded.passages,
        len(data),
    )
    return loaded


def _embedding_text(c: Chunk) -> str:
    """What a passage is embedded as: its section title, then its text (the title says what it is about)."""
    return f"{c.section}\n{c.text}" if c.section else c.text


async def listing(memory: AgentMemory) -> list[Document]:
    """The documents this memory's view sees, oldest first."""
    return await memory.db.read(documents.list_for, memory.agent_id, memory.public)


async def remove(memory: AgentMemory, key: str) -> list[Document]:
    """Remove the documents called `key` (id, name or path) that this view sees; those removed."""

    def delete(conn: Connection) -> list[Document]:
        found = documents.find(conn, memory.agent_id, key, memory.public)
        for document in found:
            documents.remove(conn, memory.agent_id, document.id)
        return found

    return await memory.db.run(delete)


async def summary_line(memory: AgentMemory) -> str:
    """One line for `/memory`: the documents this view sees, with their passages."""
    found = await listing(memory)
    if not found:
        return "documents: none loaded (attach a text, Markdown, PDF or HTML file to load one)"
    shown = ", ".join(f"{d.name} ({d.passages} passages)" for d in found[-10:])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return f"documents: {len(found)} loaded: {shown}{more}"


async def open_memory(settings: Settings, platform: str, user: str, create: bool) -> AgentMemory | None:
    """For `membot load`: the database and embedder, and the memory of this account in its direct
    conversation (private), made if `create`; None if the account has no agent and not `create`.
    No chat model is needed. `close_memory` releases what this opened."""
    from bot.runtime import open_database  # (the runtime imports this module's callers)

    embedder = await make_embedder(settings)
    db = await open_database(settings.db, embedder.name, embedder.dim, settings.db_lock_wait)
    reception = Reception(settings, db, embedder)
    if create:
        agent = await db.run(reception.find_or_create, platform, user, user)
    else:
        found = await db.read(agents.find, platform, user)
        if found is None:
            await close_memory(db, embedder)
            return None
        agent = found
    conversation_id = await db.run(reception.conversation, Conversation.direct(platform, user))
    return reception.memory(agent, Scope(conversation_id, private=True))


async def close_memory(db: Database, embedder: Embedder) -> None:
    await embedder.close()
    db.close()
