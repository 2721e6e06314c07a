"""Main context: what one LLM call sees, in MemGPT's order.

1. system instructions and where the agent is (platform, DM or channel, who is speaking),
2. core memory blocks (with characters used / limit), 3. memory statistics and the user's local
time, 4. the recursive summary — all in one system message, as some local chat templates accept
only one — then 5. the FIFO queue in wire format, each input stamped with the user's local time
(and with the channel's name when it was said in a public channel other than this one).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from bot.events import Conversation
from bot.memory import Snapshot
from bot.tokens import PER_MESSAGE, count_message, count_text, truncate
from storage.agents import Agent
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
Rendered = tuple[dict[str, Any], int]  # a wire message and its size in tokens
PRIVATE_NOTE = (
    "This conversation is private: only {name} reads what you send. What you learn here is never shown "
    "to you while you answer in a public channel."
)
PUBLIC_NOTE = (
    "This conversation is public: other people read what you send. You see only what {name} said in "
    "public, and your public core memory; what they told you in private stays out of view, and you must "
    "not reveal it. What you save here is public."
)


def situation(speaker: str, conversation: Conversation) -> str:
    """Where the agent is and who speaks, for the system message."""
    name = speaker or "the user"
    note = (PRIVATE_NOTE if conversation.private else PUBLIC_NOTE).format(name=name)
    return f"## Where you are\nYou are talking with {name} in {conversation.describe()}. {note}"


def _fmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %a")


@lru_cache(maxsize=4096)
def _part_tokens(text: str) -> int:
    return count_text(text)


def system_message(snapshot: Snapshot, where: str, now: datetime, public: bool = False) -> Rendered:
    """The system message and its size in tokens. The size is counted part by part (instructions,
    blocks and summary change rarely: their counts are cached) plus one token for each separator,
    which never counts fewer tokens than the joined text has (a token never spans a blank line)."""
    agent, stats = snapshot.agent, snapshot.stats
    local = now.astimezone(_zone(agent.timezone))
    parts = [INSTRUCTIONS, where, "## Core memory"]
    for block in snapshot.blocks:
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
    summary, covers = agent.summary_of(public)
    if summary:
        parts.append(f"## Summary of the {covers} earliest messages (no longer in view)\n{summary}")
    size = PER_MESSAGE + count_text("system") + sum(_part_tokens(p) for p in parts) + len(parts) - 1
    return {"role": "system", "content": "\n\n".join(parts)}, size


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(created_at: str, timezone: str) -> str:
    return _fmt(from_iso(created_at).astimezone(_zone(timezone)))


def stamp(message: Message, agent: Agent) -> str:
    return _local(message.created_at, agent.timezone)


INTERRUPTED = json.dumps({"status": "Failed", "message": "Interrupted before it ran."})


@lru_cache(maxsize=50_000)
def render_message(message: Message, timezone: str, max_tokens: int, place: str = "") -> Rendered:
    """One stored message in wire format, with its token count (messages never change: cached).
    `place` names the public channel it was said in, when that is not the one being answered."""
    content = _clip(message.content, max_tokens)
    when = _local(message.created_at, timezone) + (f" in {place}" if place else "")
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


def render_queue(
    queue: list[Message],
    agent: Agent,
    max_tokens_each: int,
    places: dict[int, str] | None = None,
    here: int | None = None,
) -> list[Rendered]:
    """The FIFO queue in wire format with token counts; repairs tool calls a crash left unanswered
    (a call's effect and its result are stored together, so an unanswered call did not run).

    The wire dicts are shared with the render cache: callers must not change them.
    """
    wire: list[Rendered] = []
    open_calls: list[str] = []
    answered: set[str] = set()
    places = places or {}
    for message in queue:
        place = ""
        if message.conversation_id is not None and message.conversation_id != here:
            place = places.get(message.conversation_id, "")
        entry, size = render_message(message, agent.timezone, max_tokens_each, place)
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
