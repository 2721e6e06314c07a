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
- dates: when the query names days ("on 1 May, 2022", "in May 2023", "last week"), the messages from
  those days are read by time, ranked among themselves the same way, and come first; the rest follows.
  (LoCoMo: the evidence of a dated question is in the named days four times out of five, and a boost
  lost to word overlap: held-out dated R@10 .759 -> .807.)

Runs on the database thread; every storage call is scoped by the agent id, and in a public
conversation by `public_only` (neighbours said in private neither show nor lend their score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from bot.dates import Window, spans
from storage import messages, passages
from storage.clock import from_iso, to_iso
from storage.db import Connection
from storage.fulltext import words
from storage.messages import CONVERSATION_GAP, Position

CANDIDATES = 100
DENSE_WEIGHT = 1.0
NEIGHBOUR_WEIGHTS = (0.3, 0.2, 0.1)  # for the messages 1, 2 and 3 turns away
SPEAKER_BOOST = 0.3
DATE_FIRST = 1000.0  # how far ahead messages from the days a query names come: all of them first
WINDOW_LIMIT = 1000  # named days with more messages than this use the overall candidates from them

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


@dataclass(frozen=True)
class Weights:
    """The constants of recall ranking. Checked by leave-one-conversation-out on LoCoMo dev
    (bench/recall_cv.py, bench/RESULTS-retrieval.md round 3): constants chosen that way did not beat
    these out of sample, and every rule loses 1.4-4 points R@10 when switched off. A benchmark passes
    others to compare."""

    dense: float = DENSE_WEIGHT
    neighbours: tuple[float, ...] = NEIGHBOUR_WEIGHTS
    speaker: float = SPEAKER_BOOST
    date: float = DATE_FIRST
    context: float = messages.CONTEXT_WEIGHT  # BM25 weight of the neighbours' words column


WEIGHTS = Weights()


@dataclass
class Pool:
    """What storage returned for one query, before any constant but the context weight is applied."""

    text: dict[int, float]  # id -> BM25 (higher is better)
    complete: bool  # text matching returned every match, not a truncated list
    dense: dict[int, float]  # id -> cosine similarity
    at: dict[int, Position]  # turn -> position, for the candidates and their neighbours
    dated: bool = False  # the query names days and some messages are from them
    window_text: dict[int, float] = field(default_factory=dict)
    window_complete: bool = True
    window_dense: dict[int, float] = field(default_factory=dict)


def gather(
    conn: Connection,
    agent_id: int,
    query: Query,
    depth: int,
    before_id: int | None = None,
    context: float = messages.CONTEXT_WEIGHT,
    reach: int = 3,
) -> Pool:
    """Read the candidates of a recall search: the best BM25 and vector matches of all messages
    and, when the query names days, of the messages from those days; plus the positions of every
    candidate and of the messages up to `reach` turns around it."""

    def keep(i: int) -> bool:
        return before_id is None or i < before_id

    public = query.public_only
    matches = messages.text_matches(conn, agent_id, query.text, depth, public, context)
    pool = Pool(
        {i: -score for i, score in matches if keep(i)},
        len(matches) < depth,
        {i: 1.0 - d for i, d in messages.nearest(conn, agent_id, query.vector, depth, public) if keep(i)},
        {},
    )
    members = _members(conn, agent_id, query, keep)
    if members is not None:
        pool.dated = bool(members)
    if members:
        first, last = min(members), max(members)
        inside = messages.text_matches(conn, agent_id, query.text, depth, public, context, (first, last))
        pool.window_text = {i: -score for i, score in inside if i in members}
        pool.window_complete = len(inside) < depth
        close = messages.nearest_among(conn, agent_id, query.vector, sorted(members), public)
        pool.window_dense = {i: 1.0 - d for i, d in close}
    elif members is None:  # too many to search one by one: the overall candidates from those days
        pool.dated = True
    ids = list(pool.text.keys() | pool.dense.keys() | pool.window_text.keys() | pool.window_dense.keys())
    found = messages.positions(conn, agent_id, ids, public)
    around = {p.turn + d for p in found for d in range(-reach, reach + 1)} - {p.turn for p in found}
    found += messages.at_turns(conn, agent_id, sorted(t for t in around if t > 0), public)
    pool.at = {p.turn: p for p in found if keep(p.id)}
    return pool


def _members(conn: Connection, agent_id: int, query: Query, keep: Callable[[int], bool]) -> set[int] | None:
    """Ids of the messages from the days the query names; None if there are over WINDOW_LIMIT."""
    found: set[int] = set()
    for start, end in spans(query.windows, query.zone):
        left = WINDOW_LIMIT + 1 - len(found)
        ids = messages.searchable_in(conn, agent_id, to_iso(start), to_iso(end), left, query.public_only)
        found.update(i for i in ids if keep(i))
        if len(ids) == left:
            return None
    return found


def order(pool: Pool, query: Query, weights: Weights = WEIGHTS) -> list[int]:
    """Ids best first. Without named days: fused text and vector scores, smoothed over neighbours,
    plus the speaker boost. With them, the messages from those days are ranked the same way among
    themselves and come `weights.date` ahead of the rest (which follows, ranked as usual)."""
    times = {turn: from_iso(p.created_at) for turn, p in pool.at.items()}
    conversation = _conversations(times)
    overall = _scored(pool.at, times, conversation, pool.text, pool.dense, pool.complete, query, weights)
    if not pool.dated:
        return _ordered(overall)
    days = {
        p.id
        for turn, p in pool.at.items()
        if any(w(times[turn].astimezone(query.zone).date()) for w in query.windows)
    }
    if pool.window_text or pool.window_dense:
        text, dense, complete = pool.window_text, pool.window_dense, pool.window_complete
    else:
        text = {i: v for i, v in pool.text.items() if i in days}
        dense = {i: v for i, v in pool.dense.items() if i in days}
        complete = pool.complete
    inside = _scored(pool.at, times, conversation, text, dense, complete, query, weights)
    ranked = dict(overall)
    ranked.update({i: v + weights.date for i, v in inside.items() if i in days})
    return _ordered(ranked)


def _scored(
    at: dict[int, Position],
    times: dict[int, datetime],
    conversation: dict[int, int],
    text: dict[int, float],
    dense: dict[int, float],
    complete: bool,
    query: Query,
    weights: Weights,
) -> dict[int, float]:
    hits = _scaled(fused(text, dense, complete, weights.dense))
    if not hits:
        return {}
    score = {turn: hits.get(p.id, 0.0) for turn, p in at.items()}

    def near(turn: int, other: int) -> float:
        same = conversation.get(other) == conversation[turn]
        return score[other] if same else 0.0

    ranked: dict[int, float] = {}
    for turn, position in at.items():
        total = score[turn]
        for distance, weight in enumerate(weights.neighbours, start=1):
            total += weight * max(near(turn, turn - distance), near(turn, turn + distance))
        if position.speaker and position.speaker in query.speakers:
            total += weights.speaker
        if total > 0:
            ranked[position.id] = total
    return ranked


def rank_messages(
    conn: Connection,
    agent_id: int,
    query: Query,
    limit: int,
    before_id: int | None = None,
    weights: Weights = WEIGHTS,
) -> list[int]:
    """Ids of this agent's messages best matching `query` (optionally only ids < before_id)."""
    depth = max(CANDIDATES, limit * 2)
    reach = len(weights.neighbours)
    return order(gather(conn, agent_id, query, depth, before_id, weights.context, reach), query, weights)[
        :limit
    ]


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
