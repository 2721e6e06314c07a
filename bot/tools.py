"""The tool registry: typed async functions become JSON-schema tools the model can call.

A tool is `async def name(ctx: ToolContext, arg: type, ...) -> str`. Its description is the
docstring's first paragraph; argument descriptions come from its `Args:` section; the schema comes
from the signature through pydantic, which also validates (and leniently coerces: "3" -> 3) the
model's arguments before the call. Every tool but `send_message` also takes `request_heartbeat`.
A `ToolError` (or a validation failure) goes back to the model as a failed result.

A tool that changes memory returns an `Effect` instead of its result text: a function of the
database connection that makes the change and returns the text. The step loop runs it in the
same transaction that stores the call's result, so a crash can never leave a change without its
result (or a "Sent." without its message in the outbox).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from bot.errors import ModelError, ToolError
from bot.tokens import count_tools
from storage import outbox
from storage.db import Connection

if TYPE_CHECKING:
    from bot.memory import AgentMemory

MAX_RESULT_CHARS = 1000
HEARTBEAT_DOC = "Set true to get another step right after this result (to chain tools); else false."

Effect = Callable[[Connection], str]
ToolFunction = Callable[..., Awaitable[str | Effect]]


@dataclass(frozen=True)
class Address:
    """Where the turn's messages go: the conversation's id and platform, the person's platform
    user id, and the platform message being answered."""

    conversation_id: int
    platform: str
    recipient: str = ""
    reply_to: str = ""


@dataclass
class ToolContext:
    """What a tool may touch: this agent's memory and the turn's conversation."""

    memory: AgentMemory
    address: Address
    turn_start_id: int = 0
    call_id: str = ""
    sent: list[str] = field(default_factory=list)  # what the person was sent in this turn
    queued: list[outbox.Entry] = field(default_factory=list)  # outbox rows written, to hand over
    # In a turn nobody asked for (a heartbeat): how many unprompted messages the person may get
    # a local day; send_message counts each and refuses past it. None: the person is waiting.
    unprompted_cap: int | None = None

    def send(self, conn: Connection, text: str) -> outbox.Entry:
        """Write `text` to the outbox for this conversation (inside the caller's transaction)."""
        a = self.address
        entry = outbox.add(
            conn,
            self.memory.agent_id,
            a.conversation_id,
            a.platform,
            text,
            a.recipient,
            a.reply_to,
            self.call_id or None,
        )
        self.queued.append(entry)
        return entry

    def notice(self, conn: Connection, text: str) -> outbox.Entry:
        """`send` as a transaction of its own (what a failed or retried transaction left queued
        was never committed, so it is dropped first)."""
        self.queued.clear()
        return self.send(conn, text)


@dataclass(frozen=True)
class ToolOutcome:
    content: str
    ok: bool
    heartbeat: bool
    effect: Effect | None = None  # a change to run with the result (content is then empty)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    text = inspect.cleandoc(doc or "")
    summary, _, rest = text.partition("\nArgs:")
    arguments: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        match = re.match(r"\s*(\w+):\s*(.*)", line)
        if match:
            current = match.group(1)
            arguments[current] = match.group(2).strip()
        elif current and line.strip():
            arguments[current] += " " + line.strip()
    return " ".join(summary.split()), arguments


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: ToolFunction
    arguments: type[BaseModel]
    chains: bool

    def schema(self) -> dict[str, Any]:
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": parameters},
        }

    async def call(self, ctx: ToolContext, raw: str) -> ToolOutcome:
        """Parse, validate and run; failures come back as a failed outcome, never raised."""
        heartbeat = False
        try:
            arguments = _decode(self.name, raw)
            try:
                parsed = self.arguments.model_validate(arguments)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
                )
                raise ToolError(f"Invalid arguments for {self.name}: {problems}.") from None
            values = parsed.model_dump()
            heartbeat = bool(values.pop("request_heartbeat", False))
            result = await self.function(ctx, **values)
        except ToolError as exc:
            return failed(str(exc))
        except ModelError as exc:  # the embedder, for a search or an insert
            return failed(f"{self.name} could not run: {exc}. Try again later, or go on without it.")
        if callable(result):
            return ToolOutcome("", ok=True, heartbeat=heartbeat, effect=result)
        return ToolOutcome(result_text("OK", result), ok=True, heartbeat=heartbeat)


def failed(message: str) -> ToolOutcome:
    return ToolOutcome(result_text("Failed", message), ok=False, heartbeat=True)


def _decode(name: str, raw: str) -> dict[str, Any]:
    text = (raw or "").strip() or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"The arguments for {name} are not valid JSON ({exc.msg} at character {exc.pos}). "
            'Send a JSON object, for example {"message": "..."}.'
        ) from None
    if isinstance(value, str):  # some models double-encode
        return _decode(name, value)
    if not isinstance(value, dict):
        raise ToolError(f"The arguments for {name} must be a JSON object, not {type(value).__name__}.")
    return value


def result_text(status: str, message: str) -> str:
    if len(message) > MAX_RESULT_CHARS and status == "Failed":
        message = message[:MAX_RESULT_CHARS] + "…"
    return json.dumps({"status": status, "message": message}, ensure_ascii=False)


def tool(*, chains: bool = True) -> Callable[[ToolFunction], Tool]:
    """Make a Tool of a typed async function (see the module docstring)."""

    def build(function: ToolFunction) -> Tool:
        description, docs = _parse_docstring(function.__doc__ or "")
        hints = get_type_hints(function)
        fields: dict[str, Any] = {}
        for name, parameter in list(inspect.signature(function).parameters.items())[1:]:
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hints[name], Field(default, description=docs.get(name)))
        if chains:
            fields["request_heartbeat"] = (bool, Field(False, description=HEARTBEAT_DOC))
        model = create_model(f"{function.__name__}_arguments", __base__=_Lenient, **fields)
        return Tool(function.__name__, description, function, model, chains)

    return build


class Registry:
    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {t.name: t for t in tools}
        self.schemas = [t.schema() for t in tools]
        self.schema_tokens = count_tools(self.schemas)

    async def call(self, ctx: ToolContext, name: str, raw: str) -> ToolOutcome:
        found = self.tools.get(name)
        if found is None:
            known = ", ".join(self.tools)
            return failed(f"There is no tool named {name!r}. The tools are: {known}.")
        return await found.call(ctx, raw)
