"""Files that come with a chat message: loaded into the sender's archival memory, not the message.

An adapter gives an `Attachment` a `read` callable for files worth reading (text, Markdown, PDF,
HTML); the others are named to the agent, not fetched. A readable file within
MEMBOT_ATTACHMENT_MAX_BYTES is loaded like `membot load` does (bot/loading.py) for the person
who sent it, in the conversation's scope: a file sent in a DM is never found in a channel. The
message then tells the agent what arrived (name, size, document number, passages), so the
file's text never floods the context window; the agent finds it with archival_memory_search.
A file too large, unreadable, or whose download fails is named with the reason, and the
message goes on without it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from bot.errors import InvalidInput, MembotError
from bot.events import Attachment, Event
from bot.loading import load, size_text
from bot.memory import AgentMemory, Scope
from storage import agents
from storage.errors import StorageError

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

ORIGIN = "chat:{platform}"  # a document's origin when it came as an attachment


async def load_files(runtime: Runtime, event: Event, agent_id: int | None) -> Event:
    """`event` with a note on each readable attachment appended to its text, each file loaded
    into the sender's archival memory first. Never raises: what fails is named in the note."""
    if not any(a.read for a in event.attachments):
        return event
    try:
        memory = await _memory(runtime, event, agent_id)
    except (StorageError, MembotError) as exc:
        log.error("could not find the memory to load attachments into: %s", exc)
        memory = None
    parts = [event.text] if event.text else []
    for attachment in event.attachments:
        if attachment.read is not None:
            origin = ORIGIN.format(platform=event.conversation.platform)
            parts.append(await _note(attachment, memory, origin, runtime.settings.attachment_max_bytes))
    return replace(event, text="\n\n".join(parts))


async def _memory(runtime: Runtime, event: Event, agent_id: int | None) -> AgentMemory:
    """The sender's memory in this conversation's scope (the agent made on first contact)."""
    person = event.person
    if agent_id is None:
        agent = await runtime.agent_for(person.platform, person.user_id, person.name)
    else:
        agent = await runtime.db.read(agents.get, agent_id)
    conversation_id = await runtime.db.run(runtime.reception.conversation, event.conversation)
    return runtime.memory(agent, Scope(conversation_id, event.conversation.private))


async def _note(attachment: Attachment, memory: AgentMemory | None, origin: str, limit: int) -> str:
    """Load one file; what the agent is told about it."""
    name = attachment.name
    if attachment.size > limit:
        return f"[file {name}: {size_text(attachment.size)}, over the {size_text(limit)} I load; not loaded]"
    assert attachment.read is not None
    try:
        data = await attachment.read()
    except Exception as exc:  # the platform's download failed: the message goes on without it
        log.warning("could not download the attachment %r: %s", name, exc)
        return f"[file {name}: could not be downloaded]"
    if memory is None:
        return f"[file {name}: could not be loaded just now (my memory store failed); ask for it again later]"
    try:
        loaded = await load(
            memory, data, name, origin=origin, media_type=attachment.media_type, max_bytes=limit
        )
    except InvalidInput as exc:
        return f"[file {name}: not loaded: {exc}]"
    except (StorageError, MembotError) as exc:
        log.error("agent %s: could not load the attachment %r: %s", memory.agent_id, name, exc)
        return f"[file {name}: could not be loaded just now; ask for it again later]"
    document = loaded.document
    what = f"document {document.id}, {document.passages} passages"
    if loaded.status == "unchanged":
        return f"[file {name} ({size_text(len(data))}): already in your archival memory as {what}]"
    verb = "replaced its earlier version in" if loaded.status == "replaced" else "loaded into"
    return (
        f"[file {name} ({size_text(len(data))}) {verb} your archival memory as {what}: find it with "
        "archival_memory_search, read on with archival_memory_read]"
    )
