"""Main context: what one LLM call sees, in MemGPT's order.

1. system instructions, 2. core memory blocks (with characters used / limit), 3. memory
statistics and the user's local time, 4. the recursive summary — all in one system message, as
some local chat templates accept only one — then 5. the FIFO queue in wire format, each input
stamped with the user's local time.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from bot.memory import Stats
from bot.tokens import count_message, truncate
from storage.agents import Agent
from storage.blocks import Block
from storage.clock import from_iso
from storage.messages import Message

INSTRUCTIONS = """\
You are a long-lived personal companion agent with memory that lasts months.

How you work:
- Your replies' text is private inner monologue (keep it short). The user sees ONLY what you pass to send_message.
- You are woken by user messages, by system events and by timed heartbeats. For events you may do nothing.
- Every tool except send_message takes request_heartbeat: set it true to get another step after the result.

Your memory:
- Core memory (below) is always in view: 'persona' is who you are, 'human' is what you know about the user. \
Keep it current with core_memory_append and core_memory_replace; each block has a character limit.
- Recall memory holds every past message, even ones no longer in view: search it with conversation_search \
and conversation_search_date.
- Archival memory holds what you chose to keep: store facts with archival_memory_insert, find them with \
archival_memory_search.
- Older messages are summarised and leave your view; save anything important before that happens.
- When the user tells you something worth remembering, save it. When they ask about the past, search first.
"""


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %a")


def system_message(agent: Agent, blocks: list[Block], stats: Stats, now: datetime) -> dict[str, Any]:
    local = now.astimezone(_zone(agent.timezone))
    parts = [INSTRUCTIONS, "## Core memory"]
    for block in blocks:
        parts.append(
            f'<{block.label} purpose="{block.description}" chars="{len(block.value)}/{block.char_limit}">\n'
            f"{block.value}\n</{block.label}>"
        )
    updated = (
        _fmt(from_iso(stats.memory_updated_at).astimezone(local.tzinfo))
        if stats.memory_updated_at
        else "never"
    )
    parts.append(
        "## Memory statistics\n"
        f"{stats.recall_messages} messages in recall memory; {stats.archival_passages} passages in archival "
        f"memory; memory last changed {updated}. The user's time now: {_fmt(local)} ({agent.timezone})."
    )
    if agent.summary:
        parts.append(
            f"## Summary of the {agent.summary_covers} earliest messages (no longer in view)\n{agent.summary}"
        )
    return {"role": "system", "content": "\n\n".join(parts)}


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(created_at: str, timezone: str) -> str:
    return _fmt(from_iso(created_at).astimezone(_zone(timezone)))


def stamp(message: Message, agent: Agent) -> str:
    return _local(message.created_at, agent.timezone)


Rendered = tuple[dict[str, Any], int]
INTERRUPTED = json.dumps({"status": "Failed", "message": "Interrupted before it ran."})


@lru_cache(maxsize=50_000)
def render_message(message: Message, timezone: str, max_tokens: int) -> Rendered:
    """One stored message in wire format, with its token count (messages never change: cached)."""
    content = _clip(message.content, max_tokens)
    when = _local(message.created_at, timezone)
    entry: dict[str, Any]
    if message.role == "tool":
        entry = {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
    elif message.role == "assistant":
        entry = {"role": "assistant", "content": content or None}
        if message.tool_calls:
            entry["tool_calls"] = json.loads(message.tool_calls)
    elif message.kind == "user":
        entry = {"role": "user", "content": f"[{when}] {content}"}
    else:
        entry = {"role": "user", "content": f"[{when}] [system event] {content}"}
    return entry, count_message(entry)


def render_queue(queue: list[Message], agent: Agent, max_tokens_each: int) -> list[Rendered]:
    """The FIFO queue in wire format with token counts; repairs tool calls a crash left unanswered.

    The wire dicts are shared with the render cache: callers must not change them.
    """
    wire: list[Rendered] = []
    open_calls: list[str] = []
    answered: set[str] = set()
    for message in queue:
        entry, size = render_message(message, agent.timezone, max_tokens_each)
        if message.role == "tool":
            if message.tool_call_id not in open_calls or message.tool_call_id in answered:
                continue  # its call was evicted or never stored: a lone result is invalid on the wire
            answered.add(str(message.tool_call_id))
            wire.append((entry, size))
            continue
        _close_unanswered(wire, open_calls, answered)
        if entry.get("tool_calls"):
            open_calls = [call["id"] for call in entry["tool_calls"]]
            answered = set()
        wire.append((entry, size))
    _close_unanswered(wire, open_calls, answered)
    return wire


def _close_unanswered(wire: list[Rendered], open_calls: list[str], answered: set[str]) -> None:
    for call_id in open_calls:
        if call_id not in answered:
            entry = {"role": "tool", "tool_call_id": call_id, "content": INTERRUPTED}
            wire.append((entry, count_message(entry)))
            answered.add(call_id)
    open_calls.clear()


def _clip(text: str, max_tokens: int) -> str:
    clipped = truncate(text, max_tokens)
    if clipped == text:
        return text
    return clipped + " … [cut here to fit the context window; the full text is in recall memory]"
