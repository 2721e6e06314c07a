"""`membot chat` as a user runs it: a real process, stdin piped, the scripted model over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fake_openai import Answer, FakeOpenAI, last_message, last_user_text, say

FACT = "The user's sister Maya lives in Lisbon"
PASSAGE = "Maya's birthday is on 14 March; she loves fado"


def script(request: dict[str, Any]) -> Answer:
    if not request.get("tools"):
        return Answer(content="summary")
    last = last_message(request)
    if last["role"] == "tool":
        result = json.loads(last["content"])["message"]
        return say("Noted." if result.startswith("Stored") else f"Found: {result}")
    text = last_user_text(request)
    if text.startswith("remember"):
        return Answer(
            content="Saving both.",
            tool_calls=[
                ("core_memory_append", {"label": "human", "content": FACT}),
                ("archival_memory_insert", {"content": PASSAGE, "request_heartbeat": True}),
            ],
        )
    if text.startswith("recall"):
        return Answer(
            tool_calls=[
                ("archival_memory_search", {"query": "when is Maya's birthday", "request_heartbeat": True})
            ]
        )
    return say("hello!")


def run_cli(home: Path, stdin: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`membot ARGS` in a fresh process with only these settings in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "MEMBOT_DB": str(home / "membot.db"), **env},
        cwd=home,
        timeout=120,
    )


def membot(fake: FakeOpenAI, home: Path, lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    stdin = "".join(line + "\n" for line in lines)
    return run_cli(
        home, stdin, *args, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="test-key", MEMBOT_LLM_RETRIES="0"
    )


def test_memory_survives_a_restart_and_stays_with_its_user(tmp_path: Path):
    with FakeOpenAI(script) as fake:
        first = membot(fake, tmp_path, ["hi", "remember this please"], "chat", "--user", "alice", "--verbose")
        assert first.returncode == 0, first.stderr
        assert first.stdout == "hello!\n\nNoted.\n\n"
        assert "thinks: Saving both." in first.stderr and "core_memory_append" in first.stderr

        seen = len(fake.requests)
        second = membot(
            fake, tmp_path, ["recall", "/memory", "/exit", "never sent"], "chat", "--user", "alice"
        )
        assert second.returncode == 0, second.stderr
        system = fake.requests[seen]["messages"][0]["content"]
        assert FACT in system
        assert PASSAGE in second.stdout.split("\n\n")[0]
        assert FACT in second.stdout and "archival memory: 1 passages" in second.stdout
        assert "never sent" not in json.dumps(fake.requests)

        seen = len(fake.requests)
        other = membot(fake, tmp_path, ["recall"], "chat", "--user", "bob")
        assert other.returncode == 0, other.stderr
        assert FACT not in fake.requests[seen]["messages"][0]["content"]
        assert PASSAGE not in other.stdout and "No passages found" in other.stdout


def test_missing_api_key_is_one_line_naming_the_setting(tmp_path: Path):
    result = run_cli(tmp_path, "hi\n", "chat", "--user", "x")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "OPENAI_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_endpoint_keeps_chatting_and_logs_what_to_check(tmp_path: Path):
    result = run_cli(
        tmp_path,
        "hi\nstill there?\n",
        "chat",
        "--user",
        "x",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        MEMBOT_LLM_RETRIES="0",
    )
    assert result.returncode == 0
    assert result.stdout.count("can't reach the language model") == 2
    assert "check OPENAI_BASE_URL" in result.stderr and "Traceback" not in result.stderr
