"""LoCoMo question answering through the full agent: token F1 and an LLM judge.

Each question goes to the conversation's agent as a user message, in a fresh copy of the
database that holds only the imported conversation (so one question's answer never leaks into
the next). The agent finds the answer with its own memory tools. Adversarial questions
(category 5, whose premise is false) are left out, as in the LoCoMo paper's F1 tables.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import statistics
import string
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bot.embedding import Embedder
from bot.evaluation.locomo import CATEGORIES, Conversation, Question
from bot.evaluation.recall import MAIN, ingest
from bot.events import Event
from bot.llm import LLM
from bot.runtime import Runtime, open_database
from bot.settings import Settings
from storage.db import Database

log = logging.getLogger(__name__)

JUDGE = (
    "You grade answers to questions about a long conversation. Given the question, the gold answer "
    "and a response, reply with exactly one word: CORRECT if the response contains the gold answer's "
    "meaning (same facts; other wording, extra detail or a relative date that resolves to the same "
    "date is fine), otherwise WRONG."
)
ARTICLES = re.compile(r"\b(a|an|the|and)\b")


def normalise(text: str) -> list[str]:
    """LoCoMo/SQuAD answer normalisation: lower case, no punctuation, no articles."""
    text = text.lower().replace(",", " ")
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return ARTICLES.sub(" ", text).split()


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between a response and the gold answer."""
    predicted, expected = normalise(prediction), normalise(gold)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not predicted or not expected or common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


async def judge(llm: LLM, question: Question, response: str) -> bool:
    prompt = f"Question: {question.text}\nGold answer: {question.answer}\nResponse: {response}"
    completion = await llm.complete(
        [{"role": "system", "content": JUDGE}, {"role": "user", "content": prompt}], max_tokens=5
    )
    return completion.content.strip().upper().startswith("CORRECT")


def _runtime(settings: Settings, path: Path, db: Database, embedder: Embedder, llm: LLM) -> Runtime:
    return Runtime(dataclasses.replace(settings, db=str(path), timezone="UTC"), db, embedder, llm)


async def _template(
    settings: Settings, conversation: Conversation, embedder: Embedder, llm: LLM, path: Path
) -> None:
    """A database holding only the conversation, imported into its agent's recall memory."""
    db = await open_database(str(path), embedder.name, embedder.dim)
    runtime = _runtime(settings, path, db, embedder, llm)
    try:
        record = await runtime.agent_for("locomo", conversation.sample_id, conversation.speaker_a)
        await ingest(runtime.memory(record), conversation)
    finally:
        db.close()


async def _ask(
    settings: Settings,
    conversation: Conversation,
    question: Question,
    embedder: Embedder,
    llm: LLM,
    path: Path,
) -> str:
    """The agent's reply to the question (empty if the turn failed)."""
    db = await open_database(str(path), embedder.name, embedder.dim)
    try:
        turn = await _runtime(settings, path, db, embedder, llm).handle(
            Event.direct("locomo", conversation.sample_id, question.text, conversation.speaker_a)
        )
    finally:
        db.close()
    return "" if turn.failed else "\n".join(turn.replies)


async def evaluate(
    settings: Settings,
    conversations: list[Conversation],
    embedder: Embedder,
    progress: Callable[[int], object] = lambda n: None,
) -> dict[str, Any]:
    """F1 and judge accuracy per category and over categories 1-4."""
    llm = LLM(settings)
    f1s: dict[str, list[float]] = defaultdict(list)
    verdicts: dict[str, list[float]] = defaultdict(list)
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="membot-qa-") as scratch:
            for conversation in conversations:
                template = Path(scratch) / f"{conversation.index}.db"
                await _template(settings, conversation, embedder, llm, template)
                for question in conversation.questions:
                    progress(1)
                    if question.category == 5:
                        continue
                    copy = Path(scratch) / "question.db"
                    shutil.copyfile(template, copy)
                    response = await _ask(settings, conversation, question, embedder, llm, copy)
                    copy.unlink()
                    failed += not response
                    correct = bool(response) and await judge(llm, question, response)
                    for group in (str(question.category), MAIN):
                        f1s[group].append(f1(response, question.answer))
                        verdicts[group].append(float(correct))
    finally:
        await llm.close()
    order = sorted(f1s, key=lambda g: (g != MAIN, g))
    return {
        "f1": {g: round(statistics.fmean(f1s[g]), 4) for g in order},
        "judge_accuracy": {g: round(statistics.fmean(verdicts[g]), 4) for g in order},
        "questions": {g: len(f1s[g]) for g in order},
        "failed_turns": failed,
        "model": settings.model,
    }


def print_table(report: dict[str, Any], out: TextIO) -> None:
    print(f"\nQuestion answering by the full agent ({report['model']})", file=out)
    print(f"{'category':<18}{'n':>5}{'F1':>8}{'judge':>8}", file=out)
    for group, value in report["f1"].items():
        name = "1-4" if group == MAIN else f"{group} {CATEGORIES[int(group)]}"
        print(
            f"{name:<18}{report['questions'][group]:>5}{value:>8.3f}{report['judge_accuracy'][group]:>8.3f}",
            file=out,
        )
    if report["failed_turns"]:
        print(f"{report['failed_turns']} turns failed (see the log); they score 0", file=out)
