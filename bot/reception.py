"""Reception: where events arrive. Accounts found or given an agent, conversations recorded,
each event put in the inbox (and, when its agent is free, in its memory in the same transaction).

The identity and conversation ids seen are remembered in memory (`CACHE_SIZE` of each, then
forgotten at once), so a known person's message costs one transaction before its turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from bot.embedding import Embedder
from bot.events import Conversation, Event, Kind, Person, event_to_json
from bot.memory import AgentMemory, Scope, vector_or_none
from bot.settings import Settings
from storage import agents, blocks, conversations, identities, inbox
from storage.agents import Agent as AgentRecord
from storage.clock import now_iso
from storage.db import Connection, Database, after_commit
from storage.errors import AgentNotFoundError
from storage.messages import Message

log = logging.getLogger(__name__)

CACHE_SIZE = 50_000
PERSONA = (  # the built-in default persona, also shipped as bot/data/personas/membot.txt
    "I am membot, a warm, curious and concise companion. I remember what people tell me, "
    "follow up on what matters to them, and never pretend to remember what I don't."
)
BLOCKS = (
    ("persona", "Who you are and how you speak. Edit it as you grow."),
    ("human", "What you know about the user: name, preferences, people, plans."),
)


# Run inside the transaction that puts a scheduled event in the inbox: False means another
# process took it first (the scheduler's claim-once), and nothing is stored.
Claim = Callable[[Connection], bool]


@dataclass(frozen=True)
class Received:
    """An event on disk in the inbox, waiting for its agent or answered by it."""

    agent_id: int
    item_id: int
    conversation_id: int
    received_at: str
    message_id: int | None = None  # the event in recall memory, once its turn has begun


class Reception:
    def __init__(self, settings: Settings, db: Database, embedder: Embedder) -> None:
        self.settings = settings
        self.db = db
        self.embedder = embedder
        self.persona, self.human = settings.starting_blocks()  # checked when the settings were read
        self.unembedded: set[int] = set()  # agents with messages waiting for a vector
        self.agents: dict[tuple[str, str], int] = {}  # (platform, user id) -> agent id, as seen
        self.conversations: dict[tuple[str, str, str], tuple[int, tuple[str, str]]] = {}

    def known(self, person: Person) -> int | None:
        """The agent id of an account seen before (None: look it up in a transaction)."""
        return self.agents.get((person.platform, person.user_id))

    def forget(self, person: Person) -> None:
        """Drop what is remembered of an account (its agent was deleted or it was linked away)."""
        self.agents.pop((person.platform, person.user_id), None)

    def forget_agent(self, agent_id: int) -> None:
        """Drop every account remembered as this agent's (it was forgotten or merged away)."""
        for key in [key for key, cached in self.agents.items() if cached == agent_id]:
            del self.agents[key]

    def memory(self, agent: AgentRecord, scope: Scope | None = None) -> AgentMemory:
        return AgentMemory(self.db, self.embedder, agent, scope)

    def find_or_create(
        self, conn: Connection, platform: str, user_id: str, name: str, timezone: str = ""
    ) -> AgentRecord:
        """The agent of this account, made (with its private and public blocks) on first contact,
        in `timezone` if given (a zone the platform's profile gave) or MEMBOT_TIMEZONE."""
        found = agents.find(conn, platform, user_id)
        if found:
            return found
        made = agents.create(conn, platform, user_id, name, timezone or self.settings.timezone)
        human = "\n".join(part for part in (f"Name: {name}" if name else "", self.human or "") if part)
        human = human[: self.settings.block_limit]
        for scope in (blocks.PRIVATE, blocks.PUBLIC):
            for label, purpose in BLOCKS:
                value = self.persona if label == "persona" else human
                blocks.create(conn, made.id, label, purpose, value, self.settings.block_limit, scope)
        log.info("created agent %s for %s user %s", made.id, platform, user_id)
        return made

    def conversation(self, conn: Connection, c: Conversation) -> int:
        """The conversation's id (made on first sight; names kept current), cached in memory."""
        key = (c.platform, c.channel_id, c.thread_id)
        found = self.conversations.get(key)
        if found is None or found[1] != (c.name, c.place):
            made = conversations.ensure(
                conn, c.platform, c.channel_id, c.thread_id, c.private, c.name, c.place
            )
            found = (made, (c.name, c.place))
            after_commit(conn, partial(self._remember, self.conversations, key, found))
        return found[0]

    @staticmethod
    def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
        """Into a cache, once the row is committed (see storage.db.after_commit)."""
        if len(cache) > CACHE_SIZE:
            cache.clear()
        cache[key] = value

    def receive(
        self, conn: Connection, event: Event, agent_id: int | None, claim: Claim | None = None
    ) -> Received | None:
        """Put the event in the inbox (None if it is a redelivery, or `claim` refused it)."""
        key = event.source_key
        if inbox.seen(conn, key) or (claim is not None and not claim(conn)):
            return None
        if agent_id is None:
            person = event.person
            agent_id = self.find_or_create(conn, person.platform, person.user_id, person.name).id
            after_commit(
                conn, partial(self._remember, self.agents, (person.platform, person.user_id), agent_id)
            )
        conversation_id = self.conversation(conn, event.conversation)
        item = inbox.add(conn, agent_id, key, event_to_json(event))
        return Received(agent_id, item.id, conversation_id, item.received_at)

    def store(
        self, conn: Connection, memory: AgentMemory, event: Event, vector: bytes | None, at: str
    ) -> Message:
        """The event as a message of the agent's, inside the caller's transaction."""
        text = event.text
        if event.attachments:
            names = ", ".join(f"{a.name} ({a.media_type}, {a.size} bytes)" for a in event.attachments)
            text = f"{text}\n[attached: {names}]".strip()
        speaking = event.kind is Kind.MESSAGE
        return memory.store(
            conn,
            "user",
            event.kind.value,
            text,
            vector,
            search_text=event.text if speaking else "",
            speaker=(event.person.name or None) if speaking else "",
            source_key=event.source_key or None,
            created_at=at,
        )

    def receive_and_store(
        self,
        conn: Connection,
        event: Event,
        agent_id: int,
        vector: bytes | None,
        claim: Claim | None = None,
        cached: bool = False,
    ) -> tuple[Received, AgentMemory, Message] | None:
        """For an agent that is free: the event into the inbox and its memory in one transaction
        (None if it is a redelivery, or `claim` refused it). `cached`: the agent id came from this
        process's memory of the account, so it is checked against the identity first: another
        process may have forgotten the person (and a new agent may since have been given that id)
        or linked the account elsewhere; then AgentNotFoundError, and the caller looks it up anew."""
        if cached:
            person = event.person
            identity = identities.find(conn, person.platform, person.user_id)
            if identity is None or identity.agent_id != agent_id:
                raise AgentNotFoundError(
                    f"{person.platform} user {person.user_id} is no longer agent {agent_id}"
                )
        if inbox.seen(conn, event.source_key) or (claim is not None and not claim(conn)):
            return None
        conversation_id = self.conversation(conn, event.conversation)
        memory = self.memory(agents.get(conn, agent_id), Scope(conversation_id, event.conversation.private))
        at = now_iso()
        stored = self.store(conn, memory, event, vector, at)
        kept = replace(event, text="")  # the text is in the stored message: no second copy
        item = inbox.add(conn, agent_id, event.source_key, event_to_json(kept), stored.id)
        return Received(agent_id, item.id, conversation_id, at, stored.id), memory, stored

    async def vector(self, agent_id: int, event: Event) -> bytes | None:
        """The vector of a person's message, or None if the embedder failed (it follows later)."""
        if event.kind is not Kind.MESSAGE:
            return None
        vector = await vector_or_none(self.embedder, agent_id, event.text)
        if event.text and vector is None:
            self.unembedded.add(agent_id)
        return vector
