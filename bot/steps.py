"""The step loop: one stored event in, LLM steps with tool calls, messages out as they are sent.

Each step compiles the main context, keeps it under the token budget (warning, then eviction;
never of the turn being answered), calls the model and runs the read-only part of its tool calls
(searches, embedding); then one transaction stores what the model said, every call's effect and
every call's result, so a crash keeps the whole step or none of it. A `send_message` is in the
outbox when that transaction commits and is handed to the platform at once, before the next step. The loop goes on after
`request_heartbeat` or a failed tool and stops on `send_message` or plain text. Plain text is
inner monologue; it reaches the person only as the fallback answer to their own message when
nothing else was sent in the turn. It never runs more than `max_steps` LLM calls for one event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.errors import ModelError, ToolError
from bot.events import Kind
from bot.llm import LLM, Completion, ToolCall
from bot.memory import AgentMemory
from bot.pressure import Budget, flush
from bot.prompt import render_queue, system_message
from bot.tokens import PER_REQUEST
from bot.tools import Registry, ToolContext, ToolOutcome, failed, result_text
from storage import outbox, vectors
from storage.db import Connection
from storage.messages import Message

log = logging.getLogger(__name__)

OVERFLOW_RETRIES = 2
STEP_CAP_REPLY = "Sorry, I got stuck thinking about that and stopped myself. Could you say it another way?"
PRESSURE_WARNING = (
    "Memory pressure: the conversation fills {percent}% of your context window. The oldest messages "
    "will soon be summarised and leave your view. Save anything important now with "
    "core_memory_append, core_memory_replace or archival_memory_insert."
)

Deliver = Callable[[list[outbox.Entry]], None]


@dataclass
class Turn:
    """What one event produced."""

    replies: list[str] = field(default_factory=list)  # what the person was sent, in order
    steps: int = 0
    failed: bool = False
    duplicate: bool = False  # a redelivery of a message already received: nothing was done
    stored: bool = False  # the event is in the agent's recall memory
    closed: bool = False  # the event's inbox row is closed (with the turn's last step)
    prompt_tokens: list[int] = field(default_factory=list)
    activity: list[str] = field(default_factory=list)
    llm_seconds: float = 0.0


class StepLoop:
    def __init__(
        self,
        memory: AgentMemory,
        llm: LLM,
        tools: Registry,
        budget: Budget,
        max_steps: int,
        deliver: Deliver,
        where: str = "",
        log_content: bool = False,
        close: Callable[[Connection], None] | None = None,
    ) -> None:
        self.memory = memory
        self.llm = llm
        self.tools = tools
        self.budget = budget
        self.max_steps = max_steps
        self.deliver = deliver
        self.where = where
        self.log_content = log_content
        self.close = close  # ends the turn on disk; run in the transaction of its last step

    async def context(self) -> tuple[list[dict[str, Any]], int, list[Message]]:
        """The main context for the next call, its size in tokens (tool schemas included), and the
        stored queue it was rendered from."""
        snapshot = await self.memory.snapshot()
        system, system_size = system_message(snapshot, self.where, datetime.now(UTC), self.memory.public)
        rendered = render_queue(
            snapshot.queue,
            snapshot.agent,
            self.budget.per_message,
            snapshot.places,
            self.memory.scope.conversation_id,
        )
        size = PER_REQUEST + system_size + sum(n for _, n in rendered) + self.tools.schema_tokens
        return [system, *(entry for entry, _ in rendered)], size, snapshot.queue

    async def _fit(
        self, turn: Turn, protect_from: int, harder: bool = False
    ) -> tuple[list[dict[str, Any]], int]:
        """Compile the context, warning or evicting so that it fits the budget."""
        messages, size, queue = await self.context()
        if harder or size > self.budget.limit:
            keep = 0.2 if harder else min(0.5, 0.5 * self.budget.limit / size)
            flushed = await flush(self.llm, self.memory, queue, self.budget, keep, protect_from)
            turn.llm_seconds += flushed.llm_seconds
            messages, size, _ = await self.context()
        elif size > self.budget.warn_at and not self.memory.agent.warned(self.memory.public):
            percent = round(100 * size / self.budget.window)
            await self.memory.add_message("user", "warning", PRESSURE_WARNING.format(percent=percent))
            await self.memory.set_pressure_warned(True)
            messages, size, _ = await self.context()
        if size > self.budget.limit:
            log.warning(
                "agent %s: context %d tokens still over %d after flush",
                self.memory.agent_id,
                size,
                self.budget.limit,
            )
        return messages, size

    async def _call(self, turn: Turn, protect_from: int) -> tuple[Completion, int]:
        harder = False
        for attempt in range(OVERFLOW_RETRIES + 1):
            messages, size = await self._fit(turn, protect_from, harder)
            started = time.perf_counter()
            try:
                return await self.llm.complete(messages, self.tools.schemas), size
            except ModelError as exc:
                if not exc.context_overflow or attempt == OVERFLOW_RETRIES:
                    raise
                log.warning(
                    "agent %s: provider says context overflow at %d tokens; flushing harder",
                    self.memory.agent_id,
                    size,
                )
                harder = True
            finally:
                turn.llm_seconds += time.perf_counter() - started
        raise AssertionError("unreachable")

    def _store_step(
        self,
        conn: Connection,
        turn: Turn,
        ctx: ToolContext,
        completion: Completion,
        search_text: str,
        vector: bytes | None,
        outcomes: list[tuple[ToolCall, ToolOutcome]],
        fallback: bool,
    ) -> list[ToolOutcome]:
        """The model's answer, each call's effect and each call's result, in one transaction: a
        crash keeps all of the step or none of it. An effect that refuses (a full block) is
        undone alone, and its call fails. If this step ends the turn (and no fallback answer is
        still to be sent), the turn is closed in the same transaction."""
        memory, calls = self.memory, completion.tool_calls
        ctx.queued.clear()  # if this transaction is tried again, nothing of the first try is kept
        turn.closed = False
        memory.store(
            conn,
            "assistant",
            "assistant",
            completion.content,
            vector,
            tool_calls=json.dumps([c.wire() for c in calls]) if calls else None,
            search_text=search_text,
        )
        results = []
        for call, outcome in outcomes:
            if outcome.effect is not None:
                outcome = _apply(conn, ctx, call, outcome)
            memory.append(conn, "tool", "tool", outcome.content, tool_call_id=call.id, tool_name=call.name)
            results.append(outcome)
        go_on = any(outcome.heartbeat or not outcome.ok for outcome in results)
        if self.close is not None and not fallback and (not go_on or turn.steps >= self.max_steps):
            self.close(conn)
            turn.closed = True
        return results

    def hand_over(self, ctx: ToolContext) -> None:
        """Give what this step wrote to the outbox to the deliverer (it is on disk already)."""
        if ctx.queued:
            ctx.sent.extend(entry.text for entry in ctx.queued)
            self.deliver(list(ctx.queued))
            ctx.queued.clear()

    async def notify(self, ctx: ToolContext, text: str) -> None:
        """Send the person a message the agent did not write with send_message (a fallback
        answer, a notice that something failed)."""
        await self.memory.db.run(ctx.notice, text)
        self.hand_over(ctx)

    async def step(self, turn: Turn, ctx: ToolContext, kind: Kind) -> bool:
        """One LLM call and its tool calls; True if the loop should go on."""
        completion, size = await self._call(turn, ctx.turn_start_id)
        turn.steps += 1
        turn.prompt_tokens.append(size)
        calls = completion.tool_calls
        if completion.content:
            turn.activity.append(f"thinks: {completion.content}")
            if self.log_content:
                log.info("agent %s thinks: %s", self.memory.agent_id, completion.content)
        outcomes = [(call, await self.tools.call(ctx, call.name, call.arguments)) for call in calls]
        said = [_message_argument(c.arguments) for c in calls if c.name == "send_message"]
        search_text = "\n".join(s for s in said if s) if calls else completion.content
        vector = await self.memory.embedding(search_text)
        fallback = not calls and bool(completion.content.strip()) and kind is Kind.MESSAGE and not ctx.sent
        results = await self.memory.db.run(
            self._store_step, turn, ctx, completion, search_text, vector, outcomes, fallback
        )
        self.hand_over(ctx)
        if not calls:
            if fallback:
                await self.notify(ctx, completion.content.strip())
            return False
        go_on = False
        for (call, _), outcome in zip(outcomes, results, strict=True):
            log.info("agent %s tool %s ok=%s", self.memory.agent_id, call.name, outcome.ok)
            turn.activity.append(f"{call.name}({call.arguments}) -> {outcome.content}")
            go_on = go_on or outcome.heartbeat or not outcome.ok
        return go_on

    async def run(self, turn: Turn, ctx: ToolContext, kind: Kind) -> Turn:
        """Step until the agent is done (the event is stored already). A model failure ends the
        turn with a short message to the person, if the event was theirs; other errors raise."""
        try:
            while turn.steps < self.max_steps:
                if not await self.step(turn, ctx, kind):
                    break
            else:
                log.warning(
                    "agent %s: step cap of %d reached; stopping the chain",
                    self.memory.agent_id,
                    self.max_steps,
                )
                await self.memory.add_message(
                    "user", "notice", f"Step cap of {self.max_steps} reached; the chain was stopped."
                )
                if kind is Kind.MESSAGE:
                    await self.notify(ctx, STEP_CAP_REPLY)
        except ModelError as exc:
            log.error("agent %s: turn failed: %s", self.memory.agent_id, exc)
            turn.failed = True
            if kind is Kind.MESSAGE:
                await self.notify(ctx, exc.user_message)
        finally:
            turn.replies = list(ctx.sent)
        return turn


def _apply(conn: Connection, ctx: ToolContext, call: ToolCall, outcome: ToolOutcome) -> ToolOutcome:
    """Run one call's effect inside the step's transaction; undo it alone if it refuses."""
    assert outcome.effect is not None
    ctx.call_id = call.id
    queued = len(ctx.queued)
    conn.execute("SAVEPOINT effect")
    try:
        text = outcome.effect(conn)
    except ToolError as exc:
        conn.execute("ROLLBACK TO effect")
        conn.execute("RELEASE effect")
        del ctx.queued[queued:]
        for table in vectors.TABLES:  # an undone insert must not linger in the vector cache
            vectors.invalidate(conn, table, ctx.memory.agent_id)
        return failed(str(exc))
    conn.execute("RELEASE effect")
    return ToolOutcome(result_text("OK", text), True, outcome.heartbeat)


def _message_argument(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return ""
    message = value.get("message") if isinstance(value, dict) else None
    return message if isinstance(message, str) else ""
