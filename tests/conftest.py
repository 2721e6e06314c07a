"""Shared fixtures: a fake OpenAI server, settings on a temp database, a running Runtime."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.embedding import WordLlamaEmbedder
from bot.runtime import Runtime
from bot.settings import Settings, load_settings
from tests import postgres
from tests.fake_openai import Answer, FakeOpenAI, Script, say

_EMBEDDER: WordLlamaEmbedder | None = None


def shared_embedder() -> WordLlamaEmbedder:
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = WordLlamaEmbedder()
    return _EMBEDDER


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if postgres.wanted():
        skip = pytest.mark.skip(reason="checks SQLite itself (TEST_BACKEND=postgres)")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "MEMBOT_", "DISCORD_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def echo(request: dict[str, Any]) -> Answer:
    """A polite model: summarises when asked without tools, else says what it heard."""
    if not request.get("tools"):
        return Answer(content="Summary: earlier small talk.")
    last = request["messages"][-1]
    if last["role"] == "tool":
        return Answer(content="done")
    return say("heard: " + last["content"].split("] ", 1)[-1])


@pytest.fixture
def fake_server() -> Iterator[Callable[[Script], FakeOpenAI]]:
    servers: list[FakeOpenAI] = []

    def start(script: Script = echo) -> FakeOpenAI:
        server = FakeOpenAI(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def make_settings(tmp_path: Path, fake: FakeOpenAI, **overrides: str) -> Settings:
    env = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "test-key",
        "MEMBOT_DB": postgres.database_for(tmp_path) if postgres.wanted() else str(tmp_path / "membot.db"),
        "MEMBOT_LLM_RETRIES": "0",
        "MEMBOT_LLM_TIMEOUT": "10",
        **overrides,
    }
    return load_settings(env, dotenv_path=None)


@pytest.fixture
async def runtime_for(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    runtimes: list[Runtime] = []

    async def start(fake: FakeOpenAI, **overrides: str) -> Runtime:
        runtime = await Runtime.start(make_settings(tmp_path, fake, **overrides), embedder=shared_embedder())
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        await runtime.close()
