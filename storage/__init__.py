"""SQLite storage for membot: one file, WAL, sqlite-vec, every read scoped by agent.

Modules, one per family of tables: `agents`, `blocks`, `messages` (recall memory), `passages`
(archival memory), `vectors` (sqlite-vec tables and the embedding model record), `migrations`.
`db` opens the file and runs SQL on its own thread.
"""
