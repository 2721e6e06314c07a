"""A fake OpenAI-compatible server on 127.0.0.1, scripted by a function of the request.

It speaks real HTTP, so the bot's real `openai` client talks to it exactly as to a real endpoint.
`script(request) -> Answer` decides each chat completion; embeddings are answered with a
deterministic bag-of-words hash (for tests of the `openai:MODEL` embedder).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass
class Answer:
    """One scripted chat completion: text, tool calls, or an HTTP error."""

    content: str | None = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)
    status: int = 200
    error: str = ""
    raw: bytes | None = None
    delay: float = 0.0

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.status != 200:
            return json.dumps(
                {"error": {"message": self.error or "fake failure", "type": "server_error"}}
            ).encode()
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                    },
                }
                for name, arguments in self.tool_calls
            ]
        return json.dumps(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        ).encode()


def say(text: str) -> Answer:
    return Answer(tool_calls=[("send_message", {"message": text})])


def call(name: str, **arguments: Any) -> Answer:
    return Answer(tool_calls=[(name, arguments)])


Script = Callable[[dict[str, Any]], Answer]


def hash_embedding(text: str, dim: int = 64) -> list[float]:
    vector = np.zeros(dim, dtype=np.float32)
    for word in text.lower().split():
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    norm = float(np.linalg.norm(vector)) or 1.0
    return [float(x) / norm for x in vector]


class FakeOpenAI:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self.embedding_status = 200  # set to e.g. 503 to make /embeddings fail
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                if self.path.endswith("/embeddings"):
                    fake.embedding_requests.append(request)
                    if fake.embedding_status != 200:
                        self._send(fake.embedding_status, Answer(status=fake.embedding_status).body())
                        return
                    inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
                    data = [
                        {"object": "embedding", "index": i, "embedding": hash_embedding(t)}
                        for i, t in enumerate(inputs)
                    ]
                    self._send(
                        200, json.dumps({"object": "list", "data": data, "model": request["model"]}).encode()
                    )
                    return
                with fake._lock:
                    fake.requests.append(request)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    answer = fake.script(request)
                    if answer.delay:
                        time.sleep(answer.delay)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                self._send(answer.status, answer.body())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def agent_requests(self) -> list[dict[str, Any]]:
        """Requests that offered the agent's tools (not summariser calls)."""
        return [r for r in self.requests if r.get("tools")]


def last_message(request: dict[str, Any]) -> dict[str, Any]:
    return request["messages"][-1]


def last_user_text(request: dict[str, Any]) -> str:
    """The latest user message's text, without the timestamp prefix."""
    for message in reversed(request["messages"]):
        if message["role"] == "user" and "[system event]" not in message["content"]:
            content: str = message["content"]
            return content.split("] ", 1)[1] if content.startswith("[") else content
    return ""
