"""One agent's memory as the core sees it: core blocks, recall memory, archival memory.

`AgentMemory` is bound to one agent id when it is made; every call it makes into storage passes
that id, and storage scopes every read by it. Embedding happens here, off the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot import dates, retrieval
from bot.embedding import Embedder, to_blob
from bot.tokens import truncate
from storage import agents, blocks, messages, passages
from storage.agents import Agent
from storage.blocks import Block
from storage.clock import to_iso
from storage.db import Connection, Database
from storage.messages import Message
from storage.passages import Passage

EMBED_MAX_TOKENS = 2000
ASSISTANT_NAME = "membot"


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


class AgentMemory:
    def __init__(self, db: Database, embedder: Embedder, agent: Agent) -> None:
        self.db = db
        self.embedder = embedder
        self.agent_id = agent.id
        self.agent = agent
        self._speakers: list[str] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.agent.timezone)

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    async def refresh(self) -> Agent:
        self.agent = await self.db.run(agents.get, self.agent_id)
        return self.agent

    async def _vector(self, text: str) -> bytes:
        [vector] = await self.embedder.embed([truncate(text, EMBED_MAX_TOKENS)])
        return to_blob(vector)

    # core memory
    async def blocks(self) -> list[Block]:
        return await self.db.run(blocks.list_for, self.agent_id)

    async def block(self, label: str) -> Block:
        return await self.db.run(blocks.get, self.agent_id, label)

    async def write_block(self, label: str, value: str) -> Block:
        return await self.db.run(blocks.write, self.agent_id, label, value)

    # recall memory
    async def add_message(
        self,
        role: str,
        kind: str,
        content: str,
        *,
        tool_calls: str | None = None,
        tool_call_id: str | None = None,
        tool_name: str | None = None,
        search_text: str = "",
        in_context: bool = True,
        speaker: str | None = None,
    ) -> Message:
        """Store a message (and its embedding, if it is searchable). The speaker defaults to the
        user's display name for user messages and the bot's name for its own."""
        vector = await self._vector(search_text) if search_text else None
        if speaker is None:
            speaker = self.speaker_for(role) if search_text else ""
        return await self.db.run(
            messages.append,
            self.agent_id,
            role,
            kind,
            content,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
            search_text=search_text,
            embedding=vector,
            in_context=in_context,
            speaker=speaker,
        )

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
            return [
                messages.append(
                    conn,
                    self.agent_id,
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

        stored = await self.db.run(store)
        self._speakers = None
        return stored

    async def queue(self) -> list[Message]:
        return await self.db.run(messages.in_context, self.agent_id)

    async def search_messages(self, query: str, limit: int, before_id: int | None = None) -> list[Message]:
        """Messages best matching `query`, best first (see `bot.retrieval`)."""
        if self._speakers is None:
            self._speakers = await self.db.run(messages.speakers, self.agent_id)
        vector = await self._vector(retrieval.dense_query(query, self._speakers))
        search = retrieval.Query(
            text=query,
            vector=vector,
            speakers=named(query, self._speakers),
            windows=dates.windows(query, self.local(datetime.now(UTC)).date()),
            zone=self.zone,
        )
        ids = await self.db.run(retrieval.rank_messages, self.agent_id, search, limit, before_id)
        return await self.db.run(messages.get_many, self.agent_id, ids)

    async def messages_between(
        self, start: datetime, end: datetime, limit: int, offset: int
    ) -> tuple[list[Message], int]:
        return await self.db.run(
            messages.searchable_between, self.agent_id, to_iso(start), to_iso(end), limit, offset
        )

    # archival memory
    async def insert_passage(self, content: str, source: str = "agent") -> Passage:
        vector = await self._vector(content)
        return await self.db.run(passages.insert, self.agent_id, content, vector, source)

    async def search_passages(self, query: str, limit: int) -> list[Passage]:
        vector = await self._vector(retrieval.dense_query(query))
        ids = await self.db.run(retrieval.rank_passages, self.agent_id, query, vector, limit)
        return await self.db.run(passages.get_many, self.agent_id, ids)

    async def snapshot(self) -> tuple[Agent, list[Block], Stats, list[Message]]:
        """Everything the main context needs, read in one transaction."""

        def read(conn: Connection) -> tuple[Agent, list[Block], Stats, list[Message]]:
            agent, stats = _stats(conn, self.agent_id)
            return (
                agent,
                blocks.list_for(conn, self.agent_id),
                stats,
                messages.in_context(conn, self.agent_id),
            )

        self.agent, found_blocks, stats, queue = await self.db.run(read)
        return self.agent, found_blocks, stats, queue

    # statistics, summary, eviction
    async def stats(self) -> Stats:
        self.agent, stats = await self.db.run(_stats, self.agent_id)
        return stats

    async def evict(self, through_id: int, summary: str, covers: int) -> int:
        def apply(conn: Connection) -> int:
            evicted = messages.evict(conn, self.agent_id, through_id)
            messages.retire(conn, self.agent_id, "warning")  # a flush answers the warning
            agents.set_summary(conn, self.agent_id, summary, covers)
            return evicted

        evicted = await self.db.run(apply)
        await self.refresh()
        return evicted

    async def set_pressure_warned(self, warned: bool) -> None:
        await self.db.run(agents.set_pressure_warned, self.agent_id, warned)
        await self.refresh()
