"""Hybrid ranking for recall and archival search.

Both searches fuse BM25 (FTS5) and vector similarity linearly: each retriever's scores over its
candidates are scaled to 0..1 (min-max; a candidate the other retriever did not return counts 0
there) and summed. Measured on LoCoMo dev (bench/RESULTS-retrieval.md) this beats reciprocal-rank
fusion by 1-13 points of recall@10.

Recall search (messages) then uses what a conversation is made of:
- neighbours: a hit lends part of its score to the messages around it in the same conversation
  (±3 turns, weights .3/.2/.1, the better side counts; text search also indexes
  each message with its neighbours' words, see storage.messages), because an answer is often the reply to,
  or the message before, the one that shares the query's words;
- speakers: messages said by someone the query names get +0.3;
- dates: messages from days the query names ("in May 2023", "last week") get +0.2.

Runs on the database thread; every storage call is scoped by the agent id, and in a public
conversation by `public_only` (neighbours said in private neither show nor lend their score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from bot.dates import Window
from storage import messages, passages
from storage.clock import from_iso
from storage.db import Connection
from storage.fulltext import words
from storage.messages import CONVERSATION_GAP, Position

CANDIDATES = 100
DENSE_WEIGHT = 1.0
NEIGHBOUR_WEIGHTS = (0.3, 0.2, 0.1)  # for the messages 1, 2 and 3 turns away
SPEAKER_BOOST = 0.3
DATE_BOOST = 0.2

Ranker = Callable[[Connection, int, str, int, bool], list[tuple[int, float]]]
Nearest = Callable[[Connection, int, bytes, int, bool], list[tuple[int, float]]]


@dataclass(frozen=True)
class Query:
    """A recall search: the words, their vector, and what the words name."""

    text: str
    vector: bytes
    speakers: frozenset[str] = frozenset()  # speakers the query names
    windows: list[Window] = field(default_factory=list)  # days the query names
    zone: tzinfo = UTC  # the agent's time zone, for "which day"
    public_only: bool = False  # answering in public: only messages said in public


def dense_query(text: str, names: Iterable[str] = ()) -> str:
    """The text to embed for a search: its content words without people's names.

    A static embedding averages token vectors, and names weigh heavily: left in, they pull the
    query towards everything that person ever said instead of the topic asked about.
    """
    drop = {part for name in names for part in words(name)}
    content = [word for word in words(text) if word not in drop]
    return " ".join(content) if content else text


def _scaled(scores: dict[int, float], floor: float | None = None) -> dict[int, float]:
    if not scores:
        return {}
    low, high = min(scores.values()) if floor is None else floor, max(scores.values())
    span = high - low
    return {item: (value - low) / span if span > 0 else 1.0 for item, value in scores.items()}


def fused(
    text_scores: dict[int, float],
    dense_scores: dict[int, float],
    complete: bool = False,
    dense_weight: float = DENSE_WEIGHT,
) -> dict[int, float]:
    """Scaled text score + weighted scaled dense score, per id (higher is better).

    Both are min-max scaled, except that when `complete` (text search returned every row that
    shares a word with the query, not a truncated list) text scores are scaled from 0: the weakest
    of a few matches still matched, and min-max would count it as no match at all.
    """
    text = _scaled(text_scores, 0.0 if complete else None)
    dense = _scaled(dense_scores)
    return {
        item: text.get(item, 0.0) + dense_weight * dense.get(item, 0.0) for item in text.keys() | dense.keys()
    }


def _ordered(scores: dict[int, float]) -> list[int]:
    return sorted(scores, key=lambda item: (-scores[item], item))


def _candidates(
    conn: Connection,
    agent_id: int,
    text: str,
    vector: bytes,
    depth: int,
    by_words: Ranker,
    nearest: Nearest,
    keep: Callable[[int], bool],
    public_only: bool,
) -> dict[int, float]:
    matches = by_words(conn, agent_id, text, depth, public_only)
    by_text = {i: -score for i, score in matches if keep(i)}
    close = nearest(conn, agent_id, vector, depth, public_only)
    by_meaning = {i: 1.0 - distance for i, distance in close if keep(i)}
    return fused(by_text, by_meaning, complete=len(matches) < depth)


def rank_passages(
    conn: Connection, agent_id: int, query: str, vector: bytes, limit: int, public_only: bool = False
) -> list[int]:
    """Ids of this agent's archival passages best matching `query` (only public ones if asked)."""
    depth = max(CANDIDATES, limit * 2)
    scores = _candidates(
        conn,
        agent_id,
        query,
        vector,
        depth,
        passages.text_matches,
        passages.nearest,
        lambda i: True,
        public_only,
    )
    return _ordered(scores)[:limit]


def rank_messages(
    conn: Connection, agent_id: int, query: Query, limit: int, before_id: int | None = None
) -> list[int]:
    """Ids of this agent's messages best matching `query` (optionally only ids < before_id)."""

    def keep(i: int) -> bool:
        return before_id is None or i < before_id

    depth = max(CANDIDATES, limit * 2)
    hits = _scaled(
        _candidates(
            conn,
            agent_id,
            query.text,
            query.vector,
            depth,
            messages.text_matches,
            messages.nearest,
            keep,
            query.public_only,
        )
    )
    if not hits:
        return []
    found = messages.positions(conn, agent_id, list(hits), query.public_only)
    reach = len(NEIGHBOUR_WEIGHTS)
    around = {p.turn + d for p in found for d in range(-reach, reach + 1)} - {p.turn for p in found}
    found += messages.at_turns(conn, agent_id, sorted(t for t in around if t > 0), query.public_only)
    at = {p.turn: p for p in found if keep(p.id)}
    times = {turn: from_iso(p.created_at) for turn, p in at.items()}
    score = {turn: hits.get(p.id, 0.0) for turn, p in at.items()}
    conversation = _conversations(times)

    def near(turn: int, other: int) -> float:
        same = conversation.get(other) == conversation[turn]
        return score[other] if same else 0.0

    ranked: dict[int, float] = {}
    for turn, position in at.items():
        total = score[turn]
        for distance, weight in enumerate(NEIGHBOUR_WEIGHTS, start=1):
            total += weight * max(near(turn, turn - distance), near(turn, turn + distance))
        total += _boosts(position, times[turn], query)
        if total > 0:
            ranked[position.id] = total
    return _ordered(ranked)[:limit]


def _conversations(times: dict[int, datetime]) -> dict[int, int]:
    """A label per turn; two turns share it when every turn between them is here and no two
    consecutive ones are more than CONVERSATION_GAP apart."""
    labels: dict[int, int] = {}
    label = 0
    previous: tuple[int, datetime] | None = None
    for turn in sorted(times):
        when = times[turn]
        if previous is None or turn != previous[0] + 1 or abs(when - previous[1]) > CONVERSATION_GAP:
            label += 1
        labels[turn] = label
        previous = (turn, when)
    return labels


def _boosts(position: Position, when: datetime, query: Query) -> float:
    boost = SPEAKER_BOOST if position.speaker and position.speaker in query.speakers else 0.0
    if query.windows:
        day = when.astimezone(query.zone).date()
        if any(window(day) for window in query.windows):
            boost += DATE_BOOST
    return boost
