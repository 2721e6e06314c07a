"""Shared parts of the benchmarks: synthetic text, percentiles, a runtime on a temp file, JSON output.

Not a benchmark itself. Importing it puts the repository root on `sys.path` and quiets logging
(before wordllama is imported, which would set INFO).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
logging.basicConfig(level=logging.WARNING)

import httpx2  # noqa: E402  (the openai client is built on httpx2)
import openai  # noqa: E402

from bot.llm import LLM  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from tests.fake_openai import FakeOpenAI, Script  # noqa: E402

SYLLABLES = "ka lo mi nu pe ra si to vu ze ba do fi gu he ja ko li mo na".split()
TOPICS = "garden dog trip Lisbon birthday sister concert guitar marathon recipe soup bike office".split()


def vocabulary(size: int = 5000) -> list[str]:
    rng = random.Random(3)
    return [rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(size)]


VOCABULARY = vocabulary()
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(VOCABULARY))]  # Zipf, like real text
CUM_WEIGHTS = list(itertools.accumulate(WEIGHTS))


def sentence(rng: random.Random, low: int = 6, high: int = 18) -> str:
    """Synthetic text: `low`..`high` Zipf-distributed pseudo-words and one topic word."""
    words = rng.choices(VOCABULARY, cum_weights=CUM_WEIGHTS, k=rng.randint(low, high))
    return " ".join([*words, rng.choice(TOPICS)])


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of durations given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 0.50), 3),
        "p95": round(percentile(ms, 0.95), 3),
        "p99": round(percentile(ms, 0.99), 3),
        "max": round(max(ms, default=0.0), 3),
        "mean": round(sum(ms) / len(ms), 3) if ms else 0.0,
    }


def write_json(path: str | None, result: dict[str, Any]) -> None:
    """Print `result` and, if `path` is given, write it there."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


async def start_runtime(fake_url: str, db_path: str, keepalive: int | None = None, **env: str) -> Runtime:
    """The real Runtime (WordLlama embedder, real openai client) against a fake endpoint.

    `keepalive` (an experiment, not what membot ships) gives the LLM client a connection pool that
    keeps that many idle connections (the openai default keeps 100 of at most 1,000)."""
    settings = load_settings(
        {"OPENAI_BASE_URL": fake_url, "OPENAI_API_KEY": "x", "MEMBOT_DB": db_path, **env},
        dotenv_path=None,
    )
    llm = None
    if keepalive is not None:
        limits = httpx2.Limits(max_connections=max(1000, keepalive), max_keepalive_connections=keepalive)
        client = openai.AsyncOpenAI(
            api_key="x",
            base_url=fake_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_retries,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        llm = LLM(settings, client=client)
    return await Runtime.start(settings, llm=llm)


class BacklogHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog fit for a burst of connections (stdlib default: 5)."""

    request_queue_size = 2048
    daemon_threads = True


class RoomyFakeOpenAI(FakeOpenAI):
    """tests/fake_openai.FakeOpenAI served by `BacklogHTTPServer` (same handler, larger backlog)."""

    def __init__(self, script: Script, server_class: type[ThreadingHTTPServer] = BacklogHTTPServer):
        super().__init__(script)
        handler = self.server.RequestHandlerClass
        self.server.server_close()
        self.server = server_class(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@contextmanager
def timed(label: str, sink: dict[str, float]) -> Iterator[None]:
    """Add the wall time of the block to `sink[label]` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        sink[label] = sink.get(label, 0.0) + time.perf_counter() - started


def busy_meter(
    owner: Any, name: str, sink: dict[str, float], label: str, by_first_argument: bool = False
) -> Callable[[], None]:
    """Wrap `owner.name` (a sync callable) to add its wall time to `sink[label]`, and with
    `by_first_argument` also to `sink["label:<first argument's __name__>"]`; returns an undo."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            sink[label] = sink.get(label, 0.0) + elapsed
            if by_first_argument and args:
                key = f"{label}:{getattr(args[0], '__name__', type(args[0]).__name__)}"
                sink[key] = sink.get(key, 0.0) + elapsed

    setattr(owner, name, wrapped)
    return lambda: setattr(owner, name, original)
