"""The commands a person gives in chat, the same words on every platform.

`/memory` (what the bot keeps: core memory blocks and counts), `/timezone ZONE`, `/quiet`
(`/quiet off`), `/forget` (then `/forget confirm`; `/forget passage ID` and `/forget about QUERY`
delete some archival passages only), `/export` (everything kept, as a JSON file), `/import` (that
file, attached, back), `/link`, `/unlink`, `/help`. An adapter hands the words (typed in a DM or
the terminal, or from a slash command's options) and any attached files to `Runtime.answer`, and
shows the answer and its files to that person alone (a DM, ephemeral where the platform can);
`Runtime.command` gives the text only. A new command is a function here and a line in `COMMANDS`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot import reminder_tools
from bot.errors import InvalidInput
from bot.events import Answer, Attachment, Person
from bot.loading import summary_line
from storage import heartbeats, passages, reminders
from storage.clock import from_iso
from storage.fulltext import match_query

if TYPE_CHECKING:
    from bot.memory import AgentMemory
    from bot.runtime import Runtime
    from storage.agents import Agent as AgentRecord
    from storage.db import Connection
    from storage.passages import Passage

HELP = (
    "Commands: /memory shows what I remember about you, /timezone ZONE sets your time zone "
    "(e.g. /timezone Europe/Sofia), /quiet stops my unprompted messages (/quiet off allows them "
    "again), /forget deletes everything I keep about you (after /forget confirm; /forget passage ID or "
    "/forget about QUERY deletes only some archival passages), /export sends you all of it as one file "
    "(/import with that file attached brings it back), /link gives a code that /link CODE on "
    "your other account uses to share one memory (/unlink splits that account off again), /help shows this."
)


@dataclass(frozen=True)
class Request:
    runtime: Runtime
    person: Person
    argument: str
    attachments: tuple[Attachment, ...] = ()


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
    lines.append(await reminders_line(runtime, memory))
    lines.append(await summary_line(memory))
    return "\n".join(lines)


async def reminders_line(runtime: Runtime, memory: AgentMemory) -> str:
    """One line for `/memory`: how many reminders are pending for this agent, and the next one."""

    def read(conn: Connection) -> tuple[int, list[reminders.Reminder]]:
        return reminders.count_pending(conn, memory.agent_id), reminders.pending_for(
            conn, memory.agent_id, memory.public, limit=1
        )

    count, soonest = await runtime.db.read(read)
    if not count:
        return "reminders: none scheduled"
    line = f"reminders: {count} scheduled"
    if soonest:
        line += f" (next: {memory.local(from_iso(soonest[0].due_at)).strftime('%Y-%m-%d %H:%M %Z')})"
    return line


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
FORGET_SHOWN = 10  # passages a `/forget about QUERY` preview lists (it counts them all)
FORGET_MATCHES = 100  # passages one `/forget about QUERY` deletes at most
EXCERPT_CHARS = 120


@dataclass(frozen=True)
class ForgetRequest:
    """What the account's last `/forget` preview showed, for its `/forget confirm`: everything
    (`passages` None) or these archival passage ids of its agent; and until when it holds."""

    deadline: float
    agent_id: int
    passages: tuple[int, ...] | None = None


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


async def _matching(runtime: Runtime, agent: AgentRecord, query: str) -> list[Passage]:
    """The agent's archival passages about `query`: found by its own archival search (meaning and
    words, best first) and sharing a word with the query, so that a passage only near in meaning
    (vector search always returns the nearest, related or not) is never deleted."""
    memory = runtime.memory(agent)
    if match_query(query) is None:
        return []
    ranked = await memory.search_passages(query, FORGET_MATCHES)
    worded = {i for i, _ in await runtime.db.read(passages.text_matches, agent.id, query, FORGET_MATCHES * 2)}
    return [p for p in ranked if p.id in worded]


async def _preview_some(runtime: Runtime, found: AgentRecord, key: tuple[str, str], argument: str) -> str:
    """`/forget passage ID`, `/forget about QUERY`: show what would go, remember it for confirm."""
    kind, _, rest = argument.partition(" ")
    rest = rest.strip()
    if kind.lower() == "passage":
        if not rest.isdigit():
            return "Usage: /forget passage ID (the number of an archival passage)."
        shown = await runtime.db.read(passages.get_many, found.id, [int(rest)])
        if not shown:
            return f"I have no such passage: {rest}."
        runtime.forget_requests[key] = ForgetRequest(
            time.monotonic() + FORGET_WINDOW, found.id, (shown[0].id,)
        )
        return (
            f'This deletes archival passage {shown[0].id}: "{_excerpt(shown[0].content)}". There is no '
            "undo. To go ahead, send /forget confirm within 5 minutes."
        )
    if not rest:
        return "Usage: /forget about QUERY (deletes the archival passages containing its words)."
    hits = await _matching(runtime, found, rest)
    if not hits:
        runtime.forget_requests.pop(key, None)
        return f"No archival passage contains the words of {rest!r}; nothing to forget."
    runtime.forget_requests[key] = ForgetRequest(
        time.monotonic() + FORGET_WINDOW, found.id, tuple(p.id for p in hits)
    )
    lines = [
        f"{len(hits)} archival passages match {rest!r} (messages in our conversation history are not included):"
    ]
    lines += [f"  {p.id}: {_excerpt(p.content)}" for p in hits[:FORGET_SHOWN]]
    if len(hits) > FORGET_SHOWN:
        lines.append(f"  ... and {len(hits) - FORGET_SHOWN} more")
    lines.append(
        f"This deletes these {len(hits)} passages. There is no undo. To go ahead, send /forget confirm within 5 minutes."
    )
    return "\n".join(lines)


async def forget(request: Request) -> str:
    """`/forget`: say what would go and ask for `/forget confirm` (within five minutes); then
    delete everything kept about the person (bot/controls.py: nothing left on disk).
    `/forget passage ID` and `/forget about QUERY` preview some archival passages instead (only
    archival memory: recall messages are not searched), and `/forget confirm` deletes exactly those."""
    from bot import controls  # imports the runtime's own modules: loaded when first asked

    runtime, person = request.runtime, request.person
    key = (person.platform, person.user_id)
    found = await runtime.find_agent(*key)
    if found is None:
        return "I keep nothing about you."
    argument = request.argument.strip()
    if argument.split(" ", 1)[0].lower() in ("passage", "about"):
        return await _preview_some(runtime, found, key, argument)
    if argument.lower() != "confirm":
        stats = await runtime.memory(found).stats()
        runtime.forget_requests[key] = ForgetRequest(time.monotonic() + FORGET_WINDOW, found.id)
        return (
            f"This deletes everything I keep about you: {stats.recall_messages} messages, "
            f"{stats.archival_passages} archival passages, your core memory, reminders and documents. "
            "There is no undo. To go ahead, send /forget confirm within 5 minutes."
        )
    asked = runtime.forget_requests.pop(key, None)
    if asked is None or asked.deadline < time.monotonic() or asked.agent_id != found.id:
        return "Send /forget first (then /forget confirm within 5 minutes)."
    if asked.passages is not None:
        gone = await controls.forget_passages(runtime, found.id, list(asked.passages))
        if not gone:
            return "Those passages are already gone; nothing was deleted."
        return f"Done: I have forgotten {gone} archival passage{'s' if gone != 1 else ''}."
    deleted = await controls.forget(runtime, found.id)
    return (
        f"Done: I have forgotten everything about you ({deleted.messages} messages, {deleted.passages} "
        "passages, core memory, reminders). If you write again, I start from nothing."
    )


async def link(request: Request) -> str:
    """`/link` gives a one-time code; `/link CODE` from another account joins it (bot/linking.py)."""
    from bot import linking

    return await linking.link(request.runtime, request.person, request.argument)


async def unlink(request: Request) -> str:
    from bot import linking

    return await linking.unlink(request.runtime, request.person, request.argument)


async def export(request: Request) -> Answer:
    """`/export`: everything kept about the person, as one JSON file (bot/controls.py)."""
    from bot import controls

    return await controls.export_answer(request.runtime, request.person)


async def import_(request: Request) -> str:
    """`/import` with the file `/export` gave attached: it becomes this account's memory."""
    from bot import controls

    return await controls.import_answer(request.runtime, request.person, request.attachments)


async def help_(request: Request) -> str:
    return HELP


COMMANDS: dict[str, Callable[[Request], Awaitable[str | Answer]]] = {
    "memory": memory,
    "timezone": timezone,
    "quiet": quiet,
    "forget": forget,
    "export": export,
    "import": import_,
    "link": link,
    "unlink": unlink,
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
    """The command's answer as text (any files it would hand over are left out)."""
    return (await answer(runtime, person, name, argument)).text


async def answer(
    runtime: Runtime, person: Person, name: str, argument: str, attachments: tuple[Attachment, ...] = ()
) -> Answer:
    """The command's whole answer: its text and the files that go with it."""
    found = await COMMANDS[name](Request(runtime, person, argument, attachments))
    return found if isinstance(found, Answer) else Answer(found)
