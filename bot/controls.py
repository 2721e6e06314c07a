"""What a person (or the operator) can do with their memory as a whole: export it, import it,
forget it. The chat commands and the admin command line both call these.

In chat, `export_file` is the `/export` file and `import_for` takes one back into the person's
own account: only when that account keeps nothing yet (no messages, no passages, no other account
linked to it). An empty agent the platform made on first contact is replaced in the same
transaction; any memory is refused (forget it first: an import never merges).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot import portability
from bot.errors import InvalidInput
from bot.events import IMPORT_MAX_BYTES, Answer, Attachment, File, Person
from bot.loading import size_text
from storage import agents, erasure, identities, messages, passages
from storage.db import Connection
from storage.lifecycle import Deleted

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def export(runtime: Runtime, agent_id: int) -> dict[str, Any]:
    """The agent's export document (schema in bot/portability.py)."""
    async with runtime.locks.hold(agent_id):  # not in the middle of one of its turns
        return await portability.export(runtime.db, agent_id)


MEDIA_TYPE = "application/json"
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Imported:
    agent_id: int
    messages: int
    passages: int
    blocks: int


def file_name(owner: str, exported_at: str) -> str:
    """'membot-export-alice-20261201T100000Z.json': whose, and when (UTC), safe on every system."""
    safe = UNSAFE.sub("-", owner).strip("-.")[:40] or "person"
    stamp = exported_at[:19].replace("-", "").replace(":", "")
    return f"membot-export-{safe}-{stamp}Z.json"


