"""One agent's memory as the core sees it from one conversation: core blocks, recall, archival.

`AgentMemory` is bound to one agent id and one `Scope` (the conversation being answered, and
whether it is private) when it is made. Every call it makes into storage passes that id, and in
a public conversation `public_only=True`: storage then returns nothing said or saved in private.
What the agent stores is tagged with the conversation and its privacy. Embedding happens here,
off the event loop; a message is stored even when the embedder fails (its vector follows later).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot import dates, retrieval
from bot.embedding import Embedder, to_blob
from bot.errors import MembotError
from bot.tokens import truncate
from storage import agents, blocks, conversations, lifecycle, messages, passages
from storage.agents import Agent
from storage.blocks import PRIVATE, PUBLIC, Block
from storage.clock import to_iso
from storage.db import Connection, Database
from storage.messages import Message
from storage.passages import Passage

log = logging.getLogger(__name__)

EMBED_MAX_TOKENS = 2000
MAX_INDEXED_CHARS = 20_000  # a longer message is kept whole but indexed and embedded in part
ASSISTANT_NAME = "membot"


@dataclass(frozen=True)
class Scope:
    """Where the agent is answering: the conversation's id and whether it is private."""

    conversation_id: int | None = None
    private: bool = True

    @property
    def public_only(self) -> bool:
        return not self.private

    @property
    def blocks(self) -> str:
        return PRIVATE if self.private else PUBLIC


@dataclass(frozen=True)
class Imported:
    """A past message to import into recall memory: who said what, when."""

    role: str  # "user" or "assistant"
    speaker: str
    text: str
    at: datetime  # naive means in the agent's time zone


@dataclass(frozen=True)
class Stats:
    recall_messages: int
    archival_passages: int
    memory_updated_at: str | None


@dataclass(frozen=True)
class Snapshot:
    """Everything one step's main context is compiled from, read in one transaction."""

    agent: Agent
    blocks: list[Block]
    stats: Stats
    queue: list[Message]
    places: dict[int, str]  # conversation id -> its name, for the public messages in the queue


def _stats(conn: Connection, agent_id: int) -> tuple[Agent, Stats]:
    agent = agents.get(conn, agent_id)
    return agent, Stats(
        messages.count(conn, agent_id), passages.count(conn, agent_id), agent.memory_updated_at
    )


def named(text: str, names: list[str]) -> frozenset[str]:
    """The names in `names` that `text` mentions (whole name or first name, any case)."""
    found = set()
    for name in names:
        forms = {name, name.split()[0]} if name.strip() else set()
        for form in forms:
            if len(form) >= 2 and re.search(rf"(?<!\w){re.escape(form)}(?!\w)", text, re.IGNORECASE):
                found.add(name)
    return frozenset(found)


def _places(conn: Connection, queue: list[Message]) -> dict[int, str]:
    ids = {m.conversation_id for m in queue if m.conversation_id is not None and not m.private}
    found: dict[int, str] = {}
    for conversation_id in ids:
        row = conversations.get(conn, conversation_id)
        if row is not None:
            found[conversation_id] = row.name or row.channel_id
    return found


async def vector_or_none(embedder: Embedder, agent_id: int, text: str) -> bytes | None:
    """The vector of a message to store (its first MAX_INDEXED_CHARS), or None if there is no text
    or the embedder failed: the message is stored anyway and embedded later."""
    if not text:
        return None
    try:
        [vector] = await embedder.embed([truncate(text[:MAX_INDEXED_CHARS], EMBED_MAX_TOKENS)])
    except MembotError as exc:
        log.warning("agent %s: embedder failed (%s); storing the message without its vector", agent_id, exc)
        return None
    return to_blob(vector)


