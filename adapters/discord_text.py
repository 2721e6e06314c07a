"""Text going to and coming from Discord: splitting at its 2,000-character limit, sanitising.

Discord refuses a message over 2,000 characters (error 50035), so a long answer goes out in
parts, cut where a reader would pause: at a paragraph, else at a line, and outside code blocks
when there is a break outside them. A code block longer than one message is cut at one of its
lines; the part is closed with a fence and the next opens with the same fence and language, so
each part renders as code. A single line longer than the limit is cut at a space, or hard.

Outgoing text also has `@everyone` and `@here` defused (a zero-width space after the `@`):
allowed mentions already stop them from pinging, and this stops them from even rendering as a
mass mention. Incoming text has mention markup (`<@123>`) replaced by names the model can read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

LIMIT = 2000
FENCE = "```"
CLOSE = "\n" + FENCE
MASS_MENTION = re.compile(r"@(everyone|here)\b")
READABLE_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm")
READABLE_TYPES = ("text/", "application/pdf", "application/xhtml")


def sanitise(text: str) -> str:
    """`text` with @everyone and @here shown, not announced."""
    return MASS_MENTION.sub("@\u200b\\1", text)


def readable(filename: str, content_type: str) -> bool:
    """Whether an attachment is a document the core loads (text, Markdown, PDF, HTML); the
    others (images, archives, ...) are only named to the agent."""
    return filename.lower().endswith(READABLE_SUFFIXES) or content_type.lower().startswith(READABLE_TYPES)


def mentions_to_names(text: str, me: int, names: Iterable[tuple[str, str]]) -> str:
    """`text` without the bot's own mention, and with every other mention markup (`<@id>`,
    `<@!id>`, `<@&role>`, `<#channel>`, given as (markup id, name) pairs) replaced by a name."""
    text = re.sub(rf"<@!?{me}>", "", text)
    for markup, name in names:
        text = text.replace(markup, name)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


@dataclass(frozen=True)
class _Line:
    start: int  # offset of the line in the text
    fence: str  # the fence line open at the start of this line ("" outside code)


def _lines(text: str) -> list[_Line]:
    """Each line's start, with the code block (if any) open where it begins."""
    found: list[_Line] = []
    open_fence = ""
    offset = 0
    for line in text.split("\n"):
        found.append(_Line(offset, open_fence))
        stripped = line.strip()
        if stripped.startswith(FENCE):
            if open_fence:
                open_fence = ""
            else:
                language = stripped[len(FENCE) :].split(maxsplit=1)
                open_fence = FENCE + (language[0][:20] if language else "")
        offset += len(line) + 1
    return found


def _is_fence(text: str, line: _Line) -> bool:
    return text[line.start : line.start + 64].lstrip().startswith(FENCE)


def _cut(text: str, limit: int) -> tuple[int, str]:
    """Where to end the first part of `text` (longer than `limit`), and the fence open there."""
    window = limit - len(CLOSE)  # room to close a code block
    lines = [line for line in _lines(text) if 0 < line.start <= window]
    outside = [line for line in lines if not line.fence]
    paragraphs = [line for line in outside if text[line.start - 2 : line.start] == "\n\n"]
    if paragraphs and paragraphs[-1].start >= limit // 2:
        return paragraphs[-1].start, ""
    if outside and (outside[-1].start >= limit // 4 or len(outside) == len(lines)):
        return outside[-1].start, ""
    inside = [line for line in lines if line.start >= limit // 4 and not _is_fence(text, line)]
    if inside:  # inside a code block (or only a short lead-in before one): cut at one of its lines
        return inside[-1].start, inside[-1].fence
    # one line longer than the limit: at a space if there is one late enough, else hard
    space = text.rfind(" ", 0, window)
    at = space + 1 if space >= limit // 2 else window
    fence = next((line.fence for line in reversed(_lines(text)) if line.start <= at), "")
    return at, fence


def split(text: str, limit: int = LIMIT) -> list[str]:
    """`text` in parts of at most `limit` characters (none empty), cut at paragraphs or lines."""
    parts: list[str] = []
    rest = text.strip("\n")
    while len(rest) > limit:
        at, fence = _cut(rest, limit)
        head, rest = rest[:at].rstrip(), rest[at:].lstrip("\n")
        if fence:
            head += CLOSE
            rest = fence + "\n" + rest
        if head.strip():
            parts.append(head)
    if rest.strip():
        parts.append(rest)
    return parts
