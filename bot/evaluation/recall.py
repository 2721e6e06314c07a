"""Evidence recall of conversation_search on LoCoMo.

For each conversation: a fresh agent in a fresh database; every turn imported into its recall
memory through the bot's own storage and embedding path (speaker name, the session's date-time).
For each question: the ranking `conversation_search` uses, for the question text; recall@k = the
fraction of the question's evidence turns in the top k, averaged per category and over
categories 1-4; session recall@k = the same for the sessions the evidence is in. Recall is also
split by whether the question names a date (`bot.dates` finds a window in it: the searches that
take their first candidates from those days) or not.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.dates import windows
from bot.embedding import Embedder
from bot.evaluation.locomo import Conversation, Question, session_of
from bot.memory import AgentMemory, Imported
from bot.runtime import open_database
from storage import agents

MAIN = "1-4"  # the categories the headline figure averages: all but adversarial
DATED, UNDATED = "names a date", "no date"


@dataclass
class Scores:
    """Per-question recall values, grouped by category."""

    ks: list[int]
    turns: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    sessions: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    by_date: dict[str, dict[str, list[list[float]]]] = field(
        default_factory=lambda: {DATED: defaultdict(list), UNDATED: defaultdict(list)}
    )
    skipped: int = 0

    def add(self, question: Question, ranked: list[str], dated: bool = False) -> None:
        evidence = set(question.evidence)
        sessions = question.sessions
        turn_row = [len(evidence & set(ranked[:k])) / len(evidence) for k in self.ks]
        session_row = [len(sessions & {session_of(d) for d in ranked[:k]}) / len(sessions) for k in self.ks]
        groups = [str(question.category)] + ([MAIN] if question.category in (1, 2, 3, 4) else [])
        for group in groups:
            self.turns[group].append(turn_row)
            self.sessions[group].append(session_row)
            self.by_date[DATED if dated else UNDATED][group].append(turn_row)

    def table(self, rows: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
        return {
            group: {str(k): round(statistics.fmean(r[i] for r in values), 4) for i, k in enumerate(self.ks)}
            for group, values in sorted(rows.items(), key=lambda item: (item[0] != MAIN, item[0]))
        }

    def report(self) -> dict[str, Any]:
        return {
            "recall_at_k": self.table(self.turns),
            "session_recall_at_k": self.table(self.sessions),
            "questions": {group: len(values) for group, values in sorted(self.turns.items())},
            "recall_by_date": {split: self.table(rows) for split, rows in self.by_date.items()},
            "questions_by_date": {
                split: {group: len(values) for group, values in sorted(rows.items())}
                for split, rows in self.by_date.items()
            },
            "skipped_without_evidence": self.skipped,
        }


async def ingest(memory: AgentMemory, conversation: Conversation) -> dict[int, str]:
    """Import every turn into the agent's recall memory; returns message id -> dia id."""
    roles = {conversation.speaker_a: "user", conversation.speaker_b: "assistant"}
    items = [
        Imported(roles.get(turn.speaker, "user"), turn.speaker, turn.text, turn.at)
        for turn in conversation.turns
    ]
    stored = await memory.import_messages(items)
    return {message.id: turn.dia_id for message, turn in zip(stored, conversation.turns, strict=True)}


async def evaluate(
    conversations: list[Conversation],
    embedder: Embedder,
    ks: list[int],
    progress: Callable[[int], object] = lambda n: None,
    db_path: str | Path | None = None,
) -> dict[str, Any]:
    """Recall figures for these conversations (see the module docstring)."""
    scores = Scores(ks)
    depth = max(ks)
    query_ms: list[float] = []
    ingest_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="membot-eval-") as scratch:
        db = await open_database(str(db_path or Path(scratch) / "locomo.db"), embedder.name, embedder.dim)
        try:
            for conversation in conversations:
                started = time.perf_counter()
                record = await db.run(
                    agents.create, "locomo", conversation.sample_id, conversation.speaker_a, "UTC"
                )
                memory = AgentMemory(db, embedder, record)
                dia_ids = await ingest(memory, conversation)
                ingest_seconds += time.perf_counter() - started
                for question in conversation.questions:
                    if not question.evidence:
                        scores.skipped += 1
                        progress(1)
                        continue
                    started = time.perf_counter()
                    found = await memory.search_messages(question.text, depth)
                    query_ms.append((time.perf_counter() - started) * 1000)
                    dated = bool(windows(question.text, memory.local(datetime.now(UTC)).date()))
                    scores.add(question, [dia_ids[m.id] for m in found if m.id in dia_ids], dated)
                    progress(1)
        finally:
            db.close()
    report = scores.report()
    report["k"] = ks
    report["embedder"] = embedder.name
    report["conversations"] = len(conversations)
    report["turns"] = sum(len(c.turns) for c in conversations)
    report["ingest_seconds"] = round(ingest_seconds, 2)
    if query_ms:
        ordered = sorted(query_ms)
        report["search_ms"] = {
            "p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        }
    return report
