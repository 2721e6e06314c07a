"""Text out of a file: plain text, Markdown, the text layer of a PDF (pypdf), HTML (beautifulsoup4).

What comes out is a list of `Part`s, paragraphs in reading order each with the title of the
section it stands in (a Markdown or HTML heading path, "page N" of a PDF), so chunking can keep
to the document's structure and a passage can say where in the document it came from.

Everything a person can hand us that is not a document we read fails here, before anything is
stored, with one `InvalidInput` naming the file and what to do: an empty file, a binary file, an
encrypted or image-only PDF, text in an encoding other than UTF-8 (or UTF-16/32 with a byte-order
mark). Guessing an encoding would store mojibake that no search ever finds again.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from bot.errors import InvalidInput

log = logging.getLogger(__name__)

TEXT, MARKDOWN, PDF, HTML = "text", "markdown", "pdf", "html"
SUFFIXES = {
    ".txt": TEXT,
    ".text": TEXT,
    ".log": TEXT,
    ".rst": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".pdf": PDF,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
}
MEDIA_TYPES = {
    "text/plain": TEXT,
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "application/pdf": PDF,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
}
BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "head", "iframe", "object")
HEADINGS = {f"h{n}": n for n in range(1, 7)}
BLOCK_TAGS = frozenset(
    "p div li ul ol dl dt dd pre blockquote section article main header footer nav aside table tr "
    "td th caption figure figcaption form fieldset address hr details summary".split()
)
ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Part:
    """One paragraph of a document and the title of the section it is in ('' before any)."""

    section: str
    text: str


@dataclass(frozen=True)
class Extracted:
    kind: str  # TEXT, MARKDOWN, PDF or HTML
    parts: list[Part]


def kind_of(name: str, data: bytes, media_type: str = "") -> str | None:
    """The format of a file, by its name, else its media type, else its first bytes; None if it
    is none we read."""
    found = SUFFIXES.get(PurePath(name).suffix.lower())
    if found:
        return found
    found = MEDIA_TYPES.get(media_type.split(";")[0].strip().lower())
    if found:
        return found
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return PDF
    if head.startswith((b"<!doctype html", b"<html")):
        return HTML
    if media_type.startswith("text/") or not PurePath(name).suffix:
        return TEXT
    return None


def extract(data: bytes, name: str, media_type: str = "") -> Extracted:
    """The paragraphs of a file, each with its section; `InvalidInput` if it holds no text we read."""
    if not data.strip():
        raise InvalidInput(f"{name} is empty: there is nothing to load.")
    kind = kind_of(name, data, media_type)
    if kind is None:
        raise InvalidInput(
            f"{name} is not a format I read: give me text (.txt), Markdown (.md), PDF or HTML."
        )
    if kind == PDF:
        parts = _pdf(data, name)
    elif kind == HTML:
        parts = _html(data, name)
    else:
        text = decode(data, name)
        parts = _markdown(text) if kind == MARKDOWN else _paragraphs(text, "")
    parts = [p for p in parts if p.text.strip()]
    if not parts:
        raise InvalidInput(f"{name} holds no text to load (only whitespace or markup).")
    return Extracted(kind, parts)


def decode(data: bytes, name: str) -> str:
    """UTF-8 (or UTF-16/32 with a byte-order mark) text; a binary file or another encoding is refused."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    if b"\x00" in data[:8192]:
        raise InvalidInput(
            f"{name} is a binary file, not text: give me text (.txt), Markdown (.md), PDF or HTML."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name} is not UTF-8 text (byte {exc.start} cannot be decoded): save it as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8`) and load it again."
        ) from None


def _paragraphs(text: str, section: str) -> list[Part]:
    """Paragraphs separated by blank lines; lines inside one are joined as they are."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [Part(section, block.strip()) for block in re.split(r"\n\s*\n", text) if block.strip()]


def _markdown(text: str) -> list[Part]:
    """Paragraphs under ATX (`## Title`) and setext headings; the section is the heading path
    ("Guide > Install"); fenced code stays one paragraph, headings inside it are not headings."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parts: list[Part] = []
    path: list[tuple[int, str]] = []
    buffer: list[str] = []
    fenced = False

    def section() -> str:
        return " > ".join(title for _, title in path)

    def flush() -> None:
        if buffer:
            parts.extend(_paragraphs("\n".join(buffer), section()))
            buffer.clear()

    def heading(level: int, title: str) -> None:
        flush()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title.strip()))

    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
            buffer.append(line)
            continue
        if fenced:
            buffer.append(line)
            continue
        atx = ATX.match(line)
        if atx:
            heading(len(atx.group(1)), atx.group(2))
            continue
        setext = SETEXT.match(line)
        if setext and buffer and buffer[-1].strip() and not (buffer[-1].lstrip().startswith(("-", "*", "|"))):
            title = buffer.pop()
            heading(1 if setext.group(1)[0] == "=" else 2, title)
            continue
        buffer.append(line)
    flush()
    return _keep_fences_whole(parts)


