"""Structure-aware chunking: a document's paragraphs packed into passages for archival memory.

A passage never spans two sections (a heading starts a new one), so its section title says what
it is about; paragraphs are packed whole up to `MAX_CHARS`, a longer paragraph is cut at sentence
ends (then at words). When a section goes on in a next passage, that passage opens with the last
sentence of the one before (at most `OVERLAP_CHARS`), so a fact split at the cut is still found
whole by one search. ~900 characters (~200 tokens) keeps a passage about one thing, which suits
the averaged-word-vectors embedder, and shows whole in a search result.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby

from bot.extract import Part

MAX_CHARS = 900
OVERLAP_CHARS = 160
SENTENCE_END = re.compile(r"(?<=[.!?…。])\s+")


@dataclass(frozen=True)
class Chunk:
    position: int  # 1, 2, 3... in reading order over the whole document
    section: str
    text: str


def chunk(parts: list[Part], max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """The passages of a document, in order, numbered from 1."""
    chunks: list[Chunk] = []
    for section, run in groupby(parts, key=lambda p: p.section):
        pieces = [piece for part in run for piece in _pieces(part.text, max_chars)]
        for text in _pack(pieces, max_chars, overlap):
            chunks.append(Chunk(len(chunks) + 1, section, text))
    return chunks


def _pieces(text: str, max_chars: int) -> Iterator[str]:
    """A paragraph whole if it fits, else cut at sentence ends, words, or (no spaces) characters."""
    text = text.strip()
    if len(text) <= max_chars:
        yield text
        return
    current = ""
    for sentence in SENTENCE_END.split(text):
        for piece in _words(sentence, max_chars):
            if current and len(current) + 1 + len(piece) > max_chars:
                yield current
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current:
        yield current


def _words(sentence: str, max_chars: int) -> Iterator[str]:
    if len(sentence) <= max_chars:
        yield sentence
        return
    current = ""
    for word in sentence.split():
        while len(word) > max_chars:  # one "word" longer than a passage: a URL, base64, CJK text
            if current:
                yield current
                current = ""
            yield word[:max_chars]
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            yield current
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        yield current


def _pack(pieces: list[str], max_chars: int, overlap: int) -> Iterator[str]:
    """Pieces joined by blank lines up to `max_chars`; each next passage opens with the tail."""
    current: list[str] = []
    size = 0
    for piece in pieces:
        if current and size + 2 + len(piece) > max_chars:
            done = "\n\n".join(current)
            yield done
            tail = _tail(done, overlap)
            current = [tail] if tail and len(tail) + 2 + len(piece) <= max_chars else []
            size = len(tail) if current else 0
        size += (2 if current else 0) + len(piece)
        current.append(piece)
    if current:
        yield "\n\n".join(current)


def _tail(text: str, overlap: int) -> str:
    """The last sentence of `text` if it is at most `overlap` characters, else its last words."""
    if overlap <= 0:
        return ""
    sentences = [s for s in SENTENCE_END.split(text.strip()) if s]
    last = sentences[-1] if sentences else ""
    if 0 < len(last) <= overlap and len(sentences) > 1:
        return last
    words = text[-overlap:].split(maxsplit=1)
    return "…" + words[1] if len(words) == 2 else ""
