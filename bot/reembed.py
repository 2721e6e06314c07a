"""`membot reembed`: rebuild every vector with the configured embedder.

The vector tables are emptied and marked unfinished first, so a crash half-way leaves a database
that refuses to open with a message saying to run `membot reembed` again, never a silent mix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.embedding import Embedder, make_embedder, to_blob
from bot.settings import Settings
from bot.tokens import truncate
from storage import agents, messages, migrations, passages, vectors
from storage.db import Connection, Database, open_at
from storage.postgres import redacted

log = logging.getLogger(__name__)

BATCH = 256
Reader = Callable[[Connection, int, int, int], list[tuple[int, str, bool]]]


def _write(conn: Connection, table: str, agent_id: int, rows: list[tuple[int, bytes, bool]]) -> None:
    for row_id, blob, private in rows:
        vectors.put(conn, table, agent_id, row_id, blob, private)


async def _rebuild(db: Database, embedder: Embedder, agent_id: int, read: Reader, table: str) -> int:
    done, after = 0, 0
    while True:
        rows = await db.run(read, agent_id, after, BATCH)
        if not rows:
            return done
        found = await embedder.embed([truncate(text, 2000) for _, text, _ in rows])

        await db.run(
            _write,
            table,
            agent_id,
            [(row_id, to_blob(v), private) for (row_id, _, private), v in zip(rows, found, strict=True)],
        )
        done += len(rows)
        after = rows[-1][0]


async def reembed(settings: Settings, report: Callable[[str], None] = print) -> tuple[int, int]:
    embedder = await make_embedder(settings)
    db = open_at(settings.db, settings.db_lock_wait)
    try:
        await db.run(migrations.migrate)
        before = await db.run(vectors.recorded)
        report(
            f"re-embedding {redacted(settings.db)}: {before[0] if before else 'nothing'} -> {embedder.name}"
        )
        await db.run(vectors.mark_rebuilding, embedder.name, embedder.dim)
        total_messages = total_passages = 0
        for agent_id in await db.run(agents.ids):
            total_messages += await _rebuild(
                db, embedder, agent_id, messages.searchable_texts, "messages_vec"
            )
            total_passages += await _rebuild(db, embedder, agent_id, passages.texts, "passages_vec")
        await db.run(vectors.finish_rebuilding, embedder.name, embedder.dim)
        report(f"done: {total_messages} messages and {total_passages} passages embedded")
        return total_messages, total_passages
    finally:
        db.close()