def _keep_fences_whole(parts: list[Part]) -> list[Part]:
    """Join paragraphs that a blank line inside a fenced code block split apart."""
    joined: list[Part] = []
    open_fence = False
    for part in parts:
        if open_fence and joined:
            joined[-1] = Part(joined[-1].section, joined[-1].text + "\n\n" + part.text)
        else:
            joined.append(part)
        fences = len(re.findall(r"(?m)^ {0,3}(?:```|~~~)", part.text))
        if fences % 2 == 1:
            open_fence = not open_fence
    return joined


def _pdf(data: bytes, name: str) -> list[Part]:
    """The text layer, page by page (section "page N"); encrypted or image-only PDFs are refused."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise InvalidInput(
                f"{name} is an encrypted PDF: save an unprotected copy (print to PDF, or "
                "`qpdf --decrypt`) and load that."
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except InvalidInput:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInput(f"{name} is not a PDF I can read ({exc}); is it damaged?") from None
    parts = [p for number, text in enumerate(pages, 1) for p in _pdf_page(text, f"page {number}")]
    if not parts:
        raise InvalidInput(
            f"{name} has no text layer (a scan?): run OCR on it (e.g. `ocrmypdf`) and load the result."
        )
    return parts


def _opens_without_password(reader: Any) -> bool:
    """Whether an encrypted PDF opens with the empty user password (it only restricts printing
    or copying, as many do); a real password, or a cipher pypdf cannot run here, is refused."""
    try:
        return bool(reader.decrypt(""))
    except Exception as exc:  # pypdf raises its DependencyError and others for ciphers it lacks
        log.info("cannot open an encrypted PDF without its password: %s", exc)
        return False


def _pdf_page(text: str, section: str) -> list[Part]:
    """A page's paragraphs (where blank lines mark them), each one's lines joined into running
    text: a word hyphenated at a line's end is joined again, other line breaks become spaces.
    A page without blank lines is one paragraph; chunking cuts it at sentence ends."""
    return [
        Part(section, re.sub(r"\s*\n\s*", " ", re.sub(r"(?<=\w)-\n(?=[a-z])", "", p.text)))
        for p in _paragraphs(text, section)
    ]


def _html(data: bytes, name: str) -> list[Part]:
    """Visible text in block order, under its heading path; scripts, styles and the head dropped."""
    from bs4 import BeautifulSoup
    from bs4.dammit import EncodingDetector
    from bs4.element import CData, NavigableString, PreformattedString, Tag

    try:
        text = decode(data, name)
    except InvalidInput:
        declared = EncodingDetector.find_declared_encoding(data, is_html=True)
        if not declared:
            raise
        try:
            text = data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            raise InvalidInput(
                f"{name} says it is {declared} but is not: save it as UTF-8 and load it again."
            ) from None
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup.find_all(DROPPED_TAGS):
        tag.decompose()
    parts: list[Part] = []
    path: list[tuple[int, str]] = []
    buffer: list[str] = []

    def flush() -> None:
        words = re.sub(r"[ \t\r\f\v]+", " ", "".join(buffer))
        words = re.sub(r" *\n *", "\n", words).strip()
        buffer.clear()
        if words:
            parts.append(Part(" > ".join(t for _, t in path), words))

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, PreformattedString) and not isinstance(child, CData):
                continue  # comments, the doctype, processing instructions
            if isinstance(child, NavigableString):
                buffer.append(str(child))
            elif isinstance(child, Tag):
                if child.name in HEADINGS:
                    flush()
                    level = HEADINGS[child.name]
                    while path and path[-1][0] >= level:
                        path.pop()
                    path.append((level, " ".join(child.get_text(" ").split())))
                elif child.name == "br":
                    buffer.append("\n")
                elif child.name in BLOCK_TAGS:
                    flush()
                    walk(child)
                    flush()
                else:
                    walk(child)

    walk(soup)
    flush()
    return parts
