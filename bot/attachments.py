"""Text files that come with a chat message: read into the message, within a size limit.

An adapter gives an `Attachment` a `read` callable only for files worth reading (plain text and
Markdown); the others are named to the agent, not fetched. A file larger than
MEMBOT_ATTACHMENT_MAX_BYTES, one that is not UTF-8 text, or one whose download fails is named
with the reason, and the message goes on without it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from bot.events import Attachment, Event

log = logging.getLogger(__name__)


async def read_text_files(event: Event, limit: int) -> Event:
    """`event` with the text of its readable attachments appended to its text."""
    if not any(a.read for a in event.attachments):
        return event
    parts = [event.text] if event.text else []
    for attachment in event.attachments:
        if attachment.read is not None:
            parts.append(await _content(attachment, limit))
    return replace(event, text="\n\n".join(parts))


async def _content(attachment: Attachment, limit: int) -> str:
    name = attachment.name
    if attachment.size > limit:
        return f"[file {name}: {attachment.size} bytes, larger than the {limit} bytes I read; not read]"
    assert attachment.read is not None
    try:
        data = await attachment.read()
    except Exception as exc:  # the platform's download failed: the message goes on without it
        log.warning("could not download the attachment %r: %s", name, exc)
        return f"[file {name}: could not be downloaded]"
    if len(data) > limit:
        return f"[file {name}: larger than the {limit} bytes I read; not read]"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return f"[file {name}: not UTF-8 text; not read]"
    return f"[file {name}]\n{text}"
