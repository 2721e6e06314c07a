"""The step loop: one event in, LLM steps with tool calls, messages out.

The event is on disk before the first LLM call. Each step compiles the main context, keeps it
under the token budget (warning, then eviction), calls the model, stores what it said, runs its
tool calls and stores their results. The loop goes on after `request_heartbeat` or a failed tool
and stops on `send_message` or plain text (which is delivered as the reply). It never runs more
than `max_steps` LLM calls for one event.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.errors import ModelError
from bot.llm import LLM, Completion
from bot.memory import AgentMemory
from bot.pressure import Budget, flush
from bot.prompt import render_queue, system_message
from bot.tokens import PER_REQUEST, count_message
from bot.tools import Registry, ToolContext
from storage.messages import Message

log = logging.getLogger(__name__)

OVERFLOW_RETRIES = 2
STEP_CAP_REPLY = "Sorry, I got stuck thinking about that and stopped myself. Could you say it another way?"
PRESSURE_WARNING = (
    "Memory pressure: the conversation fills {percent}% of your context window. The oldest messages "
    "will soon be summarised and leave your view. Save anything important now with "
    "core_memory_append, core_memory_replace or archival_memory_insert."
)


@dataclass
class Turn:
    """What one event produced."""

    replies: list[str] = field(default_factory=list)
    steps: int = 0
    failed: bool = False
    prompt_tokens: list[int] = field(default_factory=list)
    activity: list[str] = field(default_factory=list)
    llm_seconds: float = 0.0


class Agent:
    def __init__(
        self,
        memory: AgentMemory,
        llm: LLM,
        tools: Registry,
        budget: Budget,
        max_steps: int,
        log_content: bool = False,
    ) -> None:
        self.memory = memory
        self.llm = llm
        self.tools = tools
        self.budget = budget
        self.max_steps = max_steps
        self.log_content = log_content

    async def context(self) -> tuple[list[dict[str, Any]], int, list[Message]]:
        """The main context for the next call, its size in tokens (tool schemas included), and the
        stored queue it was rendered from."""
        agent, blocks, stats, queue = await self.memory.snapshot()
        system = system_message(agent, blocks, stats, datetime.now(UTC))
        rendered = render_queue(queue, agent, self.budget.per_message)
        size = PER_REQUEST + count_message(system) + sum(n for _, n in rendered) + self.tools.schema_tokens
        return [system, *(entry for entry, _ in rendered)], size, queue

    async def _fit(self, turn: Turn, harder: bool = False) -> tuple[list[dict[str, Any]], int]:
        """Compile the context, warning or evicting so that it fits the budget."""
        messages, size, queue = await self.context()
        if harder or size > self.budget.limit:
            keep = 0.2 if harder else min(0.5, 0.5 * self.budget.limit / size)
            flushed = await flush(self.llm, self.memory, queue, self.budget, keep)
            turn.llm_seconds += flushed.llm_seconds
            messages, size, _ = await self.context()
        elif size > self.budget.warn_at and not self.memory.agent.pressure_warned:
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

    async def _call(self, turn: Turn) -> tuple[Completion, int]:
        harder = False
        for attempt in range(OVERFLOW_RETRIES + 1):
            messages, size = await self._fit(turn, harder)
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

    async def step(self, turn: Turn, ctx: ToolContext) -> bool:
        """One LLM call and its tool calls; True if the loop should go on."""
        completion, size = await self._call(turn)
        turn.steps += 1
        turn.prompt_tokens.append(size)
        calls = completion.tool_calls
        said = [_message_argument(c.arguments) for c in calls if c.name == "send_message"]
        await self.memory.add_message(
            "assistant",
            "assistant",
            completion.content,
            tool_calls=json.dumps([c.wire() for c in calls]) if calls else None,
            search_text="\n".join(s for s in said if s) if calls else completion.content,
        )
        if completion.content:
            turn.activity.append(f"thinks: {completion.content}")
            if self.log_content:
                log.info("agent %s thinks: %s", self.memory.agent_id, completion.content)
        if not calls:
            if completion.content.strip():
                turn.replies.append(completion.content.strip())
            return False
        go_on = False
        for call in calls:
            outcome = await self.tools.call(ctx, call.name, call.arguments)
            await self.memory.add_message(
                "tool", "tool", outcome.content, tool_call_id=call.id, tool_name=call.name
            )
            log.info("agent %s tool %s ok=%s", self.memory.agent_id, call.name, outcome.ok)
            turn.activity.append(f"{call.name}({call.arguments}) -> {outcome.content}")
            go_on = go_on or outcome.heartbeat or not outcome.ok
        turn.replies.extend(ctx.outbox)
        ctx.outbox.clear()
        return go_on

    async def handle(self, kind: str, text: str) -> Turn:
        """Store the event, then step until the agent is done. Never raises for a model failure."""
        started = time.perf_counter()
        event = await self.memory.add_message("user", kind, text, search_text=text if kind == "user" else "")
        turn = Turn()
        ctx = ToolContext(memory=self.memory, turn_start_id=event.id)
        try:
            while turn.steps < self.max_steps:
                if not await self.step(turn, ctx):
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
                if kind == "user":
                    turn.replies.append(STEP_CAP_REPLY)
        except ModelError as exc:
            log.error("agent %s: turn failed: %s", self.memory.agent_id, exc)
            turn.failed = True
            turn.replies.extend(ctx.outbox)
            if kind == "user":
                turn.replies.append(exc.user_message)
        log.info(
            "agent %s: %s handled in %d steps, %.0f ms",
            self.memory.agent_id,
            kind,
            turn.steps,
            (time.perf_counter() - started) * 1000,
        )
        return turn


def _message_argument(arguments: str) -> str:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return ""
    message = value.get("message") if isinstance(value, dict) else None
    return message if isinstance(message, str) else ""
