"""Full-text search: free text into an FTS5 query (words quoted and OR-ed, common words left out),
and the BM25 query over an agent's rows of a table with an FTS5 index named `<table>_fts`."""

from __future__ import annotations

import re
from typing import Any

WORD = re.compile(r"[\w']+", re.UNICODE)

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves s t don did didn ever
    """.split()
)


def words(text: str) -> list[str]:
    """The searchable words of `text`, lower-cased, stopwords removed, in order, unique."""
    seen: dict[str, None] = {}
    for match in WORD.finditer(text.lower()):
        word = match.group().strip("'")
        if word.endswith("'s"):
            word = word[:-2]
        if word and word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def match_query(text: str) -> str | None:
    """An FTS5 MATCH expression that finds rows sharing any word with `text`, or None."""
    terms = words(text) or [w.lower() for w in WORD.findall(text)]
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms[:64])


def bm25_matches(
    conn: Any,
    table: str,
    agent_id: int,
    query: str,
    limit: int,
    weights: tuple[float, ...] = (),
    public_only: bool = False,
    ids: tuple[int, int] | None = None,
) -> list[tuple[int, float]]:
    """(id, bm25 score) of this agent's rows of `table` matching words of `query`, best first.

    `table` is one of our own table names, never user input; `weights` are the weights of the
    text columns after `owner`. The MATCH names the owner token, so FTS5 only reads this agent's
    rows; the join checks the agent id again on the rows returned. Public rows also carry the
    token "p<id>": with `public_only` the MATCH names that one, and the join checks `private = 0`.
    `ids` (first, last) keeps only rows in that id range, which FTS5 applies while it reads postings.
    """
    expression = match_query(query)
    if expression is None:
        return []
    owner, scope = ("p", " AND t.private = 0") if public_only else ("a", "")
    ranking = ", ".join([f"{table}_fts", "0.0", *(str(weight) for weight in weights)])
    between = " AND rowid BETWEEN ? AND ?" if ids else ""
    rows = conn.execute(
        f"SELECT t.id, hit.score FROM ("
        f"SELECT rowid, bm25({ranking}) AS score FROM {table}_fts "
        f"WHERE {table}_fts MATCH ?{between} ORDER BY score LIMIT ?"
        f") AS hit JOIN {table} AS t ON t.id = hit.rowid WHERE t.agent_id = ?{scope} ORDER BY hit.score",
        (f'owner : "{owner}{int(agent_id)}" AND ({expression})', *(ids or ()), limit, agent_id),
    )
    return [(int(i), float(score)) for i, score in rows]
