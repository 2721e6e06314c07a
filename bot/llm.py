"""The LLM: any OpenAI-compatible chat completions endpoint through the `openai` client.

Requests are built as plain wire-format dicts and sent with `client.post`, which skips the SDK's
per-message request transform (measured ~0.2 ms per message on the event loop) while keeping its
HTTP stack: connection pooling, timeouts, and retries with backoff on 429, 5xx and connection
errors. Responses are parsed tolerantly: local models often return odd shapes.

Each attempt may take MEMBOT_LLM_TIMEOUT seconds; the whole call, retries and back-off included,
is cut at MEMBOT_LLM_TOTAL_TIMEOUT. What the provider sends back in an error (its message, an
unreadable body) may echo the request, people's text included, so it goes into errors and logs
only with MEMBOT_LOG_CONTENT=true; otherwise they say the status and the error's type.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from bot.errors import ModelError
from bot.settings import Settings

log = logging.getLogger(__name__)

OVERFLOW_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "too many tokens",
    "prompt is too long",
    "reduce the length",
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int | None = None
    seconds: float = 0.0


def make_client(settings: Settings) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=settings.llm_api_key(),
        base_url=settings.openai_base_url,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_retries,
    )


def _is_overflow(exc: openai.APIStatusError) -> bool:
    text = f"{exc.message} {exc.body}".lower()
    return exc.status_code in (400, 413, 422) and any(marker in text for marker in OVERFLOW_MARKERS)


def provider_detail(exc: Exception, log_content: bool) -> str:
    """What an endpoint's error says: its text with MEMBOT_LOG_CONTENT, else only its kind."""
    if log_content:
        return f"{type(exc).__name__}: {str(getattr(exc, 'message', None) or exc)[:300]}"
    kind = getattr(exc, "type", None) or getattr(exc, "code", None)
    return f"{type(exc).__name__}" + (f", type {str(kind)[:40]}" if kind else "")


def _model_error(exc: Exception, endpoint: str, log_content: bool = False) -> ModelError:
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(
            f"LLM timed out at {endpoint}: every attempt took longer than MEMBOT_LLM_TIMEOUT "
            "(MEMBOT_LLM_RETRIES sets how many); raise it for a slow model",
            "The language model took too long to answer. Your message is saved; please try again.",
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            f"cannot reach the LLM at {endpoint}: {exc.__cause__ or exc}; check OPENAI_BASE_URL",
            "I can't reach the language model right now. Your message is saved; please try again later.",
        )
    if isinstance(exc, openai.AuthenticationError):
        return ModelError(
            f"the LLM at {endpoint} refused the API key (401); check OPENAI_API_KEY",
            "The language model refused my credentials; the bot's owner needs to check its API key.",
        )
    if isinstance(exc, openai.RateLimitError):
        return ModelError(
            f"the LLM at {endpoint} is rate-limiting us (429) after retries",
            "The language model is busy (rate-limited). Your message is saved; please try again in a minute.",
        )
    if isinstance(exc, openai.APIStatusError):
        overflow = _is_overflow(exc)
        return ModelError(
            f"the LLM at {endpoint} answered HTTP {exc.status_code}: {provider_detail(exc, log_content)}",
            f"The language model failed (HTTP {exc.status_code}). Your message is saved; please try again.",
            context_overflow=overflow,
        )
    return ModelError(
        f"unexpected LLM failure at {endpoint}: {provider_detail(exc, log_content)}",
        "Something went wrong talking to the language model. Your message is saved; please try again.",
    )


def _shape(payload: Any) -> str:
    if isinstance(payload, dict):
        return "a JSON object with keys " + ", ".join(sorted(str(k)[:30] for k in payload)[:8])
    return f"a JSON {type(payload).__name__}"


def parse_completion(payload: Any, log_content: bool = False) -> Completion:
    """Read a chat completion body; raise ModelError if it has no usable choice."""
    try:
        message = payload["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        shown = str(payload)[:300] if log_content else _shape(payload)
        raise ModelError(
            f"LLM returned no choices: {shown}",
            "The language model sent back an answer I couldn't read. Your message is saved; please try again.",
        ) from None
    if not isinstance(message, dict):
        message = {}
    calls = []
    for raw in message.get("tool_calls") or []:
        if not isinstance(raw, dict):
            continue
        function = raw.get("function") or {}
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append(
            ToolCall(
                id=str(raw.get("id") or f"call_{uuid.uuid4().hex[:16]}"),
                name=str(function.get("name") or ""),
                arguments=arguments,
            )
        )
    content = message.get("content")
    usage = payload.get("usage") if isinstance(payload, dict) else None
    prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return Completion(
        content=content if isinstance(content, str) else "",
        tool_calls=calls,
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
    )


class LLM:
    """Chat completions with tools, one method."""

    def __init__(self, settings: Settings, client: AsyncOpenAI | None = None) -> None:
        self.model = settings.model
        self.client = client or make_client(settings)
        self.endpoint = settings.openai_base_url
        self.log_content = settings.log_content
        self.attempt_timeout = settings.llm_timeout
        self.total_timeout = settings.llm_total_timeout

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if max_tokens:
            body["max_tokens"] = max_tokens
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.total_timeout):
                response = await self.client.post("/chat/completions", body=body, cast_to=httpx.Response)
            payload = response.json()
        except TimeoutError as exc:
            raise ModelError(
                f"LLM at {self.endpoint} gave up after {self.total_timeout:g} s in all "
                f"(MEMBOT_LLM_TOTAL_TIMEOUT; each attempt may take MEMBOT_LLM_TIMEOUT={self.attempt_timeout:g} s)",
                "The language model took too long to answer. Your message is saved; please try again.",
            ) from exc
        except openai.OpenAIError as exc:
            raise _model_error(exc, self.endpoint, self.log_content) from exc
        except ValueError as exc:
            raise ModelError(
                f"LLM at {self.endpoint} returned a body that is not JSON: {exc}",
                "The language model sent back an answer I couldn't read. Your message is saved; please try again.",
            ) from exc
        elapsed = time.perf_counter() - started
        completion = replace(parse_completion(payload, self.log_content), seconds=elapsed)
        log.info(
            "llm call: %d messages, %d tool calls back, prompt_tokens=%s, %.0f ms",
            len(messages),
            len(completion.tool_calls),
            completion.prompt_tokens,
            elapsed * 1000,
        )
        return completion

    async def close(self) -> None:
        await self.client.close()
