"""Tools over loaded documents: where a search hit stands, and reading on from it.

A document larger than the context window is read the MemGPT way: `archival_memory_search`
finds passages anywhere in it and names each hit's document and position ("document 3
'handbook.pdf', passage 12 of 40, in Install > Linux") so the agent can cite it, and
`archival_memory_read` pages through the document from there, a few passages at a time, forwards
or backwards. In a public conversation only documents loaded in public are found or read.
"""

from __future__ import annotations

from bot.errors import ToolError
from bot.tools import Tool, ToolContext, tool
from storage import documents
from storage.documents import Document, Source
from storage.passages import Passage

READ_PAGE = 3  # passages per page of archival_memory_read


async def sources(ctx: ToolContext, found: list[Passage]) -> dict[int, Source]:
    """Where each of these passages stands, for those cut from a document."""
    memory = ctx.memory
    return await memory.db.read(documents.sources, memory.agent_id, [p.id for p in found], memory.public)


def cited(source: Source, content: str) -> str:
    """A search hit from a document, with what the agent needs to cite it and read on."""
    where = f", in {source.section}" if source.section else ""
    return (
        f"[document {source.document_id} {source.name!r}, passage {source.position} of "
        f"{source.passages}{where}] {content}"
    )


async def _document(ctx: ToolContext, key: str) -> Document:
    memory = ctx.memory
    found = await memory.db.read(documents.find, memory.agent_id, key, memory.public)
    if found:
        return found[-1]  # several of that name: the latest
    known = await memory.db.read(documents.list_for, memory.agent_id, memory.public)
    names = ", ".join(f"{d.id} {d.name!r}" for d in known[-10:]) or "none"
    raise ToolError(
        f"There is no document {key!r}. Give the number or name an archival_memory_search result "
        f"shows ('document N'). Documents: {names}."
    )


@tool()
async def archival_memory_read(
    ctx: ToolContext, document: int | str, position: int = 1, page: int = 0
) -> str:
    """Read a loaded document in order from a passage (e.g. one archival_memory_search found).

    Args:
        document: The document's number (as in 'document 3' of a search result) or its name.
        position: The passage to read around (its 'passage N'); 1 is the start.
        page: 0 shows the passage before, this one and the next; 1 the three after those, -1 the three before.
    """
    found = await _document(ctx, str(document))
    memory = ctx.memory
    # (positions keep their numbers when a person deletes a passage with /forget passage ID)
    last = max(found.passages, await memory.db.read(documents.last_position, memory.agent_id, found.id))
    start = position - 1 + page * READ_PAGE
    first, end = max(1, start), min(last, start + READ_PAGE - 1)
    if position < 1 or first > end:
        raise ToolError(
            f"Document {found.id} {found.name!r} has passages 1-{last}; position {position} "
            f"with page {page} is outside them."
        )
    pages = await memory.db.read(documents.read, memory.agent_id, found.id, first, end, memory.public)
    lines = [f"Document {found.id} {found.name!r} ({found.kind}, {last} passages), passages {first}-{end}:"]
    for passage in pages:
        where = f", {passage.section}" if passage.section else ""
        lines.append(f"[passage {passage.position}{where}] {passage.content}")
    more = []
    if first > 1:
        more.append(f"page={page - 1} for what comes before")
    if end < last:
        more.append(f"page={page + 1} for what follows")
    if more:
        lines.append(f"(Same document and position, {' or '.join(more)}.)")
    return "\n".join(lines)


DOCUMENT_TOOLS: list[Tool] = [archival_memory_read]
