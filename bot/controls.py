"""What a person (or the operator) can do with their memory as a whole: export it, import it,
forget it. The chat commands and the admin command line both call these.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot import portability
from storage import erasure
from storage.lifecycle import Deleted

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


async def export(runtime: Runtime, agent_id: int) -> dict[str, Any]:
    """The agent's export document (schema in bot/portability.py)."""
    async with runtime.locks.hold(agent_id):  # not in the middle of one of its turns
        return await portability.export(runtime.db, agent_id)


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