class AgentMemory:
    def __init__(self, db: Database, embedder: Embedder, agent: Agent, scope: Scope | None = None) -> None:
        self.db = db
        self.embedder = embedder
        self.agent_id = agent.id
        self.agent = agent
        self.scope = scope or Scope()
        self._speakers: list[str] | None = None
        self.missed_vectors = False  # a message was stored without its vector (the embedder failed)

    @property
    def public(self) -> bool:
        return self.scope.public_only

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.agent.timezone)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    async def refresh(self) -> Agent:
        self.agent = await self.db.run(agents.get, self.agent_id)
        return self.agent

    async def vector(self, text: str) -> bytes:
        [vector] = await self.embedder.embed([truncate(text, EMBED_MAX_TOKENS)])
        return to_blob(vector)

    # core memory
    async def blocks(self) -> list[Block]:
        return await self.db.read(blocks.list_for, self.agent_id, self.scope.blocks)

    # recall memory
    async def embedding(self, search_text: str) -> bytes | None:
        """The vector of a message to store, or None if the embedder failed (it follows later)."""
        vector = await vector_or_none(self.embedder, self.agent_id, search_text)
        if search_text and vector is None:
            self.missed_vectors = True
        return vector

    def store(
        self,
        conn: Connection,
        role: str,
        kind: str,
        content: str,
        vector: bytes | None = None,
        *,
        search_text: str = "",
        speaker: str | None = None,
        **more: object,
    ) -> Message:
        """Store a message in this scope, inside the caller's transaction. The speaker defaults to
        the person's display name for their messages and the bot's name for its own; a searchable
        message without its vector is marked to be embedded later."""
        search_text = search_text[:MAX_INDEXED_CHARS]
        if speaker is None:
            speaker = self.speaker_for(role) if search_text else ""
        stored = self.append(
            conn, role, kind, content, search_text=search_text, embedding=vector, speaker=speaker, **more
        )
        if search_text and vector is None:
            messages.mark_unembedded(conn, self.agent_id, stored.id)
        return stored

    async def add_message(
        self,
        role: str,
        kind: str,
        content: str,
        *,
        search_text: str = "",
        **more: object,
    ) -> Message:
        """Embed (if searchable) and store a message in this scope, in its own transaction."""
        vector = await self.embedding(search_text)

        def store(conn: Connection) -> Message:
            return self.store(conn, role, kind, content, vector, search_text=search_text, **more)  # type: ignore[arg-type]

        return await self.db.run(store)

    def append(self, conn: Connection, role: str, kind: str, content: str, **more: object) -> Message:
        """`messages.append` for this agent in this scope (inside a caller's transaction)."""
        return messages.append(
            conn,
            self.agent_id,
            role,
            kind,
            content,
            conversation_id=self.scope.conversation_id,
            private=self.scope.private,
            **more,  # type: ignore[arg-type]
        )

    async def embed_missing(self) -> int:
        """Embed messages stored while the embedder was failing; how many got their vector."""
        rows = await self.db.read(messages.unembedded, self.agent_id)
        if not rows:
            return 0
        found = await self.embedder.embed([truncate(text, EMBED_MAX_TOKENS) for _, text, _ in rows])
        await self.db.run(
            messages.put_vectors,
            self.agent_id,
            [(i, to_blob(v), private) for (i, _, private), v in zip(rows, found, strict=True)],
        )
        return len(rows)

    def speaker_for(self, role: str) -> str:
        if role == "assistant":
            return ASSISTANT_NAME
        if role == "user":
            return self.agent.display_name or "user"
        return ""

    async def import_messages(self, items: list[Imported]) -> list[Message]:
        """Store past messages in recall memory (not in context) in one transaction, embedded in one batch."""
        vectors = await self.embedder.embed([truncate(item.text, EMBED_MAX_TOKENS) for item in items])

        def store(conn: Connection) -> list[Message]:
            stored = [
                self.append(
                    conn,
                    item.role,
                    item.role,
                    item.text,
                    search_text=item.text,
                    embedding=to_blob(vector),
                    created_at=to_iso(item.at if item.at.tzinfo else item.at.replace(tzinfo=self.zone)),
                    in_context=False,
                    speaker=item.speaker,
                )
                for item, vector in zip(items, vectors, strict=True)
            ]
            if lifecycle.renumber_turns(conn, self.agent_id):  # older than what was there: in time order
                lifecycle.rebuild_context(conn, self.agent_id)
            return messages.get_many(conn, self.agent_id, [m.id for m in stored])

        stored = await self.db.run(store)
        self._speakers = None
        return stored

    async def queue(self) -> list[Message]:
        return await self.db.read(messages.in_context, self.agent_id, self.public)

    async def search_messages(self, query: str, limit: int, before_id: int | None = None) -> list[Message]:
        """Messages best matching `query`, best first (see `bot.retrieval`); only public ones in public."""
        if self._speakers is None:
            self._speakers = await self.db.read(messages.speakers, self.agent_id)
        vector = await self.vector(retrieval.dense_query(query, self._speakers))
        search = retrieval.Query(
            text=query,
            vector=vector,
            speakers=named(query, self._speakers),
            windows=dates.windows(query, self.local(datetime.now(UTC)).date()),
            zone=self.zone,
            public_only=self.public,
        )
        ids = await self.db.read(retrieval.rank_messages, self.agent_id, search, limit, before_id)
        return await self.db.read(messages.get_many, self.agent_id, ids, self.public)

    async def messages_between(
        self, start: datetime, end: datetime, limit: int, offset: int
    ) -> tuple[list[Message], int]:
        return await self.db.read(
            messages.searchable_between,
            self.agent_id,
            to_iso(start),
            to_iso(end),
            limit,
            offset,
            self.public,
        )

    # archival memory
    def insert_passage(self, conn: Connection, content: str, vector: bytes, source: str = "agent") -> Passage:
        """Store a passage in this scope (inside a caller's transaction)."""
        return passages.insert(
            conn, self.agent_id, content, vector, source, self.scope.private, self.scope.conversation_id
        )

    async def search_passages(self, query: str, limit: int) -> list[Passage]:
        vector = await self.vector(retrieval.dense_query(query))
        ids = await self.db.read(retrieval.rank_passages, self.agent_id, query, vector, limit, self.public)
        return await self.db.read(passages.get_many, self.agent_id, ids, self.public)

    async def snapshot(self) -> Snapshot:
        """Everything the main context needs, read in one transaction."""
        scope = self.scope

        def read(conn: Connection) -> Snapshot:
            agent, stats = _stats(conn, self.agent_id)
            queue = messages.in_context(conn, self.agent_id, scope.public_only)
            return Snapshot(
                agent, blocks.list_for(conn, self.agent_id, scope.blocks), stats, queue, _places(conn, queue)
            )

        snapshot = await self.db.read(read)
        self.agent = snapshot.agent
        return snapshot

    # statistics, summary, eviction
    async def stats(self) -> Stats:
        self.agent, stats = await self.db.read(_stats, self.agent_id)
        return stats

    def summary(self) -> tuple[str, int]:
        """This view's recursive summary and how many messages it covers."""
        return self.agent.summary_of(self.public)

    async def evict(self, through_id: int, summary: str, covers: int) -> int:
        public = self.public

        def apply(conn: Connection) -> int:
            evicted = messages.evict(conn, self.agent_id, through_id, public)
            messages.retire(conn, self.agent_id, "warning", public)  # a flush answers the warning
            agents.set_summary(conn, self.agent_id, summary, covers, public)
            return evicted

        evicted = await self.db.run(apply)
        await self.refresh()
        return evicted

    async def set_pressure_warned(self, warned: bool) -> None:
        await self.db.run(agents.set_pressure_warned, self.agent_id, warned, self.public)
        await self.refresh()
