"""`membot eval locomo`: memory recall (and, with --qa, answer quality) on the LoCoMo benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from bot.evaluation import locomo, qa, recall
from bot.settings import Settings

DEFAULT_K = "1,5,10,25,50"


def add_parser(commands: Any) -> None:
    evaluate = commands.add_parser("eval", help="measure memory (see README: How well it remembers)")
    benchmarks = evaluate.add_subparsers(dest="benchmark", required=True)
    parser = benchmarks.add_parser("locomo", help="LoCoMo evidence recall of conversation_search")
    parser.add_argument("path", type=Path, help="a LoCoMo data file (e.g. locomo10.json)")
    parser.add_argument("--audit", type=Path, help="locomo-audit errors.json: fixes wrong evidence ids")
    parser.add_argument("--k", default=DEFAULT_K, help=f"cut-offs for recall@k (default {DEFAULT_K})")
    parser.add_argument("--json", type=Path, dest="json_out", help="write every figure to this file")
    parser.add_argument(
        "--qa", action="store_true", help="also ask the full agent each question (uses the LLM)"
    )
    parser.add_argument("--limit", type=int, help="only the first N questions of each conversation")
    parser.add_argument(
        "--db",
        help="an empty database to load the conversations into: a postgresql:// URL measures that backend "
        "(default: a temporary SQLite file)",
    )


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SystemExit(f"membot eval: --k takes numbers like {DEFAULT_K}, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise SystemExit("membot eval: --k needs cut-offs of 1 or more")
    return ks


def print_table(title: str, table: dict[str, dict[str, float]], counts: dict[str, int], out: TextIO) -> None:
    ks = list(next(iter(table.values())).keys()) if table else []
    print(f"\n{title}", file=out)
    print(f"{'category':<18}{'n':>5}" + "".join(f"{'R@' + k:>8}" for k in ks), file=out)
    for group, row in table.items():
        name = "1-4 (all but adv.)" if group == recall.MAIN else f"{group} {locomo.CATEGORIES[int(group)]}"
        print(f"{name:<18}{counts.get(group, 0):>5}" + "".join(f"{row[k]:>8.3f}" for k in ks), file=out)


async def run(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    from bot.embedding import make_embedder

    out = out or sys.stdout
    ks = _ks(args.k)
    conversations = locomo.load(args.path, args.audit)
    if args.limit is not None:
        for conversation in conversations:
            conversation.questions = conversation.questions[: args.limit]
    total = sum(len(c.questions) for c in conversations)
    embedder = await make_embedder(settings)
    with tqdm(total=total, desc="recall", unit="q", file=sys.stderr, disable=None) as bar:
        report: dict[str, Any] = await recall.evaluate(conversations, embedder, ks, bar.update, args.db)
    print_table("Evidence recall@k (turns)", report["recall_at_k"], report["questions"], out)
    print_table("Session recall@k", report["session_recall_at_k"], report["questions"], out)
    for split, table in report["recall_by_date"].items():
        if not table:
            continue
        title = (
            f"Evidence recall@k, questions that {'name a date' if split == recall.DATED else 'name no date'}"
        )
        print_table(title, table, report["questions_by_date"][split], out)
    print(
        f"\n{report['conversations']} conversations, {report['turns']} turns, embedder {report['embedder']}, "
        f"search p50 {report.get('search_ms', {}).get('p50', 0)} ms",
        file=out,
    )
    if args.qa:
        with tqdm(total=total, desc="qa", unit="q", file=sys.stderr, disable=None) as bar:
            report["qa"] = await qa.evaluate(settings, conversations, embedder, bar.update)
        qa.print_table(report["qa"], out)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_out}", file=out)
    return 0
