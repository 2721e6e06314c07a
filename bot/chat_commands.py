"""The commands a person gives in chat, the same words on every platform.

`/memory` (what the bot keeps: core memory blocks and counts), `/timezone ZONE`, `/quiet`
(`/quiet off`), `/forget` (then `/forget confirm`), `/help`. An adapter hands the words to `Runtime.command` (typed in a DM or the terminal, or from a slash
command's options) and shows the answer to that person alone (ephemeral where the platform can).
A new command is a function here and a line in `COMMANDS`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot import reminder_tools
from bot.errors import InvalidInput
from bot.events import Person
from bot.loading import summary_line
from storage import heartbeats

if TYPE_CHECKING:
    from bot.runtime import Runtime

HELP = (
    "Commands: /memory shows what I remember about you, /timezone ZONE sets your time zone "
    "(e.g. /timezone Europe/Sofia), /quiet stops my unprompted messages (/quiet off allows them "
    "again), /forget deletes everything I keep about you (after /forget confirm), /help shows this."
)


@dataclass(frozen=True)
class Request:
    runtime: Runtime
    person: Person
    argument: str


async def memory(request: Request) -> str:
    runtime, person = request.runtime, request.person
    agent = await runtime.agent_for(person.platform, person.user_id, person.name)
    memory = runtime.memory(agent)
    lines = []
    for block in await memory.blocks():
        lines.append(f"[{block.label}] {len(block.value)}/{block.char_limit} chars - {block.description}")
        lines.append((block.value or "(empty)") + "\n")
    stats = await memory.stats()
    agent = await memory.refresh()
    lines.append(
        f"recall memory: {stats.recall_messages} messages; archival memory: {stats.archival_passages} "
        f"passages; summary covers {agent.summary_covers} messages; time zone {agent.timezone}"
    )
    lines.append(await summary_line(memory))
    return "\n".join(lines)


async def timezone(request: Request) -> str:
    zone = request.argument.strip()
    if not zone:
        return "Usage: /timezone ZONE, for example /timezone Europe/Sofia"
    runtime, person = request.runtime, request.person
    agent = await runtime.agent_for(person.platform, person.user_id, person.name)
    try:
        return f"Your time zone is now {await runtime.set_timezone(agent.id, zone)}."
    except InvalidInput as exc:
        return str(exc)


async def quiet(request: Request) -> str:
    """`/quiet`: no more heartbeats (unprompted check-ins) for this person; `/quiet off`: again."""
    argument = request.argument.strip().lower()
    if argument not in ("", "on", "off"):
        return "Usage: /quiet (no unprompted messages from me) or /quiet off (allow them again)."
    runtime, person = request.runtime, request.person
    agent = await runtime.agent_for(person.platform, person.user_id, person.name)
    enabled = argument == "off"
    await runtime.db.run(heartbeats.set_enabled, agent.id, enabled)
    if enabled:
        reminder_tools.changed(datetime.now(UTC))
        return (
            "Heartbeats are on again: I may check in with you now and then (your reminders are unaffected)."
        )
    return "Quiet: I won't message you unprompted any more (reminders still come). /quiet off undoes it."


FORGET_WINDOW = 300.0  # seconds a `/forget` waits for its `/forget confirm`


async def forget(request: Request) -> str:
    """`/forget`: say what would go and ask for `/forget confirm` (within five minutes); then
    delete everything kept about the person (bot/controls.py: nothing left on disk)."""
    from bot import controls  # imports the runtime's own modules: loaded when first asked

    runtime, person = request.runtime, request.person
    key = (person.platform, person.user_id)
    found = await runtime.find_agent(*key)
    if found is None:
        return "I keep nothing about you."
    if request.argument.strip().lower() != "confirm":
        stats = await runtime.memory(found).stats()
        runtime.forget_requests[key] = time.monotonic() + FORGET_WINDOW
        return (
            f"This deletes everything I keep about you: {stats.recall_messages} messages, "
            f"{stats.archival_passages} archival passages, your core memory, reminders and documents. "
            "There is no undo. To go ahead, send /forget confirm within 5 minutes."
        )
    asked = runtime.forget_requests.pop(key, None)
    if asked is None or asked < time.monotonic():
        return "Send /forget first (then /forget confirm within 5 minutes)."
    deleted = await controls.forget(runtime, found.id)
    return (
        f"Done: I have forgotten everything about you ({deleted.messages} messages, {deleted.passages} "
        "passages, core memory, reminders). If you write again, I start from nothing."
    )


async def help_(request: Request) -> str:
    return HELP


COMMANDS: dict[str, Callable[[Request], Awaitable[str]]] = {
    "memory": memory,
    "timezone": timezone,
    "quiet": quiet,
    "forget": forget,
    "help": help_,
}


def parse(text: str) -> tuple[str, str] | None:
    """('timezone', 'Europe/Sofia') for '/timezone Europe/Sofia'; None if `text` is no command."""
    words = text.strip()
    if not words.startswith("/"):
        return None
    name, _, argument = words[1:].partition(" ")
    name = name.lower()
    return (name, argument.strip()) if name in COMMANDS else None


async def run(runtime: Runtime, person: Person, name: str, argument: str) -> str:
    return await COMMANDS[name](Request(runtime, person, argument))
