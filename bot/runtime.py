"""The runtime: one database, one embedder, one LLM client, and an agent per person.

Adapters hand it neutral `Incoming` events. Turns for one agent run one at a time (a lock per
agent); different agents run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.agent import Agent, Turn
from bot.embedding import Embedder, make_embedder
from bot.errors import MembotError
from bot.llm import LLM
from bot.memory import AgentMemory
from bot.memory_tools import registry
from bot.pressure import Budget
from bot.settings import Settings
from storage import agents, blocks, migrations, vectors
from storage.agents import Agent as AgentRecord
from storage.db import Connection, Database
from storage.errors import StorageError

log = logging.getLogger(__name__)

PERSONA = (
    "I am membot, a warm, curious and concise companion. I remember what people tell me, "
    "follow up on what matters to them, and never pretend to remember what I don't."
)
BLOCKS = (
    ("persona", "Who you are and how you speak. Edit it as you grow."),
    ("human", "What you know about the user: name, preferences, people, plans."),
)
UNREACHABLE = "Something went wrong on my side. Your message is saved; please try again in a moment."
STORAGE_FAILED = "I couldn't reach my memory store just now (it is busy or unavailable). Please send that again in a moment."


@dataclass(frozen=True)
class Incoming:
    """An event from any platform: who, what, and what kind (user message or system event)."""

    platform: str
    user_id: str
    text: str
    user_name: str = ""
    kind: str = "user"


class Runtime:
    def __init__(self, settings: Settings, db: Database, embedder: Embedder, llm: LLM) -> None:
        self.settings = settings
        self.db = db
        self.embedder = embedder
        self.llm = llm
        self.tools = registry()
        self.budget = Budget(settings.context_window)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    async def start(
        cls, settings: Settings, llm: LLM | None = None, embedder: Embedder | None = None
    ) -> Runtime:
        """Open and migrate the database, load the embedder, check it matches the stored vectors."""
        embedder = embedder or await make_embedder(settings)
        db = await open_database(settings.db, embedder.name, embedder.dim)
        return cls(settings, db, embedder, llm or LLM(settings))

    async def close(self) -> None:
        await self.llm.close()
        self.db.close()

    async def agent_for(self, platform: str, user_id: str, user_name: str = "") -> AgentRecord:
        def find_or_create(conn: Connection) -> AgentRecord:
            found = agents.find(conn, platform, user_id)
            if found:
                return found
            made = agents.create(conn, platform, user_id, user_name, self.settings.timezone)
            human = f"Name: {user_name}" if user_name else ""
            for label, purpose in BLOCKS:
                value = PERSONA if label == "persona" else human
                blocks.create(conn, made.id, label, purpose, value, self.settings.block_limit)
            log.info("created agent %s for %s user %s", made.id, platform, user_id)
            return made

        return await self.db.run(find_or_create)

    def memory(self, agent: AgentRecord) -> AgentMemory:
        return AgentMemory(self.db, self.embedder, agent)

    async def handle(self, event: Incoming) -> Turn:
        """Run one event through its agent. Errors become a short reply, never an exception.

        One user's events run one at a time, in the order they arrived: the lock is taken before
        anything is awaited, so nothing can overtake.
        """
        lock = self._locks.setdefault((event.platform, event.user_id), asyncio.Lock())
        async with lock:
            try:
                record = await self.agent_for(event.platform, event.user_id, event.user_name)
            except StorageError as exc:
                log.error("cannot load the agent for %s/%s: %s", event.platform, event.user_id, exc)
                return Turn(replies=[STORAGE_FAILED], failed=True)
            agent = Agent(
                self.memory(record),
                self.llm,
                self.tools,
                self.budget,
                self.settings.max_steps,
                self.settings.log_content,
            )
            try:
                turn = await agent.handle(event.kind, event.text)
            except StorageError as exc:
                log.error("agent %s: turn failed: %s", record.id, exc)
                return Turn(replies=[STORAGE_FAILED], failed=True)
            except MembotError as exc:
                log.error("agent %s: turn failed: %s", record.id, exc)
                return Turn(replies=[UNREACHABLE], failed=True)
            except Exception:
                log.exception("agent %s: unexpected error in a turn", record.id)
                return Turn(replies=[UNREACHABLE], failed=True)
            await self.db.run(agents.touch, record.id)
            return turn


async def open_database(path: str, model: str, dim: int) -> Database:
    db = Database(path)

    def prepare(conn: Connection) -> None:
        ran = migrations.migrate(conn)
        if ran:
            log.info("database %s: applied %s", path, ", ".join(ran))
        vectors.ensure(conn, model, dim)

    try:
        await db.run(prepare)
    except BaseException:
        db.close()
        raise
    return db
