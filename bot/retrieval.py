"""Hybrid ranking for recall and archival search: BM25 (FTS5) and vectors, fused by rank.

Reciprocal-rank fusion: score(d) = sum over lists of weight / (K + rank). Runs on the database
thread (functions take the connection first); every storage call is scoped by the agent id.
"""

from __future__ import annotations

from collections.abc import Callable

from storage import messages, passages
from storage.db import Connection

K = 60
CANDIDATES = 100

Ranker = Callable[[Connection, int, str, int], list[tuple[int, float]]]
Nearest = Callable[[Connection, int, bytes, int], list[tuple[int, float]]]


def fuse(*rankings: list[int], k: int = K) -> list[int]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores, key=lambda item: (-scores[item], -item))


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
    by_text = [i for i, _ in text(conn, agent_id, query, depth) if keep(i)]
    by_meaning = [i for i, _ in nearest(conn, agent_id, vector, depth) if keep(i)]
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
