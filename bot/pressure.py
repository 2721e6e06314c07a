"""Memory pressure: the token budget, the warning, and eviction with a recursive summary.

Every request is counted with o200k before it is sent. Past `warn_at` the agent is told once per
fill-up; past `limit` the oldest part of the queue is evicted (never the last few messages, never
the turn being answered, never a tool call apart from its results) and folded into the summary by a separate LLM call that offers no
tools. Evicted messages stay in recall memory. If the summariser fails, the messages are evicted
anyway with a note in the summary: the turn goes on, the queue is never wiped. Each view of the
agent (private, public) has its own queue and summary; a flush works on the one being answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.errors import ModelError
from bot.llm import LLM
from bot.memory import AgentMemory
from bot.prompt import stamp
from bot.tokens import count_text, truncate
from storage.messages import Message

log = logging.getLogger(__name__)

KEEP_LAST = 4
SUMMARY_PROMPT = """\
You maintain the running summary of a long conversation between an AI companion ("assistant") and \
its user. Merge the previous summary and the new messages into one updated summary. Keep names, \
facts about the user, dates, plans, promises and open questions; drop small talk. Write plain prose \
or short bullet points, at most {words} words. Reply with the summary only."""


@dataclass(frozen=True)
class Budget:
    """Token thresholds for one context window."""

    window: int

    @property
    def reserve(self) -> int:
        """Tokens kept free for the model's answer."""
        return min(2048, self.window // 8)

    @property
    def limit(self) -> int:
        return self.window - self.reserve

    @property
    def warn_at(self) -> int:
        return int(self.limit * 0.75)

    @property
    def per_message(self) -> int:
        """Largest share of the window one message may take in context."""
        return max(200, self.limit // 5)

    @property
    def summary_tokens(self) -> int:
        return max(150, self.limit // 10)


def message_text(message: Message, memory: AgentMemory) -> str:
    who = {"user": message.speaker or "user", "assistant": "assistant", "tool": "tool result"}.get(
        message.role, "event"
    )
    if message.role == "user" and message.kind != "user":
        who = "event"
    text = message.search_text or message.content
    if message.tool_calls and message.role == "assistant":
        text = f"{message.content} (tool calls: {message.tool_calls})"
    return f"[{stamp(message, memory.agent)}] {who}: {text}"


def choose_cut(queue: list[Message], tokens: list[int], keep_fraction: float, protect_from: int = 0) -> int:
    """How many of the oldest messages to evict so about `keep_fraction` of the tokens remain.

    Never the last KEEP_LAST messages, never a message with id >= `protect_from` (the turn being
    answered), and never a tool call without its results: a cut that would fall between a call and
    its results moves back to before the call."""
    limit = len(queue) - KEEP_LAST
    if protect_from:
        limit = min(limit, next((i for i, m in enumerate(queue) if m.id >= protect_from), len(queue)))
    if limit <= 0:
        return 0
    total = sum(tokens)
    cut, evicted = 0, 0
    while cut < limit and evicted < total * (1 - keep_fraction):
        evicted += tokens[cut]
        cut += 1
    back = cut
    while 0 < back < len(queue) and queue[back].role == "tool":  # keep calls with their results
        back -= 1
    if back > 0 or cut == 0:
        return back
    while cut < limit and queue[cut].role == "tool":  # the first call's results: evict them with it
        cut += 1
    return cut if cut == len(queue) or queue[cut].role != "tool" else 0


async def summarise(
    llm: LLM, memory: AgentMemory, evicted: list[Message], budget: Budget
) -> tuple[str, float]:
    """The new summary (the old one plus `evicted`, folded chunk by chunk to fit the window) and
    the seconds spent waiting on the LLM."""
    summary, _ = memory.summary()
    waited = 0.0
    words = int(budget.summary_tokens * 0.7)
    room = budget.limit - budget.summary_tokens - count_text(SUMMARY_PROMPT) - 200
    chunk: list[str] = []
    used = 0
    lines = [truncate(message_text(m, memory), budget.per_message) for m in evicted]
    for index, line in enumerate(lines):
        size = count_text(line) + 1
        chunk.append(line)
        used += size
        if used >= room - count_text(summary) - budget.per_message or index == len(lines) - 1:
            summary, seconds = await _fold(llm, summary, chunk, words, budget)
            waited += seconds
            chunk, used = [], 0
    return summary, waited


async def _fold(llm: LLM, summary: str, lines: list[str], words: int, budget: Budget) -> tuple[str, float]:
    request = [
        {"role": "system", "content": SUMMARY_PROMPT.format(words=words)},
        {
            "role": "user",
            "content": f"Previous summary:\n{summary or '(none)'}\n\nNew messages:\n" + "\n".join(lines),
        },
    ]
    completion = await llm.complete(request, tools=None, max_tokens=budget.summary_tokens)
    text = completion.content.strip()
    if not text:
        raise ModelError("the summariser returned an empty summary", "")
    return truncate(text, budget.summary_tokens), completion.seconds


@dataclass(frozen=True)
class Flushed:
    evicted: int
    llm_seconds: float


async def flush(
    llm: LLM,
    memory: AgentMemory,
    queue: list[Message],
    budget: Budget,
    keep_fraction: float = 0.5,
    protect_from: int = 0,
) -> Flushed:
    """Evict the oldest part of the queue into the summary (never messages from `protect_from` on)."""
    tokens = [count_text(m.content) + count_text(m.tool_calls or "") + 4 for m in queue]
    cut = choose_cut(queue, tokens, keep_fraction, protect_from)
    if cut == 0:
        return Flushed(0, 0.0)
    evicted = queue[:cut]
    old_summary, old_covers = memory.summary()
    covers = old_covers + len(evicted)
    waited = 0.0
    try:
        summary, waited = await summarise(llm, memory, evicted, budget)
    except ModelError as exc:
        log.warning("agent %s: summariser failed (%s); evicting without a summary", memory.agent_id, exc)
        note = (
            f"(The summariser failed; {len(evicted)} messages up to {stamp(evicted[-1], memory.agent)} "
            "left view unsummarised. Search recall memory for them.)"
        )
        summary = truncate(f"{old_summary}\n{note}".strip(), budget.summary_tokens)
    await memory.evict(evicted[-1].id, summary, covers)
    await memory.add_message("system", "summary", summary, in_context=False)
    log.info("agent %s: evicted %d messages into the summary", memory.agent_id, len(evicted))
    return Flushed(len(evicted), waited)
