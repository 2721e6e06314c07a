#!/usr/bin/env python3
"""Recall ranking constants chosen by leave-one-conversation-out (LOO) on LoCoMo.

Runs the bot's own search (`bot.retrieval.gather` + `order`, the code behind `conversation_search`)
over every question of every conversation for a grid of constants, and reports:
- in-sample: the constants best on all conversations, scored on the same conversations;
- LOO: for each conversation, the constants best on the others, scored on it (the honest figure);
- the same LOO with one rule switched off, to see which rules earn their place out of sample;
- with --held-out FILE: the constants chosen on all of --data, scored once on FILE's conversations.

    python bench/recall_cv.py --data ../shared/eval/locomo/locomo_dev.json \
        --audit ../shared/eval/locomo/audit_dev.json [--held-out FILE --held-out-audit FILE] [--json OUT]

Storage is read once per question and context weight; only the pure ranking (`order`) runs per
grid point. The data are CC BY-NC: the script reads them where they are and never copies them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot import dates, retrieval  # noqa: E402
from bot.embedding import WordLlamaEmbedder  # noqa: E402
from bot.evaluation import locomo, recall  # noqa: E402
from bot.memory import AgentMemory, named  # noqa: E402
from bot.runtime import open_database  # noqa: E402
from storage import agents, messages  # noqa: E402
from storage.clock import from_iso  # noqa: E402

KS = (1, 5, 10, 25, 50)
MAIN = (1, 2, 3, 4)
DEPTH = max(retrieval.CANDIDATES, 2 * max(KS))
OFF = -1.0  # a date value meaning "ignore the days the query names"
OLD = -2.0  # the previous rule: +0.2 for messages from those days, in the overall ranking

GRID: dict[str, list[Any]] = {
    "context": [0.0, 0.3, 0.6],
    "dense": [0.25, 0.5, 1.0],
    "neighbours": [(), (0.3,), (0.3, 0.2), (0.3, 0.2, 0.1), (0.15, 0.1, 0.05), (0.5, 0.35, 0.2)],
    "speaker": [0.0, 0.3, 0.5, 0.8],
    "date": [OFF, 0.1, 0.25, 0.5, 1.0, 1000.0],
}
ABLATIONS = {
    "no neighbour-context column (context 0)": ("context", [0.0]),
    "no dense retriever": ("dense", [0.0]),
    "no neighbour smoothing": ("neighbours", [()]),
    "no speaker boost": ("speaker", [0.0]),
    "no date-first (dates ignored)": ("date", [OFF]),
    "previous date rule (+0.2, overall ranking)": ("date", [OLD]),
    "date-first strict (all named days first)": ("date", [1000.0]),
}


@dataclass
class Item:
    """One question: what it needs for scoring under every grid point."""

    conversation: int
    category: int
    dated: bool  # the query names days (bot.dates finds a window)
    evidence: frozenset[int]  # message ids
    query: retrieval.Query
    pools: dict[float, retrieval.Pool]  # per context weight


def _old_date_rule(pool: retrieval.Pool, query: retrieval.Query, weights: retrieval.Weights) -> list[int]:
    """The ranking before date-first search: +0.2 for messages from the named days, overall."""
    times = {turn: from_iso(p.created_at) for turn, p in pool.at.items()}
    conversation = retrieval._conversations(times)
    overall = retrieval._scored(
        pool.at, times, conversation, pool.text, pool.dense, pool.complete, query, weights
    )
    for turn, position in pool.at.items():
        if position.id in overall and any(
            w(times[turn].astimezone(query.zone).date()) for w in query.windows
        ):
            overall[position.id] += 0.2
    return sorted(overall, key=lambda i: (-overall[i], i))


def ranking(item: Item, point: dict[str, Any]) -> list[int]:
    pool = item.pools[point["context"]]
    date = point["date"]
    weights = retrieval.Weights(point["dense"], point["neighbours"], point["speaker"], max(date, 0.0))
    if date == OLD:
        return _old_date_rule(pool, item.query, weights)
    if date == OFF:
        pool = replace(pool, dated=False)
    return retrieval.order(pool, item.query, weights)


def recalls(item: Item, ranked: list[int]) -> tuple[float, ...]:
    return tuple(len(item.evidence & set(ranked[:k])) / len(item.evidence) for k in KS)


async def build(path: Path, audit: Path | None, scratch: Path, tag: str) -> list[Item]:
    conversations = locomo.load(path, audit)
    embedder = WordLlamaEmbedder()
    db = await open_database(str(scratch / f"{tag}.db"), embedder.name, embedder.dim)
    items: list[Item] = []
    today = datetime.now(UTC).date()
    contexts = sorted({c for c in GRID["context"]} | {0.0})
    try:
        for number, conversation in enumerate(conversations):
            record = await db.run(
                agents.create, "locomo", conversation.sample_id, conversation.speaker_a, "UTC"
            )
            memory = AgentMemory(db, embedder, record)
            by_dia = {dia: i for i, dia in (await recall.ingest(memory, conversation)).items()}
            speakers = await db.read(messages.speakers, record.id)
            for question in conversation.questions:
                evidence = frozenset(by_dia[d] for d in question.evidence if d in by_dia)
                if not evidence or question.category not in (*MAIN, 5):
                    continue
                vector = await memory.vector(retrieval.dense_query(question.text, speakers))
                query = retrieval.Query(
                    question.text, vector, named(question.text, speakers), dates.windows(question.text, today)
                )
                pools = {
                    c: await db.read(retrieval.gather, record.id, query, DEPTH, None, c, 3) for c in contexts
                }
                items.append(Item(number, question.category, bool(query.windows), evidence, query, pools))
    finally:
        db.close()
    return items


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _key(item: Item, point: dict[str, Any]) -> str:
    if not item.dated:
        point = {**point, "date": OFF}  # the date constant cannot matter; share the row
    return repr(sorted(point.items()))


_ITEMS: list[Item] = []
_POINTS: list[dict[str, Any]] = []


def _rows_of(index: int) -> dict[str, tuple[float, ...]]:
    item = _ITEMS[index]
    rows: dict[str, tuple[float, ...]] = {}
    for point in _POINTS:
        key = _key(item, point)
        if key not in rows:
            rows[key] = recalls(item, ranking(item, point))
    return rows


class Table:
    """Recall rows per (item, grid point), all computed up front on every core (fork)."""

    def __init__(self, items: list[Item], grid: list[dict[str, Any]]) -> None:
        global _ITEMS, _POINTS
        _ITEMS, _POINTS = items, grid
        self.items = items
        with multiprocessing.get_context("fork").Pool() as workers:
            self.rows = workers.map(_rows_of, range(len(items)), chunksize=4)

    def row(self, index: int, point: dict[str, Any]) -> tuple[float, ...]:
        return self.rows[index][_key(self.items[index], point)]

    def objective(self, indices: list[int], point: dict[str, Any]) -> tuple[float, float]:
        rows = [self.row(i, point) for i in indices]
        at10 = statistics.fmean(r[2] for r in rows)
        rest = statistics.fmean(r[1] + r[3] for r in rows)
        return at10, rest

    def best(self, indices: list[int], grid: list[dict[str, Any]]) -> dict[str, Any]:
        return max(grid, key=lambda point: self.objective(indices, point))


def summary(rows: list[tuple[Item, tuple[float, ...]]]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[tuple[float, ...]]] = {}
    for item, row in rows:
        names = (
            ["5"] if item.category == 5 else ["1-4", str(item.category), "dated" if item.dated else "undated"]
        )
        if item.category == 5:
            names = ["5"]
        for name in names:
            groups.setdefault(name, []).append(row)
    order = ["1-4", "1", "2", "3", "4", "dated", "undated", "5"]
    return {
        name: {
            "n": len(groups[name]),
            **{f"R@{k}": round(statistics.fmean(r[i] for r in groups[name]), 3) for i, k in enumerate(KS)},
        }
        for name in order
        if name in groups
    }


def evaluate(table: Table, grid: list[dict[str, Any]]) -> dict[str, Any]:
    items = table.items
    main = [i for i, item in enumerate(items) if item.category in MAIN]
    convs = sorted({items[i].conversation for i in main})
    chosen_all = table.best(main, grid)
    in_sample = [(items[i], table.row(i, chosen_all)) for i in range(len(items))]
    loo_rows: list[tuple[Item, tuple[float, ...]]] = []
    folds = []
    for held in convs:
        train = [i for i in main if items[i].conversation != held]
        chosen = table.best(train, grid)
        folds.append({"held_out": held, "chosen": chosen})
        loo_rows += [
            (items[i], table.row(i, chosen)) for i in range(len(items)) if items[i].conversation == held
        ]
    return {"chosen": chosen_all, "in_sample": summary(in_sample), "loo": summary(loo_rows), "folds": folds}


def fixed(point: dict[str, Any], items: list[Item]) -> dict[str, Any]:
    table = Table(items, [point])
    return summary([(item, table.row(i, point)) for i, item in enumerate(items)])


def show(title: str, result: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'group':<10}{'n':>6}" + "".join(f"{'R@' + str(k):>8}" for k in KS))
    for name, row in result.items():
        print(f"{name:<10}{row['n']:>6}" + "".join(f"{row['R@' + str(k)]:>8.3f}" for k in KS))


def shipped() -> dict[str, Any]:
    w = retrieval.WEIGHTS
    return {
        "context": w.context,
        "dense": w.dense,
        "neighbours": w.neighbours,
        "speaker": w.speaker,
        "date": w.date,
    }


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--audit", type=Path)
    parser.add_argument("--held-out", type=Path)
    parser.add_argument("--held-out-audit", type=Path)
    parser.add_argument("--json", type=Path, dest="json_out")
    parser.add_argument("--no-ablations", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    started = time.perf_counter()
    report: dict[str, Any] = {"grid": GRID}
    with tempfile.TemporaryDirectory(prefix="membot-cv-") as scratch:
        items = asyncio.run(build(args.data, args.audit, Path(scratch), "dev"))
        held = (
            asyncio.run(build(args.held_out, args.held_out_audit, Path(scratch), "held"))
            if args.held_out
            else []
        )
    print(f"{len(items)} questions read in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    grid = points(GRID)
    union = list(grid)
    for _, (key, values) in ABLATIONS.items():
        union += [p for p in points({**GRID, key: values}) if p[key] not in GRID[key]]
    union.append(shipped())
    table = Table(items, union)
    print(f"{len(union)} grid points scored in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    full = evaluate(table, grid)
    report["full"] = full
    print(f"chosen on all dev: {full['chosen']}")
    for fold in full["folds"]:
        print(f"  fold without conversation {fold['held_out']}: {fold['chosen']}")
    show("in-sample (chosen and scored on all dev)", full["in_sample"])
    show("leave-one-conversation-out", full["loo"])
    report["shipped"] = {
        "point": shipped(),
        "dev": summary([(item, table.row(i, shipped())) for i, item in enumerate(items)]),
    }
    show(f"shipped constants {shipped()} on dev", report["shipped"]["dev"])
    if not args.no_ablations:
        report["ablations"] = {}
        for name, (key, values) in ABLATIONS.items():
            result = evaluate(table, points({**GRID, key: values}))
            report["ablations"][name] = result
            loo, ins = result["loo"]["1-4"], result["in_sample"]["1-4"]
            print(
                f"{name:<46} LOO R@10 {loo['R@10']:.3f} (in-sample {ins['R@10']:.3f}); "
                f"multi-hop LOO {result['loo']['1']['R@10']:.3f}; dated LOO "
                f"{result['loo'].get('dated', {}).get('R@10', 0):.3f}"
            )
    if held:
        report["held_out"] = {"chosen_on_dev": fixed(full["chosen"], held), "shipped": fixed(shipped(), held)}
        show("held-out, constants chosen on all dev", report["held_out"]["chosen_on_dev"])
        show("held-out, shipped constants", report["held_out"]["shipped"])
    print(f"\n{time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json_out:
        args.json_out.write_text(json.dumps(_json(report), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
