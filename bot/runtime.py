"""The runtime: one database, one embedder, one LLM client, the outbox's delivery, an agent per person.

Adapters hand it neutral events (`bot.events`) with `handle` and register their platform's
sender with `register_sender`. An event is on disk (the inbox) before it waits for its agent; a
turn never raises, and never runs longer than the turn deadline. Every entry point keys on the
agent id: one lock per agent, whichever account or entry point an event comes from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot import chat_commands
from bot.attachments import load_files
from bot.delivery import Delivery
from bot.embedding import Embedder, make_embedder
from bot.errors import InvalidInput, MembotError, ModelError
from bot.events import Answer, Attachment, Event, Kind, Person, Sender, event_from_json
from bot.llm import LLM
from bot.locks import AgentLocks
from bot.memory import AgentMemory, Scope
from bot.memory_tools import registry
from bot.pressure import Budget
from bot.prompt import situation
from bot.reception import Claim, Received, Reception
from bot.settings import Settings
from bot.steps import StepLoop, Turn
from bot.tools import Address, ToolContext
from storage import agents, inbox, messages, migrations, vectors
from storage.agents import Agent as AgentRecord
from storage.clock import from_iso
from storage.db import LOCK_WAIT, Connection, Database, changes_schema, check_writable, open_at
from storage.errors import AgentNotFoundError, StorageError
from storage.messages import Message

log = logging.getLogger(__name__)

UNREACHABLE = "Something went wrong on my side. Your message is saved; please try again in a moment."
STORE_FAILED_SAVED = "My memory store failed while I was answering, so I stopped. Your message is saved; please try again later."
NOT_STORED = "I couldn't save your message just now (my memory store is unavailable). Please send it again in a moment."
TOO_LONG = "That took me too long, so I stopped. Your message is saved; please ask again in a moment."


class Runtime:
    def __init__(self, settings: Settings, db: Database, embedder: Embedder, llm: LLM) -> None:
        self.settings = settings
        self.db = db
        self.embedder = embedder
        self.llm = llm
        self.tools = registry()
        self.budget = Budget(settings.context_window)
        self.delivery = Delivery(db, settings.log_content)
        self.locks = AgentLocks(db.agent_locks())
        self._current: dict[int, ToolContext] = {}  # inbox item -> its turn's context, while it runs
        self._running: set[asyncio.Task[object]] = set()  # tasks inside handle/wake, for drain()
        # account -> what its last /forget preview will delete on /forget confirm, and until when
        self.forget_requests: dict[tuple[str, str], chat_commands.ForgetRequest] = {}
        self.stopping = False  # set by drain(): new events are stored, answered at the next start
        self.reception = Reception(settings, db, embedder)

    @classmethod
    async def start(
        cls, settings: Settings, llm: LLM | None = None, embedder: Embedder | None = None
    ) -> Runtime:
        """Open and migrate the database, load the embedder, check it matches the stored vectors."""
        embedder = embedder or await make_embedder(settings)
        db = await open_database(settings.db, embedder.name, embedder.dim, settings.db_lock_wait)
        runtime = cls(settings, db, embedder, llm or LLM(settings))
        runtime.reception.unembedded = set(await db.run(messages.agents_unembedded))
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

    async def agent_for(
        self, platform: str, user_id: str, user_name: str = "", timezone: str = ""
    ) -> AgentRecord:
        """The agent of this account, made on first contact (in `timezone`, an IANA name from the
        platform's profile, if given and valid; else MEMBOT_TIMEZONE)."""
        if timezone:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("ignoring the unknown time zone %r of %s user %s", timezone, platform, user_id)
                timezone = ""
        return await self.db.run(self.reception.find_or_create, platform, user_id, user_name, timezone)

    async def agents(self) -> list[agents.Listed]:
        """Every agent with its accounts and counts (the operator's `membot agents`)."""
        return await self.db.read(agents.listing)

    async def find_agent(self, platform: str, user_id: str) -> AgentRecord | None:
        """The agent of this account if it has one yet (an adapter asks before fetching a profile)."""
        return await self.db.read(agents.find, platform, user_id)

    def memory(self, agent: AgentRecord, scope: Scope | None = None) -> AgentMemory:
        return self.reception.memory(agent, scope)

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

    def is_command(self, text: str) -> bool:
        """Whether `text` is one of the chat commands (`/memory`, `/timezone ZONE`, `/help`, ...)."""
        return chat_commands.parse(text) is not None

    async def command(self, person: Person, text: str) -> str | None:
        """Run a chat command for `person` ('/timezone Europe/Sofia'); its answer, for that person
        alone, or None if `text` is no command. Never reaches the agent or its memory's messages."""
        parsed = chat_commands.parse(text)
        if parsed is None:
            return None
        return await chat_commands.run(self, person, *parsed)

    async def answer(
        self, person: Person, text: str, attachments: tuple[Attachment, ...] = ()
    ) -> Answer | None:
        """Like `command`, with the files that go with the answer (`/export`'s) and the files that
        came with the command (`/import`'s); None if `text` is no command."""
        parsed = chat_commands.parse(text)
        if parsed is None:
            return None
        return await chat_commands.answer(self, person, *parsed, attachments)

    async def handle(self, event: Event) -> Turn:
        """Answer an event from a person (found by their account). Never raises."""
        return await self._handle(event, None)

    async def accept(self, event: Event) -> Callable[[], Awaitable[Turn]]:
        """Store a person's event now, before the platform is told it arrived (Slack's ack), and
        return the call that answers it (never raises). Events are then answered in the order
        the platform handed them over, even when one person's messages reach several processes
        a few milliseconds apart. An event with files to fetch (or while stopping) is stored by
        that call instead, as `handle` does."""
        if any(a.read for a in event.attachments) or self.stopping:
            return partial(self.handle, event)
        known = self.reception.known(event.person)
        release = self.locks.reserve(known) if known is not None else (lambda: None)
        try:
            received = await self.db.run(self.reception.receive, event, None, None)
        except Exception as exc:
            release()
            return partial(self._lost, event, exc)
        if received is None:
            release()
            return partial(_answered, _duplicate(event))

        async def answer() -> Turn:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                with self.locks.expecting(received.agent_id):
                    release()
                    return await self._answer(received, event)
            finally:
                release()
                if task is not None:
                    self._running.discard(task)

        return answer

    async def wake(self, agent_id: int, event: Event, claim: Claim | None = None) -> Turn:
        """Run an event for a known agent (the scheduler's heartbeats and reminders). Never raises.
        `claim(conn)` runs in the transaction that stores the event; False drops the event (another
        process took it): the turn is then a duplicate."""
        return await self._handle(event, agent_id, claim)

    async def _handle(self, event: Event, agent_id: int | None, claim: Claim | None = None) -> Turn:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            return await self._handle_inside(event, agent_id, claim)
        finally:
            if task is not None:
                self._running.discard(task)

    async def drain(self, grace: float) -> bool:
        """Stop answering: events from now on are only stored (the next start answers them), turns
        under way get `grace` seconds to finish, then are cut off between steps, their inbox rows
        left open for the next start; outgoing messages get a few seconds more. True if every
        turn finished."""
        self.stopping = True
        running = [task for task in self._running if task is not asyncio.current_task()]
        finished = True
        if running:
            log.info("stopping: waiting up to %.0f s for %d turns to finish", grace, len(running))
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                finished = False
                log.warning(
                    "stopping: %d turns cut off; they are answered again at the next start", len(late)
                )
                await asyncio.wait(late, timeout=5.0)
        await self.delivery.idle(5.0)
        return finished

    async def _handle_inside(self, event: Event, agent_id: int | None, claim: Claim | None = None) -> Turn:
        event = await load_files(self, event, agent_id)
        if self.stopping:
            return await self._keep_for_later(event, agent_id, claim)
        known = agent_id if agent_id is not None else self.reception.known(event.person)
        if known is not None and not self.locks.busy(known):
            try:
                answered = await self._answer_now(known, event, claim, cached=agent_id is None)
                if answered is not None:
                    return answered
            except AgentNotFoundError:  # forgotten, or the account was linked to another agent
                if agent_id is not None:
                    return await self._lost(event, StorageError(f"there is no agent {agent_id}"))
                self.reception.forget(event.person)
        # Stored first, then answered when the agent is free. While it is being stored the agent
        # counts as busy, so a later message waits behind it instead of overtaking it.
        with self.locks.expecting(known) if known is not None else nullcontext():
            try:
                received = await self.db.run(self.reception.receive, event, agent_id, claim)
            except Exception as exc:
                return await self._lost(event, exc)
            if received is None:
                return _duplicate(event)
            return await self._answer(received, event)

    async def _keep_for_later(self, event: Event, agent_id: int | None, claim: Claim | None = None) -> Turn:
        """While stopping: the event into the inbox only; the next start's recover() answers it."""
        try:
            received = await self.db.run(self.reception.receive, event, agent_id, claim)
        except Exception as exc:
            return await self._lost(event, exc)
        return _duplicate(event) if received is None else Turn(failed=True)

    async def _answer_now(
        self, agent_id: int, event: Event, claim: Claim | None = None, cached: bool = False
    ) -> Turn | None:
        """The agent is free: take it at once and store the event with its inbox row together. None
        if another process holds the agent (the caller stores the event to wait its turn)."""
        async with self.locks.hold(agent_id, wait=False) as held:
            if not held:
                return None
            if self.locks.shared:
                await self._answer_earlier(agent_id, await self.db.read(inbox.before, agent_id, None))
            vector = await self.reception.vector(agent_id, event)
            try:
                found = await self.db.run(
                    self.reception.receive_and_store, event, agent_id, vector, claim, cached
                )
            except AgentNotFoundError:
                raise
            except Exception as exc:
                return await self._lost(event, exc)
            if found is None:
                return _duplicate(event)
            received, memory, stored = found
            return await self._run(received, event, (memory, stored))

    async def _lost(self, event: Event, exc: BaseException) -> Turn:
        """The event could not be stored: say so (to a person; a heartbeat just fails)."""
        platform = event.person.platform
        if isinstance(exc, StorageError):
            log.error("could not store an event from %s user %s: %s", platform, event.person.user_id, exc)
        else:
            log.error("could not store an event from %s", platform, exc_info=exc)
        if event.kind is not Kind.MESSAGE:
            return Turn(failed=True)
        text = getattr(exc, "user_message", NOT_STORED)
        await self.delivery.send_now(event.conversation, event.person.user_id, text)
        return Turn(replies=[text], failed=True)

    async def _answer(self, received: Received, event: Event, recovered: bool = False) -> Turn:
        async with self.locks.hold(received.agent_id):
            earlier: list[inbox.Item] = []
            if recovered or self.locks.shared:
                waits, earlier = await self.db.read(inbox.ahead, received.agent_id, received.item_id)
                if not waits:  # answered meanwhile, in its turn, by the process holding the agent
                    log.info(
                        "agent %s: inbox item %d was answered by another turn",
                        received.agent_id,
                        received.item_id,
                    )
                    return Turn(duplicate=True)
            await self._answer_earlier(received.agent_id, earlier)
            return await self._run(received, event, None)

    async def _answer_earlier(self, agent_id: int, items: list[inbox.Item]) -> None:
        """With the agent's lock held across processes: first answer, oldest first, the events
        other processes stored for it earlier while they waited for it (`inbox.before`), in
        conversations this process delivers to, so a person's messages are answered in the
        order they came whichever process took each."""
        if not self.locks.shared:
            return
        for item in items:
            event = event_from_json(item.event)
            if not self.delivery.serves(event.conversation.platform, event.conversation.channel_id):
                continue  # (another conversation: its order is its own)
            conversation_id = await self.db.run(self.reception.conversation, event.conversation)
            received = Received(agent_id, item.id, conversation_id, item.received_at, item.message_id)
            await self._run(received, event, None)

    async def _run(
        self, received: Received, event: Event, stored: tuple[AgentMemory, Message] | None
    ) -> Turn:
        """One turn, the agent's lock held: within the deadline, never raising, the inbox row
        closed at the end (a crash leaves it for the next start)."""
        turn = Turn(stored=stored is not None)
        await self.delivery.turn_started(event.conversation)
        try:
            async with asyncio.timeout(self.settings.turn_deadline):
                await self._turn(turn, received, event, stored)
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
            if not turn.closed:
                await self.db.run(_finish, received.agent_id, received.item_id)
        except Exception as exc:
            log.error(
                "agent %s: could not close its turn (it will be answered again): %s", received.agent_id, exc
            )
        return turn

    async def _turn(
        self, turn: Turn, received: Received, event: Event, stored: tuple[AgentMemory, Message] | None
    ) -> None:
        memory, message = stored or await self._store_event(received, event)
        turn.stored = True
        person = event.person
        ctx = ToolContext(
            memory,
            Address(
                received.conversation_id,
                event.conversation.platform,
                person.user_id,
                event.message_id if event.kind is Kind.MESSAGE else "",  # a scheduler key is no reply
            ),
            turn_start_id=message.id,
            unprompted_cap=self.settings.max_unprompted_per_day if event.kind is Kind.HEARTBEAT else None,
        )
        loop = StepLoop(
            memory,
            self.llm,
            self.tools,
            self.budget,
            self.settings.max_steps,
            self.delivery.dispatch,
            situation(person.name or memory.agent.display_name, event.conversation),
            self.settings.log_content,
            close=partial(_finish, agent_id=received.agent_id, item_id=received.item_id),
        )
        self._current[received.item_id] = ctx
        try:
            await loop.run(turn, ctx, event.kind)
        finally:
            del self._current[received.item_id]
        if memory.missed_vectors or received.agent_id in self.reception.unembedded:
            await self._embed_missing(memory)

    async def _store_event(self, received: Received, event: Event) -> tuple[AgentMemory, Message]:
        """The event as a message in the agent's memory, in the transaction that marks its turn as
        begun; once only: a replay after a crash reuses the stored message."""
        scope = Scope(received.conversation_id, event.conversation.private)
        vector = (
            None if received.message_id is not None else await self.reception.vector(received.agent_id, event)
        )

        def begin(conn: Connection) -> tuple[AgentMemory, Message]:
            memory = self.memory(agents.get(conn, received.agent_id), scope)
            if received.message_id is not None:
                [message] = messages.get_many(conn, received.agent_id, [received.message_id])
            else:
                message = self.reception.store(conn, memory, event, vector, received.received_at)
            inbox.begin(conn, received.agent_id, received.item_id, message.id)
            return memory, message

        return await self.db.run(begin)

    async def _embed_missing(self, memory: AgentMemory) -> None:
        """Give vectors to messages stored while the embedder failed (now, if it works again)."""
        try:
            done = await memory.embed_missing()
        except MembotError as exc:
            self.reception.unembedded.add(memory.agent_id)
            log.warning("agent %s: messages still wait for their vectors: %s", memory.agent_id, exc)
            return
        self.reception.unembedded.discard(memory.agent_id)
        if done:
            log.info(
                "agent %s: embedded %d messages stored while the embedder was failing", memory.agent_id, done
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
            await self.db.run(ctx.notice, text)
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
        items = await self.db.read(inbox.waiting)
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
            conversation_id = await self.db.run(self.reception.conversation, event.conversation)
            received = Received(item.agent_id, item.id, conversation_id, item.received_at, item.message_id)
            answering.append(self._answer(received, event, recovered=True))
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


async def _answered(turn: Turn) -> Turn:
    return turn


def _duplicate(event: Event) -> Turn:
    log.info("dropped a redelivery of %s message %s", event.conversation.platform, event.message_id)
    return Turn(duplicate=True)


def _finish(conn: Connection, agent_id: int, item_id: int) -> None:
    inbox.done(conn, agent_id, item_id)
    agents.touch(conn, agent_id)


def check_database(settings: Settings) -> None:
    """Fail at start, in one line naming the fix, if MEMBOT_DB cannot be created or written."""
    check_writable(settings.db, settings.db_lock_wait)


async def open_database(path: str, model: str, dim: int, lock_wait: float = LOCK_WAIT) -> Database:
    """Migrate the file and check its vectors on a connection of their own, then open the one the
    bot uses: the migrations' hundreds of one-off statements never crowd its statement cache
    (measured: with them in it, every message insert was prepared anew, 2.3x the instructions)."""

    @changes_schema
    def prepare(conn: Connection) -> None:
        ran = migrations.migrate(conn)
        if ran:
            log.info("database %s: applied %s", path, ", ".join(ran))
        vectors.ensure(conn, model, dim)

    setup = open_at(path, lock_wait, vector_cache_bytes=0)
    try:
        await setup.run(prepare)
    finally:
        setup.close()
    return open_at(path, lock_wait)
