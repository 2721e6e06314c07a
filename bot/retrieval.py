"""Hybrid ranking for recall and archival search: BM25 (FTS5) and vectors, fused linearly.

Each retriever's scores over its candidates are scaled to 0..1 (min-max; a candidate the other
retriever did not return counts 0 there) and summed: f = minmax(-bm25) + minmax(cosine). Measured
on LoCoMo dev (bench/RESULTS-retrieval.md) this beats reciprocal-rank fusion by ~1-13 points at
recall@10. Runs on the database thread; every storage call is scoped by the agent id.
"""

from __future__ import annotations

from collections.abc import Callable

from storage import messages, passages
from storage.db import Connection
from storage.fulltext import words

CANDIDATES = 100
DENSE_WEIGHT = 1.0

Ranker = Callable[[Connection, int, str, int], list[tuple[int, float]]]
Nearest = Callable[[Connection, int, bytes, int], list[tuple[int, float]]]


def dense_query(text: str) -> str:
    """The text to embed for a search: its content words (stopwords pull static embeddings off-topic)."""
    content = words(text)
    return " ".join(content) if content else text


def _scaled(scores: dict[int, float]) -> dict[int, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {item: (value - low) / span if span > 0 else 1.0 for item, value in scores.items()}


def fuse(
    text_scores: dict[int, float], dense_scores: dict[int, float], dense_weight: float = DENSE_WEIGHT
) -> list[int]:
    """Ids ordered by min-max scaled text score + weighted scaled dense score (higher is better)."""
    text, dense = _scaled(text_scores), _scaled(dense_scores)
    total = {
        item: text.get(item, 0.0) + dense_weight * dense.get(item, 0.0) for item in text.keys() | dense.keys()
    }
    return sorted(total, key=lambda item: (-total[item], item))


def _rank(
    conn: Connection,
    agent_id: int,
    query: str,
    vector: bytes,
    limit: int,
    text: Ranker,
    nearest: Nearest,
    keep: Callable[[int], bool],
) -> list[int]:
    depth = max(CANDIDATES, limit * 2)
    by_text = {i: -score for i, score in text(conn, agent_id, query, depth) if keep(i)}
    by_meaning = {i: 1.0 - distance for i, distance in nearest(conn, agent_id, vector, depth) if keep(i)}
    return fuse(by_text, by_meaning)[:limit]


def rank_messages(
    conn: Connection, agent_id: int, query: str, vector: bytes, limit: int, before_id: int | None = None
) -> list[int]:
    """Ids of this agent's messages best matching `query` (optionally only ids < before_id)."""
    cutoff = before_id

    def keep(i: int) -> bool:
        return cutoff is None or i < cutoff

    return _rank(conn, agent_id, query, vector, limit, messages.text_matches, messages.nearest, keep)


def rank_passages(conn: Connection, agent_id: int, query: str, vector: bytes, limit: int) -> list[int]:
    """Ids of this agent's archival passages best matching `query`."""
    return _rank(
        conn, agent_id, query, vector, limit, passages.text_matches, passages.nearest, lambda i: True
    )
