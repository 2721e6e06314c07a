"""The MemGPT tools: how the agent talks to the user and moves information between memory tiers."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from bot.errors import ToolError
from bot.tools import Registry, Tool, ToolContext, tool
from storage.clock import from_iso
from storage.errors import StorageError
from storage.messages import Message

PAGE_SIZE = 5
SEARCH_DEPTH = 50
SNIPPET_CHARS = 600


@tool(chains=False)
async def send_message(ctx: ToolContext, message: str) -> str:
    """Send a message to the user. This is the only way the user sees anything you write.

    Args:
        message: The text to send, in the user's language.
    """
    if not message.strip():
        raise ToolError("send_message needs a non-empty 'message'.")
    ctx.outbox.append(message)
    return "Sent."


async def _write(ctx: ToolContext, label: str, value: str) -> str:
    try:
        block = await ctx.memory.write_block(label, value)
    except StorageError as exc:
        raise ToolError(str(exc)) from None
    return f"Block '{label}' now holds {len(block.value)}/{block.char_limit} characters."


async def _block_value(ctx: ToolContext, label: str) -> str:
    try:
        return (await ctx.memory.block(label)).value
    except StorageError as exc:
        raise ToolError(str(exc)) from None


@tool()
async def core_memory_append(ctx: ToolContext, label: str, content: str) -> str:
    """Append a line to a core memory block (always in your context).

    Args:
        label: Block to edit: 'persona' (you) or 'human' (the user).
        content: Text to add, on a new line.
    """
    if not content.strip():
        raise ToolError("core_memory_append needs non-empty 'content'.")
    current = await _block_value(ctx, label)
    return await _write(ctx, label, f"{current}\n{content}" if current else content)


@tool()
async def core_memory_replace(ctx: ToolContext, label: str, old_content: str, new_content: str) -> str:
    """Replace exact text in a core memory block; an empty new_content deletes it.

    Args:
        label: Block to edit: 'persona' or 'human'.
        old_content: Text to replace; must match the block exactly.
        new_content: Replacement text ('' deletes).
    """
    current = await _block_value(ctx, label)
    if not old_content or old_content not in current:
        raise ToolError(
            f"'{old_content}' was not found in block '{label}'. Copy the exact text from the block; "
            f"it currently reads: {current[:500]!r}"
        )
    updated = current.replace(old_content, new_content)
    if not new_content:
        updated = "\n".join(line for line in updated.split("\n") if line.strip())
    return await _write(ctx, label, updated)


@tool()
async def archival_memory_insert(ctx: ToolContext, content: str) -> str:
    """Store a passage in archival memory (unlimited, searched by meaning). Write it self-contained.

    Args:
        content: The passage to store.
    """
    if not content.strip():
        raise ToolError("archival_memory_insert needs non-empty 'content'.")
    passage = await ctx.memory.insert_passage(content)
    return f"Stored as passage {passage.id}."


def _page(results: list[str], total: int, page: int, what: str) -> str:
    if not results:
        return f"No {what} found" + (f" on page {page}." if page else ".")
    first = page * PAGE_SIZE + 1
    last = first + len(results) - 1
    more = f" Use page={page + 1} for more." if last < total else ""
    return f"Showing {what} {first}-{last} of {total}:{more}\n" + "\n".join(results)


def _clip(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…"


def _check_page(page: int) -> None:
    if page < 0:
        raise ToolError("page starts at 0.")


@tool()
async def archival_memory_search(ctx: ToolContext, query: str, page: int = 0) -> str:
    """Search archival memory by meaning and keywords.

    Args:
        query: What to look for.
        page: Result page, from 0.
    """
    _check_page(page)
    found = await ctx.memory.search_passages(query, SEARCH_DEPTH)
    shown = found[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    lines = [f"[{_when(ctx, p.created_at)}] {_clip(p.content)}" for p in shown]
    return _page(lines, len(found), page, "passages")


def _when(ctx: ToolContext, stamp: str) -> str:
    return ctx.memory.local(from_iso(stamp)).strftime("%Y-%m-%d %H:%M")


def _describe(ctx: ToolContext, message: Message) -> str:
    who = "user" if message.role == "user" else "you"
    return f"[{_when(ctx, message.created_at)}] {who}: {_clip(message.search_text)}"


@tool()
async def conversation_search(ctx: ToolContext, query: str, page: int = 0) -> str:
    """Search all past messages with the user (including ones no longer in context).

    Args:
        query: Words or meaning to look for.
        page: Result page, from 0.
    """
    _check_page(page)
    found = await ctx.memory.search_messages(query, SEARCH_DEPTH, before_id=ctx.turn_start_id or None)
    shown = found[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    return _page([_describe(ctx, m) for m in shown], len(found), page, "messages")


def _parse_day(ctx: ToolContext, text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ToolError(f"{name} must be a date like 2024-05-31, not {text!r}.") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ctx.memory.zone)
    return value


@tool()
async def conversation_search_date(ctx: ToolContext, start_date: str, end_date: str, page: int = 0) -> str:
    """List past messages between two dates (inclusive, in the user's time zone).

    Args:
        start_date: First day, YYYY-MM-DD.
        end_date: Last day, YYYY-MM-DD.
        page: Result page, from 0.
    """
    _check_page(page)
    start = _parse_day(ctx, start_date, "start_date")
    end = _parse_day(ctx, end_date, "end_date")
    if len(end_date.strip()) <= 10:
        end = datetime.combine(end.date(), time.min, end.tzinfo) + timedelta(days=1)
    if end <= start:
        raise ToolError("end_date must not be before start_date.")
    found, total = await ctx.memory.messages_between(start, end, PAGE_SIZE, page * PAGE_SIZE)
    return _page([_describe(ctx, m) for m in found], total, page, "messages")


TOOLS: list[Tool] = [
    send_message,
    core_memory_append,
    core_memory_replace,
    archival_memory_insert,
    archival_memory_search,
    conversation_search,
    conversation_search_date,
]


def registry() -> Registry:
    return Registry(TOOLS)
