"""Forgetting a person so that nothing of their text is left in the file, not even in free pages.

Every connection runs with `PRAGMA secure_delete = ON` (storage/db.py), so SQLite overwrites
deleted and superseded content with zeros as it frees it, and an agent's old rows, old block
values and old summaries leave no readable remains in partly-used or free pages. What that alone
does not reach, `forget` does in the same transaction: `lifecycle.delete_agent` removes every row
(sqlite-vec zeroes a deleted vector's slot), then both full-text indexes are merged (`optimize`):
FTS5 keeps a deleted row's terms in its segments until a merge. The caller then checkpoints the
WAL with TRUNCATE (`Database.checkpoint`), since page images from before the delete live there.
Measured (tests/test_forget.py, bench): with all of it, a forgotten person's words are found
neither in the database file nor in the WAL; without the optimize, their terms stay in the index.

`forget_passages` does the same for some archival passages of one agent (`/forget passage ID`,
`/forget about QUERY`): their rows, vectors and full-text terms, and the passage counts of the
documents they were cut from.
"""

from __future__ import annotations

from storage import documents, lifecycle, link_codes
from storage.db import Connection
from storage.postgres import dialect

FULLTEXT = ("messages_fts", "passages_fts")


def forget(conn: Connection, agent_id: int) -> lifecycle.Deleted:
    """Delete everything of this agent and merge the full-text indexes, in the caller's transaction."""
    link_codes.forget_failures(conn, agent_id)
    deleted = lifecycle.delete_agent(conn, agent_id)
    if dialect(conn) == "sqlite":  # PostgreSQL: the VACUUM after the transaction (PgDatabase.checkpoint)
        for table in FULLTEXT:
            conn.execute(f"INSERT INTO {table} ({table}) VALUES ('optimize')")
    return deleted


def forget_passages(conn: Connection, agent_id: int, ids: list[int]) -> int:
    """Delete these passages of this agent (ids of other agents' passages are ignored) with their
    vectors and full-text rows, keep their documents' passage counts right (a document whose last
    passage went is removed), and merge the passages index; how many went. The caller
    checkpoints the WAL."""
    cut = documents.of_passages(conn, agent_id, ids)
    gone = lifecycle.delete_passages(conn, agent_id, ids)
    if gone:
        documents.passages_removed(conn, agent_id, cut)
        if dialect(conn) == "sqlite":
            conn.execute("INSERT INTO passages_fts (passages_fts) VALUES ('optimize')")
    return gone