async def export_file(runtime: Runtime, agent_id: int, owner: str) -> File:
    """The agent's export document as the JSON file a person is handed (`/export`)."""
    document = await export(runtime, agent_id)
    data = (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode()
    log.info("exported agent %s as a file of %d bytes", agent_id, len(data))
    return File(file_name(owner, document["exported_at"]), data, MEDIA_TYPE)


def _kept(conn: Connection, agent_id: int) -> str:
    """Why this agent may not be replaced by an import ('' if it keeps nothing)."""
    if identities.count(conn, agent_id) > 1:
        return (
            "This account shares its memory with your other accounts, so I won't replace it. "
            "Send /unlink (or /forget) first, then /import again."
        )
    kept_messages, kept_passages = messages.count(conn, agent_id), passages.count(conn, agent_id)
    if kept_messages or kept_passages:
        return (
            f"I already keep memory for you here ({kept_messages} messages, {kept_passages} passages), "
            "and an import never merges into it. Send /export first if you want a copy, then /forget "
            "and /forget confirm, then /import again."
        )
    return ""


async def import_for(runtime: Runtime, data: str | bytes, identity: tuple[str, str]) -> Imported:
    """Import an export file into this account (`/import`). InvalidInput, with nothing written,
    if the file is refused or the account already keeps memory (see the module's docstring)."""
    memory = portability.parse(data)
    found = await runtime.find_agent(*identity)
    if found is not None:
        refused = await runtime.db.read(_kept, found.id)
        if refused:
            raise InvalidInput(refused)

    def make_room(conn: Connection) -> None:
        current = agents.find(conn, *identity)  # again, in the import's own transaction
        if current is None:
            return
        refused = _kept(conn, current.id)
        if refused:
            raise InvalidInput(refused)
        erasure.forget(conn, current.id)

    if found is None:
        agent_id = await portability.restore(runtime.db, runtime.embedder, memory, identity, make_room)
    else:
        async with runtime.locks.hold(found.id):  # no turn of the empty agent meanwhile
            agent_id = await portability.restore(runtime.db, runtime.embedder, memory, identity, make_room)
            runtime.reception.forget_agent(found.id)
        await _truncate_wal(runtime, f"replaced the empty agent {found.id}")
    log.info(
        "imported agent %s for %s user %s (%d messages, %d passages)",
        agent_id,
        identity[0],
        identity[1],
        len(memory["messages"]),
        len(memory["passages"]),
    )
    return Imported(agent_id, len(memory["messages"]), len(memory["passages"]), len(memory["blocks"]))


async def export_answer(runtime: Runtime, person: Person) -> Answer:
    """`/export`: the person's export file, and a line on what is in it."""
    found = await runtime.find_agent(person.platform, person.user_id)
    if found is None:
        return Answer("I keep nothing about you.")
    file = await export_file(runtime, found.id, person.user_id)
    stats = await runtime.memory(found).stats()
    return Answer(
        f"Everything I keep about you is in {file.name} ({size_text(len(file.data))}: "
        f"{stats.recall_messages} messages, {stats.archival_passages} archival passages, core memory, "
        "reminders). Keep it private. Sending it back with /import restores it (after /forget, or on "
        "another membot).",
        (file,),
    )


IMPORT_USAGE = (
    "Attach your export file (the .json that /export gave you) to a direct message to me whose "
    "text is /import."
)


async def import_answer(runtime: Runtime, person: Person, files: tuple[Attachment, ...]) -> str:
    """`/import`: the one attached file (at most IMPORT_MAX_BYTES) becomes this account's memory,
    whole, or is refused whole (`import_for`); what to tell the person."""
    if len(files) != 1:
        return IMPORT_USAGE if not files else "Attach one export file at a time to /import."
    file, limit = files[0], IMPORT_MAX_BYTES
    if file.read is None:
        return f"I cannot read {file.name}; nothing was imported."
    if file.size > limit:
        return (
            f"{file.name} is {size_text(file.size)}, over the {size_text(limit)} I import from a chat; "
            "nothing was imported. The operator can import it with `membot import`."
        )
    try:
        data = await file.read()
    except Exception as exc:  # the platform's download failed
        log.warning("could not download the import file %r: %s", file.name, exc)
        return f"I could not download {file.name}; nothing was imported. Please try again."
    if len(data) > limit:
        return f"{file.name} is over the {size_text(limit)} I import from a chat; nothing was imported."
    try:
        done = await import_for(runtime, data, (person.platform, person.user_id))
    except InvalidInput as exc:
        return f"{exc} Nothing was imported."
    return (
        f"Imported {file.name}: {done.messages} messages, {done.passages} archival passages and "
        f"{done.blocks} core memory blocks are your memory here now."
    )


async def import_file(runtime: Runtime, text: str | bytes, identity: tuple[str, str] | None = None) -> int:
    """Import an export file as a new agent (under `identity`, if given); its id. Nothing is
    written if the file is refused or an account in it already has an agent here."""
    memory = portability.parse(text)
    agent_id = await portability.restore(runtime.db, runtime.embedder, memory, identity)
    log.info(
        "imported agent %s (%d messages, %d passages)",
        agent_id,
        len(memory["messages"]),
        len(memory["passages"]),
    )
    return agent_id


async def forget(runtime: Runtime, agent_id: int) -> Deleted:
    """Delete everything of the agent, leaving none of its text in the file or the WAL
    (storage/erasure.py says how), and drop it from the runtime's caches."""
    async with runtime.locks.hold(agent_id):
        deleted = await runtime.db.run(erasure.forget, agent_id)
        runtime.reception.forget_agent(agent_id)
    await _truncate_wal(runtime, f"forgot agent {agent_id}")
    log.info(
        "forgot agent %s: %d messages, %d passages, %d vectors",
        agent_id,
        deleted.messages,
        deleted.passages,
        deleted.vectors,
    )
    return deleted


async def forget_passages(runtime: Runtime, agent_id: int, ids: list[int]) -> int:
    """Delete these archival passages of the agent (others' ids delete nothing), leaving none of
    their text in the file or the WAL; how many went."""
    async with runtime.locks.hold(agent_id):
        gone = await runtime.db.run(erasure.forget_passages, agent_id, ids)
    if gone:
        await _truncate_wal(runtime, f"forgot {gone} passages of agent {agent_id}")
    log.info("forgot %d archival passages of agent %s", gone, agent_id)
    return gone


async def _truncate_wal(runtime: Runtime, what: str) -> None:
    """The WAL holds page images from before a delete: checkpoint it away (TRUNCATE)."""
    if not await runtime.db.checkpoint():
        log.warning(
            "%s; another process is reading the database, so the WAL keeps old pages until its next "
            "checkpoint",
            what,
        )
