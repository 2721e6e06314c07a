"""The agent's Markdown as Slack mrkdwn, and long replies cut into messages Slack takes whole.

Slack does not render Markdown: `**bold**` shows its stars and `[text](url)` its brackets. So,
outside code: bold `**x**`/`__x__` -> `*x*`, italics `*x*`/`_x_` -> `_x_`, `~~x~~` -> `~x~`,
`[text](url)` -> `<url|text>`, headings -> a bold line, `- item`/`* item` -> `• item`. Code
blocks (their language tag dropped: Slack would show it as code) and inline code keep their
formatting characters. `&`, `<` and `>` are escaped everywhere but in the links we make and a
leading quote `>`, because Slack reads `<...>` as a link or mention even inside code and shows
`&lt;` as `<` there too.

`split` cuts near 4,000 characters (Slack's advice for one message) at line ends, a line with
no break at a space; never inside a code block: the block is closed at the cut and reopened in
the next message.
"""

from __future__ import annotations

import re

LIMIT = 3900  # characters of text per message; with a code fence closed and reopened, under 4,000
FENCE = re.compile(r"^\s*```")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
QUOTE = re.compile(r"^>\s?(.*)$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[([^\]\n]+)\]\(\s*(https?://[^)\s]+|mailto:[^)\s]+)\s*\)")
BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
BOLD_MARK = "\x01"
LINK_MARK = "\x02"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """`markdown` as Slack mrkdwn (see the module's docstring)."""
    out: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            out.append("```" if in_code else line.strip()[:3])  # the language tag would show as code
            in_code = not in_code
        elif in_code:
            out.append(escape(line))
        else:
            out.append(_line(line))
    if in_code:
        out.append("```")
    return "\n".join(out)


def _line(line: str) -> str:
    heading = HEADING.match(line)
    if heading:
        title = heading.group(1).replace("**", "").replace("__", "")
        return f"*{_inline(title)}*" if title else ""
    bullet = BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {_inline(bullet.group(2))}"
    quote = QUOTE.match(line)
    if quote:
        return f"> {_inline(quote.group(1))}"
    return _inline(line)


def _inline(text: str) -> str:
    """One line outside code blocks: its inline code kept, the rest converted."""
    parts: list[str] = []
    end = 0
    for code in INLINE_CODE.finditer(text):
        parts.append(_formatted(text[end : code.start()]))
        parts.append(escape(code.group(0)))
        end = code.end()
    parts.append(_formatted(text[end:]))
    return "".join(parts)


def _formatted(text: str) -> str:
    links: list[str] = []

    def link(match: re.Match[str]) -> str:
        url = match.group(2).replace("|", "%7C").replace(">", "%3E")
        links.append(f"<{url}|{escape(match.group(1))}>")
        return f"{LINK_MARK}{len(links) - 1}{LINK_MARK}"

    text = escape(LINK.sub(link, text))
    text = BOLD.sub(lambda m: f"{BOLD_MARK}{m.group(1) or m.group(2)}{BOLD_MARK}", text)
    text = ITALIC.sub(r"_\1_", text)
    text = STRIKE.sub(r"~\1~", text).replace(BOLD_MARK, "*")
    return re.sub(f"{LINK_MARK}(\\d+){LINK_MARK}", lambda m: links[int(m.group(1))], text)


def split(text: str, limit: int = LIMIT) -> list[str]:
    """`text` (mrkdwn) in messages of at most about `limit` characters, code blocks whole in each."""
    if len(text) <= limit:
        return [text] if text.strip() else []
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    in_code = False

    def cut() -> None:
        nonlocal current, size
        body = "\n".join(current)
        if body.strip() and body.strip() != "```":
            chunks.append(body + ("\n```" if in_code else ""))
        current = ["```"] if in_code else []
        size = 3 if in_code else 0

    for line in text.split("\n"):
        for piece in _pieces(line, limit):
            closing = in_code and FENCE.match(piece) is not None  # may pass the limit by its 3 characters
            if current and size + 1 + len(piece) > limit and not closing:
                cut()
            current.append(piece)
            size += len(piece) + (1 if len(current) > 1 else 0)
        if FENCE.match(line):
            in_code = not in_code
    cut()
    return chunks


def _pieces(line: str, limit: int) -> list[str]:
    """A line longer than `limit` cut at its last space before the limit (or at the limit)."""
    pieces = []
    room = limit - 4  # a reopened code fence may precede it
    while len(line) > room:
        at = line.rfind(" ", room // 2, room)
        at = at if at > 0 else room
        pieces.append(line[:at])
        line = line[at:].lstrip(" ") if line[at : at + 1] == " " else line[at:]
    pieces.append(line)
    return pieces
