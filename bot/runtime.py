"""The runtime: one database, one embedder, one LLM client, the outbox's delivery, an agent per person.

Adapters hand it neutral events (`bot.events`) with `handle` and register their platform's
sender with `register_sender`. An event is on disk (the inbox) before it waits for its agent; a
turn never raises, and never runs longer than the turn deadline. Every entry point keys on the
agent id: one lock per agent, whichever account or entry point an event comes from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.delivery import Delivery
from bot.embedding import Embedder, make_embedder
from bot.errors import InvalidInput, MembotError, ModelError
from bot.events import Event, Kind, Sender, event_from_json, event_to_json
from bot.llm import LLM
from bot.locks import AgentLocks
from bot.memory import AgentMemory, Scope
from bot.memory_tools import registry
from bot.pressure import Budget
from bot.prompt import situation
from bot.settings import Settings
from bot.steps import StepLoop, Turn
from bot.tools import Address, ToolContext
from storage import agents, blocks, conversations, inbox, messages, migrations, vectors
from storage.agents import Agent as AgentRecord
from storage.clock import from_iso
from storage.db import Connection, Database
from storage.errors import StorageError
from storage.messages import Message

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
STORE_FAILED_SAVED = "My memory store failed while I was answering, so I stopped. Your message is saved; please try again later."
NOT_STORED = "I couldn't save your message just now (my memory store is unavailable). Please send it again in a moment."
TOO_LONG = "That took me too long, so I stopped. Your message is saved; please ask again in a moment."


@dataclass(frozen=True)
class Received:
    """An event on disk in the inbox, waiting for its agent."""

    agent_id: int
    item_id: int
    conversation_id: int
    message_id: int | None = None  # set when a turn for it had begun (after a crash)


class Runtime:
    def __init__(self, settings: Settings, db: Database, embedder: Embedder, llm: LLM) -> None:
        self.settings = settings
        self.db = db
        self.embedder = embedder
        self.llm = llm
        self.tools = registry()
        self.budget = Budget(settings.context_window)
        self.delivery = Delivery(db, settings.log_content)
        self.locks = AgentLocks()
        self._current: dict[int, ToolContext] = {}  # inbox item -> its turn's context, while it runs
        self._unembedded: set[int] = set()  # agents with messages waiting for a vector

    @classmethod
    async def start(
        cls, settings: Settings, llm: LLM | None = None, embedder: Embedder | None = None
    ) -> Runtime:
        """Open and migrate the database, load the embedder, check it matches the stored vectors."""
        embedder = embedder or await make_embedder(settings)
        db = await open_database(settings.db, embedder.name, embedder.dim)
        runtime = cls(settings, db, embedder, llm or LLM(settings))
        runtime._unembedded = set(await db.run(messages.agents_unembedded))
        return runtime

    async def close(self) -> None:
        await self.delivery.close()
        await self.llm.close()
        await self.embedder.close()
        self.db.close()

    def register_sender(
        self, platform: str, sender: Sender, channels: Collection[str] | None = None
    ) -> asyncio.Task[int]:
        """Deliver `platform`'s outgoing messages through `sender` (only to `channels`, if given);
        pending ones go out now (the returned task)."""
        return self.delivery.register(platform, sender, channels)

    # agents and identities
    def _find_or_create(self, conn: Connection, platform: str, user_id: str, name: str) -> AgentRecord:
        found = agents.find(conn, platform, user_id)
        if found:
            return found
        made = agents.create(conn, platform, user_id, name, self.settings.timezone)
        human = f"Name: {name}" if name else ""
        for scope in (blocks.PRIVATE, blocks.PUBLIC):
            for label, purpose in BLOCKS:
                value = PERSONA if label == "persona" else human
                blocks.create(conn, made.id, label, purpose, value, self.settings.block_limit, scope)
        log.info("created agent %s for %s user %s", made.id, platform, user_id)
        return made

    async def agent_for(self, platform: str, user_id: str, user_name: str = "") -> AgentRecord:
        """The agent of this account, made on first contact."""
        return await self.db.run(self._find_or_create, platform, user_id, user_name)

    def memory(self, agent: AgentRecord, scope: Scope | None = None) -> AgentMemory:
        return AgentMemory(self.db, self.embedder, agent, scope)

    async def set_timezone(self, agent_id: int, zone: str) -> str:
        """Change an agent's time zone; `zone` is an IANA name such as Europe/Sofia."""
        try:
            ZoneInfo(zone.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(
                f"{zone!r} is not a time zone I know; use an IANA name like Europe/Sofia or America/New_York."
            ) from None
        await self.db.run(agents.set_timezone, agent_id, zone.strip())
        return zone.strip()

    # events
    def _receive(self, conn: Connection, event: Event, agent_id: int | None) -> Received | None:
        key = event.source_key
        if inbox.seen(conn, key):
            return None
        if agent_id is None:
            person = event.person
            agent_id = self._find_or_create(conn, person.platform, person.user_id, person.name).id
        c = event.conversation
        conversation_id = conversations.ensure(
            conn, c.platform, c.channel_id, c.thread_id, c.private, c.name, c.place
        )
        item = inbox.add(conn, agent_id, key, event_to_json(event))
        return Received(agent_id, item.id, conversation_id)

    async def handle(self, event: Event) -> Turn:
        """Answer an event from a person (found by their account). Never raises."""
        return await self._handle(event, None)

    async def wake(self, agent_id: int, event: Event) -> Turn:
        """Run an event for a known agent (the scheduler's heartbeats and reminders). Never raises."""
        return await self._handle(event, agent_id)

    async def _handle(self, event: Event, agent_id: int | None) -> Turn:
        try:
            received = await self.db.run(self._receive, event, agent_id)
        except Exception as exc:
            if isinstance(exc, StorageError):
                log.error(
                    "could not store an event from %s user %s: %s",
                    event.person.platform,
                    event.person.user_id,
                    exc,
                )
            else:
                log.exception("could not store an event from %s", event.person.platform)
            if event.kind is not Kind.MESSAGE:
                return Turn(failed=True)
            await self.delivery.send_now(event.conversation, event.person.user_id, NOT_STORED)
            return Turn(replies=[NOT_STORED], failed=True)
        if received is None:
            log.info("dropped a redelivery of %s message %s", event.conversation.platform, event.message_id)
            return Turn(duplicate=True)
        return await self._answer(received, event)

    async def _answer(self, received: Received, event: Event) -> Turn:
        turn = Turn()
        async with self.locks.hold(received.agent_id):
            await self.delivery.turn_started(event.conversation)
            try:
                async with asyncio.timeout(self.settings.turn_deadline):
                    await self._turn(turn, received, event)
            except TimeoutError:
                log.error(
                    "agent %s: turn stopped at the %.0f s deadline",
                    received.agent_id,
                    self.settings.turn_deadline,
                )
                await self._notice(turn, received, event, TOO_LONG)
            except Exception as exc:
                if isinstance(exc, MembotError | StorageError):
                    log.error("agent %s: turn failed: %s", received.agent_id, exc)
                else:
                    log.exception("agent %s: unexpected error in a turn", received.agent_id)
                await self._notice(turn, received, event, _failure_text(exc, turn.stored))
            finally:
                await self.delivery.turn_ended(event.conversation)
            try:
                await self.db.run(_finish, received.agent_id, received.item_id)
            except Exception as exc:
                log.error(
                    "agent %s: could not close its turn (it will be answered again): %s",
                    received.agent_id,
                    exc,
                )
        return turn

    async def _turn(self, turn: Turn, received: Received, event: Event) -> None:
        record = await self.db.run(agents.get, received.agent_id)
        memory = self.memory(record, Scope(received.conversation_id, event.conversation.private))
        stored = await self._store_event(memory, received, event)
        turn.stored = True
        person = event.person
        ctx = ToolContext(
            memory,
            Address(received.conversation_id, event.conversation.platform, person.user_id, event.message_id),
            turn_start_id=stored.id,
        )
        loop = StepLoop(
            memory,
            self.llm,
            self.tools,
            self.budget,
            self.settings.max_steps,
            self.delivery.dispatch,
            situation(person.name or record.display_name, event.conversation),
            self.settings.log_content,
        )
        self._current[received.item_id] = ctx
        try:
            await loop.run(turn, ctx, event.kind)
        finally:
            del self._current[received.item_id]
        if memory.missed_vectors or received.agent_id in self._unembedded:
            await self._embed_missing(memory)

    async def _embed_missing(self, memory: AgentMemory) -> None:
        """Give vectors to messages stored while the embedder failed (now, if it works again)."""
        try:
            done = await memory.embed_missing()
        except MembotError as exc:
            self._unembedded.add(memory.agent_id)
            log.warning("agent %s: messages still wait for their vectors: %s", memory.agent_id, exc)
            return
        self._unembedded.discard(memory.agent_id)
        if done:
            log.info(
                "agent %s: embedded %d messages stored while the embedder was failing", memory.agent_id, done
            )

    async def _store_event(self, memory: AgentMemory, received: Received, event: Event) -> Message:
        """The event as a message in the agent's memory (once: a replay after a crash reuses it),
        in the same transaction that marks its turn as begun."""
        if received.message_id is not None:
            [found] = await self.db.run(_get_message, memory.agent_id, received.message_id)
            await self.db.run(inbox.begin, memory.agent_id, received.item_id, None)
            return found
        item = await self.db.run(inbox.get, memory.agent_id, received.item_id)
        text = event.text
        if event.attachments:
            names = ", ".join(f"{a.name} ({a.media_type}, {a.size} bytes)" for a in event.attachments)
            text = f"{text}\n[attached: {names}]".strip()
        return await memory.add_message(
            "user",
            event.kind.value,
            text,
            search_text=event.text if event.kind is Kind.MESSAGE else "",
            speaker=(event.person.name or None) if event.kind is Kind.MESSAGE else "",
            source_key=event.source_key or None,
            created_at=item.received_at,
            also=lambda conn, stored: inbox.begin(conn, memory.agent_id, received.item_id, stored.id),
        )

    async def _notice(self, turn: Turn, received: Received, event: Event, text: str) -> None:
        """Tell the person their turn failed, if the event was theirs (never for a heartbeat)."""
        turn.failed = True
        if event.kind is not Kind.MESSAGE:
            return
        ctx = self._current.get(received.item_id)
        address = Address(
            received.conversation_id, event.conversation.platform, event.person.user_id, event.message_id
        )
        try:
            record = await self.db.run(agents.get, received.agent_id)
            ctx = ctx or ToolContext(self.memory(record), address)
            await self.db.run(ctx.send, text)
            turn.replies = [*ctx.sent, *(e.text for e in ctx.queued)]
            self.delivery.dispatch(list(ctx.queued))
            ctx.queued.clear()
        except Exception as exc:
            log.error("agent %s: could not write the notice to the outbox: %s", received.agent_id, exc)
            await self.delivery.send_now(event.conversation, event.person.user_id, text)
            turn.replies.append(text)

    async def recover(self, accept: Callable[[Event], bool] = lambda event: True) -> int:
        """Answer what a crash or a stop left stored but unanswered (once, and only events at most
        MEMBOT_REPLAY_HOURS old); `accept` picks the events this process should answer."""
        items = await self.db.run(inbox.waiting)
        oldest = datetime.now(UTC) - timedelta(hours=self.settings.replay_hours)
        answering = []
        for item in items:
            event = event_from_json(item.event)
            if not accept(event) or self.locks.busy(item.agent_id):
                continue
            if from_iso(item.received_at) < oldest or item.attempts >= 2:
                why = "too old" if from_iso(item.received_at) < oldest else "its turn was cut off twice"
                log.warning("agent %s: not answering inbox item %d (%s)", item.agent_id, item.id, why)
                await self.db.run(inbox.done, item.agent_id, item.id)
                continue
            c = event.conversation
            conversation_id = await self.db.run(
                conversations.ensure, c.platform, c.channel_id, c.thread_id, c.private, c.name, c.place
            )
            received = Received(item.agent_id, item.id, conversation_id, item.message_id)
            answering.append(self._answer(received, event))
        if answering:
            log.info("answering %d messages left unanswered by the last run", len(answering))
        await asyncio.gather(*answering)
        return len(answering)


def _failure_text(exc: BaseException, stored: bool) -> str:
    """What to tell a person whose turn failed: the truth about their message."""
    if isinstance(exc, ModelError):
        return exc.user_message
    if not stored:
        return getattr(exc, "user_message", NOT_STORED)
    return STORE_FAILED_SAVED if isinstance(exc, StorageError) else UNREACHABLE


def _finish(conn: Connection, agent_id: int, item_id: int) -> None:
    inbox.done(conn, agent_id, item_id)
    agents.touch(conn, agent_id)


def _get_message(conn: Connection, agent_id: int, message_id: int) -> list[Message]:
    return messages.get_many(conn, agent_id, [message_id])


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
