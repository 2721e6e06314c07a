"""The MemGPT tools: how the agent talks to the user and moves information between memory tiers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

from bot import document_tools, reminder_tools
from bot.errors import ToolError
from bot.reminder_tools import unprompted
from bot.tools import Effect, Registry, Tool, ToolContext, tool
from storage import blocks
from storage.blocks import PRIVATE, Block
from storage.clock import from_iso
from storage.db import Connection
from storage.errors import BlockLimitError, StorageError
from storage.messages import Message

PAGE_SIZE = 5
SEARCH_DEPTH = 50
SNIPPET_CHARS = 600


@tool(chains=False)
async def send_message(ctx: ToolContext, message: str) -> Effect:
    """Send a message to the user. This is the only way the user sees anything you write.

    Args:
        message: The text to send, in the user's language.
    """
    if not message.strip():
        raise ToolError("send_message needs a non-empty 'message'.")

    def effect(conn: Connection) -> str:
        if ctx.unprompted_cap is not None:
            unprompted(conn, ctx, ctx.unprompted_cap)
        ctx.send(conn, message)
        return "Sent."

    return effect


def _block(conn: Connection, ctx: ToolContext, label: str, scope: str) -> Block:
    try:
        return blocks.get(conn, ctx.memory.agent_id, label, scope)
    except StorageError as exc:
        raise ToolError(str(exc)) from None


def _write(conn: Connection, ctx: ToolContext, label: str, value: str, scope: str) -> Block:
    try:
        return blocks.write(conn, ctx.memory.agent_id, label, value, scope)
    except BlockLimitError as exc:
        raise ToolError(str(exc)) from None


def _written(block: Block, mirrored: str) -> str:
    return f"Block '{block.label}' now holds {len(block.value)}/{block.char_limit} characters.{mirrored}"


def _mirror(conn: Connection, ctx: ToolContext, label: str, change: Callable[[str], str | None]) -> str:
    """In public, apply the same change to the private block too: what is learned in public may
    be known in private (never the other way round). Returns a note for the result."""
    if ctx.memory.scope.private:
        return ""
    try:
        private = blocks.get(conn, ctx.memory.agent_id, label, PRIVATE)
        updated = change(private.value)
        if updated is not None:
            blocks.write(conn, ctx.memory.agent_id, label, updated, PRIVATE)
    except StorageError:
        return " (Your private copy of this block is full or missing, so only the public one changed.)"
    return ""


@tool()
async def core_memory_append(ctx: ToolContext, label: str, content: str) -> Effect:
    """Append a line to a core memory block (always in your context).

    Args:
        label: Block to edit: 'persona' (you) or 'human' (the user).
        content: Text to add, on a new line.
    """
    if not content.strip():
        raise ToolError("core_memory_append needs non-empty 'content'.")

    def appended(value: str) -> str:
        return f"{value}\n{content}" if value else content

    def effect(conn: Connection) -> str:
        scope = ctx.memory.scope.blocks
        block = _write(conn, ctx, label, appended(_block(conn, ctx, label, scope).value), scope)
        return _written(block, _mirror(conn, ctx, label, appended))

    return effect


def without(text: str, old: str) -> str:
    """`text` with `old` taken out; when `old` is whole lines, those lines go too (and no other
    line: blank lines elsewhere in the block stay as they are)."""
    padded, target = f"\n{text}\n", f"\n{old}\n"
    if target in padded:
        return padded.replace(target, "\n")[1:-1]
    return text.replace(old, "")


@tool()
async def core_memory_replace(ctx: ToolContext, label: str, old_content: str, new_content: str) -> Effect:
    """Replace exact text in a core memory block; an empty new_content deletes it.

    Args:
        label: Block to edit: 'persona' or 'human'.
        old_content: Text to replace; must match the block exactly.
        new_content: Replacement text ('' deletes).
    """

    def replaced(value: str) -> str | None:
        if not old_content or old_content not in value:
            return None
        return value.replace(old_content, new_content) if new_content else without(value, old_content)

    def effect(conn: Connection) -> str:
        scope = ctx.memory.scope.blocks
        current = _block(conn, ctx, label, scope).value
        updated = replaced(current)
        if updated is None:
            raise ToolError(
                f"'{old_content}' was not found in block '{label}'. Copy the exact text from the block; "
                f"it currently reads: {current[:500]!r}"
            )
        block = _write(conn, ctx, label, updated, scope)
        return _written(block, _mirror(conn, ctx, label, replaced))

    return effect


@tool()
async def archival_memory_insert(ctx: ToolContext, content: str) -> Effect:
    """Store a passage in archival memory (unlimited, searched by meaning). Write it self-contained.

    Args:
        content: The passage to store.
    """
    if not content.strip():
        raise ToolError("archival_memory_insert needs non-empty 'content'.")
    vector = await ctx.memory.vector(content)

    def effect(conn: Connection) -> str:
        passage = ctx.memory.insert_passage(conn, content, vector)
        return f"Stored as passage {passage.id}."

    return effect


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
    sources = await document_tools.sources(ctx, shown)
    lines = [
        document_tools.cited(sources[p.id], p.content)
        if p.id in sources
        else f"[{_when(ctx, p.created_at)}] {_clip(p.content)}"
        for p in shown
    ]
    return _page(lines, len(found), page, "passages")


def _when(ctx: ToolContext, stamp: str) -> str:
    return ctx.memory.local(from_iso(stamp)).strftime("%Y-%m-%d %H:%M")


def _describe(ctx: ToolContext, message: Message) -> str:
    who = "you" if message.role == "assistant" else (message.speaker or "user")
    return f"[{_when(ctx, message.created_at)}] {who}: {_clip(message.search_text)}"


@tool()
async def conversation_search(ctx: ToolContext, query: str, page: int = 0) -> str:
    """Search all past messages with the user (including ones no longer in context).

    Naming a date or period in the query ("on 3 May 2023", "in June 2024", "last week") narrows
    the search: messages from those days come first, then the rest.
    In a public conversation only what was said in public is found.

    Args:
        query: Words or meaning to look for; add a date to search that time first.
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
    return Registry([*TOOLS, *reminder_tools.TOOLS, *document_tools.DOCUMENT_TOOLS])
