"""Full-text search: free text into an FTS5 query (words quoted and OR-ed, common words left out),
and the BM25 query over an agent's rows of a table with an FTS5 index named `<table>_fts`."""

from __future__ import annotations

import re
from typing import Any

from storage.postgres import dialect

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
    if dialect(conn) == "postgres":
        return _ts_matches(conn, table, agent_id, query, limit, weights, public_only, ids)
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


def ts_terms(text: str) -> list[str]:
    """The words of `text` as PostgreSQL tsquery terms (letters and digits only), at most 64."""
    terms = words(text) or [w.lower() for w in WORD.findall(text)]
    cleaned = [re.sub(r"\W+", "", term) for term in terms[:64]]
    return [term for term in cleaned if term]


# ts_rank's weight of the neighbours' words, relative to the BM25 column weight, and no length
# normalisation: measured on LoCoMo dev (R@10 over categories 1-4; SQLite's FTS5 BM25: .822):
# normalisation 1 .809, 2 .802, none .815; with the context weight x0.5 .803, x2 .819, x3 .816.
CONTEXT_SCALE = 2.0
COUNTERS = {"messages": "message_count", "passages": "passage_count"}  # rows per agent, in `agents`


def _ts_matches(
    conn: Any,
    table: str,
    agent_id: int,
    query: str,
    limit: int,
    weights: tuple[float, ...],
    public_only: bool,
    ids: tuple[int, int] | None,
) -> list[tuple[int, float]]:
    """PostgreSQL's side of `bm25_matches`, BM25-shaped: each query word's `ts_rank` in the
    weighted `fts` column (A: the text, B: its neighbours' words) times its inverse document
    frequency among the agent's rows, summed, negated so that best is lowest. (`ts_rank` alone
    knows no IDF: a common word counted as much as a rare name; LoCoMo dev R@10 .774 that way.)"""
    terms = ts_terms(query)
    if not terms:
        return []
    a, b = (*weights, 1.0, 1.0)[:2]
    b = min(1.0, b * CONTEXT_SCALE)
    scope = " AND t.private = 0" if public_only else ""
    between = " AND t.id BETWEEN ? AND ?" if ids else ""
    values = ", ".join("(?, to_tsquery('english', ?))" for _ in terms)
    rows = conn.execute(
        f"WITH q(term, query) AS (VALUES {values}), "
        f"hits AS (SELECT t.id, q.term, ts_rank('{{0, 0, {float(b)}, {float(a)}}}'::float4[], t.fts, q.query) "
        f"AS r FROM {table} AS t JOIN q ON t.fts @@ q.query WHERE t.agent_id = ?{scope}{between}), "
        "df AS (SELECT term, count(*) AS n FROM hits GROUP BY term), "
        f"total AS (SELECT greatest({COUNTERS[table]}, 1) AS n FROM agents WHERE id = ?) "
        "SELECT hits.id, -sum(ln(1 + (total.n - df.n + 0.5) / (df.n + 0.5)) * hits.r) AS score "
        "FROM hits JOIN df USING (term), total GROUP BY hits.id ORDER BY score, hits.id LIMIT ?",
        (*(x for i, term in enumerate(terms) for x in (i, term)), agent_id, *(ids or ()), agent_id, limit),
    )
    return [(int(i), float(score)) for i, score in rows]
