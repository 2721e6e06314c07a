"""Changing the embedder: refused clearly, then `membot reembed` moves everything over."""

from __future__ import annotations

import pytest

from bot.errors import EmbeddingMismatchError
from bot.events import Event
from bot.reembed import reembed
from bot.runtime import Runtime
from storage import vectors
from tests.conftest import make_settings
from tests.fake_openai import call


async def test_switch_to_openai_embeddings(fake_server, runtime_for, tmp_path):
    answers = [call("archival_memory_insert", content="The user's cat is named Miso")]
    fake = fake_server(lambda request: answers.pop(0) if answers else call("send_message", message="ok"))
    runtime = await runtime_for(fake)
    await runtime.handle(Event.direct("terminal", "ola", "my cat is Miso"))
    await runtime.close()

    settings = make_settings(tmp_path, fake, MEMBOT_EMBEDDER="openai:fake-embed")
    with pytest.raises(EmbeddingMismatchError, match="membot reembed"):
        await Runtime.start(settings)

    done = await reembed(settings, report=lambda line: None)
    assert done == (1, 1)  # the user message and the passage
    assert fake.embedding_requests and fake.embedding_requests[-1]["model"] == "fake-embed"

    runtime = await Runtime.start(settings)
    try:
        assert runtime.db.call(vectors.recorded) == ("openai:fake-embed", 64)
        agent = await runtime.agent_for("terminal", "ola")
        found = await runtime.memory(agent).search_passages("cat named Miso", 5)
        assert [p.content for p in found] == ["The user's cat is named Miso"]
    finally:
        await runtime.close()
