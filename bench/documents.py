"""Documents: load throughput per format, and archival search latency over many document passages.

    python bench/documents.py                 # 1 MB per format (PDF 0.25 MB), search over 10k passages (<30 s)
    python bench/documents.py --full          # 8 MB per format (PDF 2 MB), search over 100k passages
    python bench/documents.py --mb 4 --passages 50000 --json out.json

Load: one synthetic document per format (text, Markdown with headings, HTML with headings and
paragraphs, a PDF with a text layer written by tests/pdf.py), each loaded with bot.loading.load
(the path `membot load` and attachments take: read, extract, chunk, embed with WordLlama in
batches, one transaction) into a fresh agent; MB/s (of the file's bytes) and passages/s, with
extraction+chunking timed apart. Search: `--passages` document passages (Markdown documents of
~1,100 passages each, loaded the same way) in one agent, then `--queries` archival_memory_search
calls through the tool registry (embed the query, hybrid rank, fetch, look up each hit's document
and position); p50/p95 in ms. Synthetic text is bench.common's Zipf pseudo-words. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import sentence, start_runtime, summary_ms, write_json
from bot.chunking import chunk
from bot.extract import extract
from bot.loading import load
from bot.memory import AgentMemory, Scope
from bot.memory_tools import registry
from bot.runtime import Runtime
from bot.tools import Address, ToolContext
from tests.fake_openai import FakeOpenAI, say
from tests.pdf import make_pdf


def paragraphs(rng: random.Random, chars: int) -> list[str]:
    found, size = [], 0
    while size < chars:
        paragraph = " ".join(sentence(rng).capitalize() + "." for _ in range(rng.randint(2, 6)))
        found.append(paragraph)
        size += len(paragraph) + 2
    return found


def document(kind: str, rng: random.Random, chars: int) -> bytes:
    """About `chars` characters of text as a file of `kind`, a heading every 8 paragraphs."""
    body = paragraphs(rng, chars)
    sections = [body[i : i + 8] for i in range(0, len(body), 8)]
    if kind == "text":
        return "\n\n".join(body).encode()
    if kind == "markdown":
        return "\n\n".join(
            f"## Section {n}\n\n" + "\n\n".join(part) for n, part in enumerate(sections, 1)
        ).encode()
    if kind == "html":
        inner = "".join(
            f"<h2>Section {n}</h2>" + "".join(f"<p>{p}</p>\n" for p in part)
            for n, part in enumerate(sections, 1)
        )
        return f"<!doctype html><html><head><style>p{{margin:0}}</style></head><body>{inner}</body></html>".encode()
    lines: list[str] = []
    for p in body:
        words, line = p.split(), ""
        for word in words:
            if len(line) + len(word) > 90:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines += [line, ""]
    return make_pdf([lines[i : i + 48] for i in range(0, len(lines), 48)])


SUFFIX = {"text": "txt", "markdown": "md", "html": "html", "pdf": "pdf"}


async def memory_for(runtime: Runtime, user: str) -> AgentMemory:
    agent = await runtime.agent_for("terminal", user, user)
    return runtime.memory(agent, Scope(None, True))


async def throughput(runtime: Runtime, kind: str, megabytes: float, seed: int) -> dict[str, Any]:
    data = document(kind, random.Random(seed), int(megabytes * 1_000_000 * (0.9 if kind != "html" else 0.8)))
    name = f"bench.{SUFFIX[kind]}"
    t0 = time.perf_counter()
    parts = extract(data, name).parts
    chunks = chunk(parts)
    prepare = time.perf_counter() - t0
    memory = await memory_for(runtime, f"load-{kind}")
    t1 = time.perf_counter()
    loaded = await load(memory, data, name)
    seconds = time.perf_counter() - t1
    assert loaded.passages == len(chunks)
    mb = len(data) / 1_000_000
    return {
        "format": kind,
        "mb": round(mb, 2),
        "passages": loaded.passages,
        "seconds": round(seconds, 2),
        "mb_per_s": round(mb / seconds, 2),
        "passages_per_s": round(loaded.passages / seconds),
        "extract_and_chunk_s": round(prepare, 2),
    }


async def search_latency(runtime: Runtime, passages: int, queries: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    memory = await memory_for(runtime, "reader")
    loaded, docs, t0 = 0, 0, time.perf_counter()
    while loaded < passages:
        data = document("markdown", rng, 1_000_000)
        docs += 1
        done = await load(memory, data, f"book-{docs}.md")
        loaded += done.passages
    load_s = time.perf_counter() - t0
    tools = registry()
    ctx = ToolContext(memory, Address(0, "terminal", "reader"))
    times: list[float] = []
    for _ in range(queries):
        words = sentence(rng, 1, 4)
        started = time.perf_counter()
        outcome = await tools.call(ctx, "archival_memory_search", json.dumps({"query": words}))
        times.append(time.perf_counter() - started)
        assert outcome.ok and "[document " in outcome.content, outcome.content[:300]
    return {
        "passages": loaded,
        "documents": docs,
        "load_seconds": round(load_s, 1),
        "load_passages_per_s": round(loaded / load_s),
        "queries": queries,
        "search_ms": summary_ms(times),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="8 MB per format, 100k passages")
    parser.add_argument("--mb", type=float, default=None, help="megabytes per format (PDF: a quarter)")
    parser.add_argument("--passages", type=int, default=None, help="document passages to search over")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    mb = args.mb or (8.0 if args.full else 1.0)
    passages = args.passages or (100_000 if args.full else 10_000)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(lambda request: say("unused")) as fake:
        runtime = await start_runtime(fake.url, str(Path(tmp) / "bench.db"))
        try:
            loads = [
                await throughput(runtime, kind, mb / 4 if kind == "pdf" else mb, seed)
                for seed, kind in enumerate(("text", "markdown", "html", "pdf"))
            ]
            search = await search_latency(runtime, passages, args.queries, 99)
        finally:
            await runtime.close()
    write_json(args.json, {"load": loads, "search": search})


if __name__ == "__main__":
    asyncio.run(main())
