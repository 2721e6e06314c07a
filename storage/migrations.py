"""Versioned schema migrations: an ordered list of functions, each recorded in `_migrations`.

Tables:
- `_migrations(name, applied_at)`: which migrations ran, in order.
- `meta(key, value)`: small facts about the database (the embedding model and dimension).
- `agents`, `blocks`, `messages`, `passages` and their FTS5 indexes: see the modules named after them.

Vector tables depend on the embedding dimension and are made by `storage.vectors`, not here.
A migration is never edited once released: add a new function at the end of `MIGRATIONS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from storage import postgres
from storage.clock import now_iso
from storage.db import Connection, changes_schema
from storage.errors import StorageError
from storage.postgres import dialect

log = logging.getLogger(__name__)


def m001_initial(conn: Connection) -> None:
    _execute_all(
        conn,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE agents (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            platform_user_id TEXT NOT NULL,
            display_name TEXT NOT NULL DEFAULT '',
            timezone TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '',
            summary_covers INTEGER NOT NULL DEFAULT 0,
            pressure_warned INTEGER NOT NULL DEFAULT 0,
            memory_updated_at TEXT,
            created_at TEXT NOT NULL,
            last_active_at TEXT NOT NULL,
            UNIQUE (platform, platform_user_id)
        );
        CREATE TABLE blocks (
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            description TEXT NOT NULL,
            value TEXT NOT NULL DEFAULT '',
            char_limit INTEGER NOT NULL CHECK (char_limit > 0),
            updated_at TEXT NOT NULL,
            PRIMARY KEY (agent_id, label),
            CHECK (length(value) <= char_limit)
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
            kind TEXT NOT NULL,
            content TEXT NOT NULL DEFAULT '',
            tool_calls TEXT,
            tool_call_id TEXT,
            tool_name TEXT,
            search_text TEXT NOT NULL DEFAULT '',
            in_context INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        );
        CREATE INDEX messages_by_context ON messages (agent_id, in_context, id);
        CREATE INDEX messages_by_time ON messages (agent_id, created_at);
        CREATE TABLE passages (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            content TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'agent',
            created_at TEXT NOT NULL
        );
        CREATE INDEX passages_by_agent ON passages (agent_id, id);
        """,
    )


def m002_full_text(conn: Connection) -> None:
    """FTS5 indexes over recall and archival memory, kept in step by triggers."""
    _execute_all(
        conn,
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            search_text, content='messages', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, search_text) VALUES (new.id, new.search_text);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, search_text)
            VALUES ('delete', old.id, old.search_text);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF search_text ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, search_text)
            VALUES ('delete', old.id, old.search_text);
            INSERT INTO messages_fts (rowid, search_text) VALUES (new.id, new.search_text);
        END;
        CREATE VIRTUAL TABLE passages_fts USING fts5(
            content, content='passages', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, content)
            VALUES ('delete', old.id, old.content);
        END;
        CREATE TRIGGER passages_fts_update AFTER UPDATE OF content ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, content)
            VALUES ('delete', old.id, old.content);
            INSERT INTO passages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        INSERT INTO passages_fts (passages_fts) VALUES ('rebuild');
        """,
    )


def _execute_all(conn: Connection, script: str) -> None:
    """Run a script statement by statement, inside the caller's transaction.

    (`executescript` would commit first.) A statement ends at a `;` at the end of a line, except
    inside a trigger body, which ends at `END;`.
    """
    statement: list[str] = []
    in_trigger = False
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        statement.append(line)
        if stripped.startswith("CREATE TRIGGER"):
            in_trigger = True
        if stripped.endswith(";") and (not in_trigger or stripped == "END;"):
            conn.execute("\n".join(statement))
            statement = []
            in_trigger = False
    if statement:
        conn.execute("\n".join(statement))


def m003_counters(conn: Connection) -> None:
    """Message and passage counts per agent, kept by triggers (memory statistics on every step)."""
    _execute_all(
        conn,
        """
        ALTER TABLE agents ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agents ADD COLUMN passage_count INTEGER NOT NULL DEFAULT 0;
        UPDATE agents SET
            message_count = (SELECT count(*) FROM messages WHERE messages.agent_id = agents.id),
            passage_count = (SELECT count(*) FROM passages WHERE passages.agent_id = agents.id);
        CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
            UPDATE agents SET message_count = message_count + 1 WHERE id = new.agent_id;
        END;
        CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
            UPDATE agents SET message_count = message_count - 1 WHERE id = old.agent_id;
        END;
        CREATE TRIGGER passages_count_insert AFTER INSERT ON passages BEGIN
            UPDATE agents SET passage_count = passage_count + 1 WHERE id = new.agent_id;
        END;
        CREATE TRIGGER passages_count_delete AFTER DELETE ON passages BEGIN
            UPDATE agents SET passage_count = passage_count - 1 WHERE id = old.agent_id;
        END;
        """,
    )


def m004_turns(conn: Connection) -> None:
    """Who said each message and its place among the agent's searchable messages (for ranking).

    `speaker`: the speaker's name. `turn`: 1, 2, 3... over this agent's searchable messages (NULL
    for the others), so a search can look at the messages around a hit with one indexed read.
    `speakers(agent_id, name)`: the distinct names, kept by a trigger.
    """
    _execute_all(
        conn,
        """
        ALTER TABLE messages ADD COLUMN speaker TEXT NOT NULL DEFAULT '';
        ALTER TABLE messages ADD COLUMN turn INTEGER;
        UPDATE messages SET turn = ranked.n FROM (
            SELECT id, row_number() OVER (PARTITION BY agent_id ORDER BY id) AS n
            FROM messages WHERE search_text != ''
        ) AS ranked WHERE messages.id = ranked.id;
        CREATE INDEX messages_by_turn ON messages (agent_id, turn);
        CREATE TABLE speakers (
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            PRIMARY KEY (agent_id, name)
        ) WITHOUT ROWID;
        CREATE TRIGGER speakers_insert AFTER INSERT ON messages WHEN new.speaker != '' BEGIN
            INSERT OR IGNORE INTO speakers (agent_id, name) VALUES (new.agent_id, new.speaker);
        END;
        """,
    )


def m005_context(conn: Connection) -> None:
    """Index each searchable message with the messages around it (`context`, weighted lower).

    A reply like "it felt like therapy" shares no word with "pottery class", but the message it
    answers does; with its neighbours' words in a second, lower-weighted column, text search finds
    it. `context` holds the previous and next searchable message of the same conversation (no
    silence longer than two hours in between), each cut to 2,000 characters: the values of
    `storage.messages.CONVERSATION_GAP` and `CONTEXT_CHARS` when this migration was written.
    """
    gap, chars = 2 / 24, 2000
    _execute_all(
        conn,
        f"""
        ALTER TABLE messages ADD COLUMN context TEXT NOT NULL DEFAULT '';
        UPDATE messages SET context = around.text FROM (
            SELECT id, trim(
                CASE WHEN julianday(created_at) - julianday(previous_at) <= {gap}
                     THEN substr(previous_text, 1, {chars}) ELSE '' END
                || char(10) ||
                CASE WHEN julianday(next_at) - julianday(created_at) <= {gap}
                     THEN substr(next_text, 1, {chars}) ELSE '' END,
                char(10)
            ) AS text
            FROM (
                SELECT id, created_at,
                    lag(search_text) OVER turns AS previous_text, lag(created_at) OVER turns AS previous_at,
                    lead(search_text) OVER turns AS next_text, lead(created_at) OVER turns AS next_at
                FROM messages WHERE turn IS NOT NULL
                WINDOW turns AS (PARTITION BY agent_id ORDER BY turn)
            )
        ) AS around WHERE messages.id = around.id;
        DROP TRIGGER messages_fts_insert;
        DROP TRIGGER messages_fts_delete;
        DROP TRIGGER messages_fts_update;
        DROP TABLE messages_fts;
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            search_text, context, content='messages', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, search_text, context)
            VALUES (new.id, new.search_text, new.context);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, search_text, context)
            VALUES ('delete', old.id, old.search_text, old.context);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF search_text, context ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, search_text, context)
            VALUES ('delete', old.id, old.search_text, old.context);
            INSERT INTO messages_fts (rowid, search_text, context)
            VALUES (new.id, new.search_text, new.context);
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        """,
    )


def m006_owner_tokens(conn: Connection) -> None:
    """Full-text indexes that know whose row is whose, so a search reads one agent's matches.

    Each FTS5 row gets a first column `owner` holding the token "a<agent id>"; a search is
    `owner : "a7" AND (...)`, which FTS5 answers by intersecting posting lists, instead of
    scoring every user's matching rows and filtering afterwards (2.5 ms instead of 21 ms for a
    small agent among 100k rows). The indexes read their text through views that add `owner`.
    """
    _execute_all(
        conn,
        """
        DROP TRIGGER messages_fts_insert;
        DROP TRIGGER messages_fts_delete;
        DROP TRIGGER messages_fts_update;
        DROP TABLE messages_fts;
        DROP TRIGGER passages_fts_insert;
        DROP TRIGGER passages_fts_delete;
        DROP TRIGGER passages_fts_update;
        DROP TABLE passages_fts;
        CREATE VIEW messages_fts_source AS
            SELECT id, 'a' || agent_id AS owner, search_text, context FROM messages;
        CREATE VIEW passages_fts_source AS
            SELECT id, 'a' || agent_id AS owner, content FROM passages;
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            owner, search_text, context,
            content='messages_fts_source', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, owner, search_text, context)
            VALUES (new.id, 'a' || new.agent_id, new.search_text, new.context);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, owner, search_text, context)
            VALUES ('delete', old.id, 'a' || old.agent_id, old.search_text, old.context);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF search_text, context ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, owner, search_text, context)
            VALUES ('delete', old.id, 'a' || old.agent_id, old.search_text, old.context);
            INSERT INTO messages_fts (rowid, owner, search_text, context)
            VALUES (new.id, 'a' || new.agent_id, new.search_text, new.context);
        END;
        CREATE VIRTUAL TABLE passages_fts USING fts5(
            owner, content,
            content='passages_fts_source', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts (rowid, owner, content) VALUES (new.id, 'a' || new.agent_id, new.content);
        END;
        CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, owner, content)
            VALUES ('delete', old.id, 'a' || old.agent_id, old.content);
        END;
        CREATE TRIGGER passages_fts_update AFTER UPDATE OF content ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, owner, content)
            VALUES ('delete', old.id, 'a' || old.agent_id, old.content);
            INSERT INTO passages_fts (rowid, owner, content) VALUES (new.id, 'a' || new.agent_id, new.content);
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        INSERT INTO passages_fts (passages_fts) VALUES ('rebuild');
        """,
    )


def m007_conversations(conn: Connection) -> None:
    """Conversations, identities, private vs public, the inbox and the outbox.

    - `identities(platform, platform_user_id) -> agent_id`: one person may reach one agent from
      several accounts; each agent's first identity is its `agents.platform`/`platform_user_id`.
    - `conversations`: a DM, channel or thread (platform, channel_id, thread_id), and whether it
      is private. Messages and passages record theirs and copy its `private` flag; everything
      before this migration came from the terminal: private.
    - Two views of each agent's main context: `in_context` (private: everything) and
      `public_in_context` (public messages only), each with its own summary and warning flag.
    - Blocks get a `scope` (private, public): in public the agent sees and edits the public set.
    - Full-text owner tokens: "a<id>" on every row, plus "p<id>" on public rows, so a public
      search reads public rows only; the update trigger also fires on agent_id (re-parenting).
    - `messages.source_key`: the platform's message key, unique, so a redelivery is dropped.
    - `inbox`: events received and not yet answered (`message_id` set once stored in messages).
    - `outbox`: messages for the platforms, with their delivery state.
    - `unembedded`: messages stored while the embedder failed, embedded later.
    """
    _execute_all(
        conn,
        """
        CREATE TABLE identities (
            platform TEXT NOT NULL,
            platform_user_id TEXT NOT NULL,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            display_name TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            PRIMARY KEY (platform, platform_user_id)
        ) WITHOUT ROWID;
        CREATE INDEX identities_by_agent ON identities (agent_id);
        INSERT INTO identities (platform, platform_user_id, agent_id, display_name, created_at)
            SELECT platform, platform_user_id, id, display_name, created_at FROM agents;
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            platform TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_id TEXT NOT NULL DEFAULT '',
            private INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            place TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            UNIQUE (platform, channel_id, thread_id)
        );
        ALTER TABLE agents ADD COLUMN public_summary TEXT NOT NULL DEFAULT '';
        ALTER TABLE agents ADD COLUMN public_summary_covers INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE agents ADD COLUMN public_pressure_warned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN conversation_id INTEGER REFERENCES conversations(id);
        ALTER TABLE messages ADD COLUMN private INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE messages ADD COLUMN public_in_context INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE messages ADD COLUMN source_key TEXT;
        CREATE UNIQUE INDEX messages_by_source ON messages (source_key) WHERE source_key IS NOT NULL;
        CREATE INDEX messages_public_context ON messages (agent_id, id) WHERE public_in_context = 1;
        ALTER TABLE passages ADD COLUMN conversation_id INTEGER REFERENCES conversations(id);
        ALTER TABLE passages ADD COLUMN private INTEGER NOT NULL DEFAULT 1;
        CREATE TABLE blocks_scoped (
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            scope TEXT NOT NULL CHECK (scope IN ('private', 'public')),
            label TEXT NOT NULL,
            description TEXT NOT NULL,
            value TEXT NOT NULL DEFAULT '',
            char_limit INTEGER NOT NULL CHECK (char_limit > 0),
            updated_at TEXT NOT NULL,
            PRIMARY KEY (agent_id, scope, label),
            CHECK (length(value) <= char_limit)
        );
        INSERT INTO blocks_scoped (agent_id, scope, label, description, value, char_limit, updated_at)
            SELECT agent_id, 'private', label, description, value, char_limit, updated_at
            FROM blocks ORDER BY rowid;
        DROP TABLE blocks;
        ALTER TABLE blocks_scoped RENAME TO blocks;
        CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            source_key TEXT UNIQUE,
            event TEXT NOT NULL,
            message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
            attempts INTEGER NOT NULL DEFAULT 0,
            received_at TEXT NOT NULL
        );
        CREATE INDEX inbox_by_agent ON inbox (agent_id, id);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            platform TEXT NOT NULL,
            text TEXT NOT NULL,
            recipient TEXT NOT NULL DEFAULT '',
            reply_to TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '',
            tool_call_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX outbox_pending ON outbox (platform, id) WHERE state = 'pending';
        CREATE INDEX outbox_by_agent ON outbox (agent_id, id);
        CREATE TABLE unembedded (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE
        );
        DROP TRIGGER messages_fts_insert;
        DROP TRIGGER messages_fts_delete;
        DROP TRIGGER messages_fts_update;
        DROP TABLE messages_fts;
        DROP VIEW messages_fts_source;
        DROP TRIGGER passages_fts_insert;
        DROP TRIGGER passages_fts_delete;
        DROP TRIGGER passages_fts_update;
        DROP TABLE passages_fts;
        DROP VIEW passages_fts_source;
        CREATE VIEW messages_fts_source AS
            SELECT id, 'a' || agent_id || CASE WHEN private = 0 THEN ' p' || agent_id ELSE '' END AS owner,
                search_text, context FROM messages;
        CREATE VIEW passages_fts_source AS
            SELECT id, 'a' || agent_id || CASE WHEN private = 0 THEN ' p' || agent_id ELSE '' END AS owner,
                content FROM passages;
        CREATE VIRTUAL TABLE messages_fts USING fts5(
            owner, search_text, context,
            content='messages_fts_source', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, owner, search_text, context) VALUES (new.id,
                'a' || new.agent_id || CASE WHEN new.private = 0 THEN ' p' || new.agent_id ELSE '' END,
                new.search_text, new.context);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, owner, search_text, context) VALUES ('delete', old.id,
                'a' || old.agent_id || CASE WHEN old.private = 0 THEN ' p' || old.agent_id ELSE '' END,
                old.search_text, old.context);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF agent_id, private, search_text, context ON messages
        BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, owner, search_text, context) VALUES ('delete', old.id,
                'a' || old.agent_id || CASE WHEN old.private = 0 THEN ' p' || old.agent_id ELSE '' END,
                old.search_text, old.context);
            INSERT INTO messages_fts (rowid, owner, search_text, context) VALUES (new.id,
                'a' || new.agent_id || CASE WHEN new.private = 0 THEN ' p' || new.agent_id ELSE '' END,
                new.search_text, new.context);
        END;
        CREATE VIRTUAL TABLE passages_fts USING fts5(
            owner, content,
            content='passages_fts_source', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts (rowid, owner, content) VALUES (new.id,
                'a' || new.agent_id || CASE WHEN new.private = 0 THEN ' p' || new.agent_id ELSE '' END,
                new.content);
        END;
        CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, owner, content) VALUES ('delete', old.id,
                'a' || old.agent_id || CASE WHEN old.private = 0 THEN ' p' || old.agent_id ELSE '' END,
                old.content);
        END;
        CREATE TRIGGER passages_fts_update AFTER UPDATE OF agent_id, private, content ON passages BEGIN
            INSERT INTO passages_fts (passages_fts, rowid, owner, content) VALUES ('delete', old.id,
                'a' || old.agent_id || CASE WHEN old.private = 0 THEN ' p' || old.agent_id ELSE '' END,
                old.content);
            INSERT INTO passages_fts (rowid, owner, content) VALUES (new.id,
                'a' || new.agent_id || CASE WHEN new.private = 0 THEN ' p' || new.agent_id ELSE '' END,
                new.content);
        END;
        CREATE TRIGGER messages_count_move AFTER UPDATE OF agent_id ON messages BEGIN
            UPDATE agents SET message_count = message_count - 1 WHERE id = old.agent_id;
            UPDATE agents SET message_count = message_count + 1 WHERE id = new.agent_id;
        END;
        CREATE TRIGGER passages_count_move AFTER UPDATE OF agent_id ON passages BEGIN
            UPDATE agents SET passage_count = passage_count - 1 WHERE id = old.agent_id;
            UPDATE agents SET passage_count = passage_count + 1 WHERE id = new.agent_id;
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        INSERT INTO passages_fts (passages_fts) VALUES ('rebuild');
        """,
    )


def m008_scheduler(conn: Connection) -> None:
    """Reminders the agents schedule and each agent's heartbeat state (storage/reminders.py,
    storage/heartbeats.py). A trigger gives every new agent its heartbeat row; another keeps the
    row's view of the person (when they last spoke, the platform they last used, their latest
    private conversation) current as their messages are stored."""
    _execute_all(
        conn,
        """
        CREATE TABLE reminders (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            platform TEXT NOT NULL,
            private INTEGER NOT NULL,
            text TEXT NOT NULL,
            due_at TEXT NOT NULL,
            recurrence TEXT,
            timezone TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'fired', 'cancelled', 'missed')),
            fired_count INTEGER NOT NULL DEFAULT 0,
            missed_count INTEGER NOT NULL DEFAULT 0,
            last_fired_at TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reminders_due ON reminders (state, due_at);
        CREATE INDEX reminders_due_by_platform ON reminders (platform, due_at) WHERE state = 'pending';
        CREATE INDEX reminders_by_agent ON reminders (agent_id, state, due_at);
        CREATE TABLE heartbeats (
            agent_id INTEGER PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
            next_at TEXT,
            enabled INTEGER NOT NULL DEFAULT 1,
            idle INTEGER NOT NULL DEFAULT 0,
            paused_until TEXT,
            day TEXT NOT NULL DEFAULT '',
            sent_today INTEGER NOT NULL DEFAULT 0,
            platform TEXT NOT NULL,
            conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            last_spoke_at TEXT,
            notes TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX heartbeats_due ON heartbeats (platform, next_at) WHERE next_at IS NOT NULL;
        CREATE INDEX heartbeats_unscheduled ON heartbeats (platform, agent_id)
            WHERE next_at IS NULL AND enabled = 1 AND idle = 0;
        INSERT INTO heartbeats (agent_id, platform, last_spoke_at)
            SELECT a.id, coalesce((SELECT c.platform FROM messages AS m JOIN conversations AS c
                    ON c.id = m.conversation_id WHERE m.agent_id = a.id AND m.kind = 'user'
                    ORDER BY m.id DESC LIMIT 1), a.platform),
                (SELECT max(m.created_at) FROM messages AS m WHERE m.agent_id = a.id AND m.kind = 'user')
            FROM agents AS a;
        UPDATE heartbeats SET conversation_id = (SELECT m.conversation_id FROM messages AS m
            WHERE m.agent_id = heartbeats.agent_id AND m.kind = 'user' AND m.private = 1
            AND m.conversation_id IS NOT NULL ORDER BY m.id DESC LIMIT 1);
        CREATE TRIGGER agents_heartbeat AFTER INSERT ON agents BEGIN
            INSERT OR IGNORE INTO heartbeats (agent_id, platform) VALUES (new.id, new.platform);
        END;
        CREATE TRIGGER messages_heartbeat AFTER INSERT ON messages
        WHEN new.role = 'user' AND new.kind = 'user'
            AND new.created_at >= coalesce((SELECT last_spoke_at FROM heartbeats
                WHERE agent_id = new.agent_id), '')
        BEGIN
            UPDATE heartbeats SET
                last_spoke_at = new.created_at,
                idle = 0,
                platform = coalesce(
                    (SELECT platform FROM conversations WHERE id = new.conversation_id), platform),
                conversation_id = CASE WHEN new.private = 1 AND new.conversation_id IS NOT NULL
                    THEN new.conversation_id ELSE conversation_id END
            WHERE agent_id = new.agent_id;
        END;
        """,
    )


def m009_documents(conn: Connection) -> None:
    """Documents loaded into archival memory (storage/documents.py), and where each passage of
    one stands: `passages.document_id` (NULL for what the agent stored itself), `position` (1, 2,
    3... in reading order) and `section` (its heading path or page)."""
    _execute_all(
        conn,
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            origin TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            passage_count INTEGER NOT NULL DEFAULT 0,
            private INTEGER NOT NULL DEFAULT 1,
            conversation_id INTEGER REFERENCES conversations(id),
            created_at TEXT NOT NULL
        );
        CREATE INDEX documents_by_hash ON documents (agent_id, sha256);
        CREATE INDEX documents_by_name ON documents (agent_id, name);
        ALTER TABLE passages ADD COLUMN document_id INTEGER REFERENCES documents(id);
        ALTER TABLE passages ADD COLUMN position INTEGER;
        ALTER TABLE passages ADD COLUMN section TEXT NOT NULL DEFAULT '';
        CREATE INDEX passages_by_document ON passages (document_id, position) WHERE document_id IS NOT NULL;
        """,
    )


def m010_link_codes(conn: Connection) -> None:
    """One-time codes that join a person's accounts to one agent (`/link`, bot/linking.py): the
    sha256 of the code (never the code), its agent and the account that asked, when it expires and
    when it was used; and the wrong codes an account tried (`link_failures`), to limit guessing."""
    _execute_all(
        conn,
        """
        CREATE TABLE link_codes (
            code_hash TEXT PRIMARY KEY,
            agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
            platform TEXT NOT NULL,
            platform_user_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        );
        CREATE INDEX link_codes_by_agent ON link_codes (agent_id);
        CREATE TABLE link_failures (
            platform TEXT NOT NULL,
            platform_user_id TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE INDEX link_failures_by_account ON link_failures (platform, platform_user_id, at);
        """,
    )


def m011_outbox_claims(conn: Connection) -> None:
    """Which process is delivering an outbox row, and until when (storage/outbox.py): `claimed_by`
    (a holder id, one per running delivery) and `claimed_until` (its lease, storage/clock.py's
    format). The sweep reads pending rows through `outbox_pending` (platform, id); the check that
    no earlier pending message of the same agent and conversation waits reads the index below."""
    _execute_all(
        conn,
        """
        ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
        ALTER TABLE outbox ADD COLUMN claimed_until TEXT;
        CREATE INDEX outbox_pending_by_conversation ON outbox (agent_id, conversation_id, id)
            WHERE state = 'pending';
        """,
    )


Migration = Callable[[Connection], None]

MIGRATIONS: list[Migration] = [
    m001_initial,
    m002_full_text,
    m003_counters,
    m004_turns,
    m005_context,
    m006_owner_tokens,
    m007_conversations,
    m008_scheduler,
    m009_documents,
    m010_link_codes,
    m011_outbox_claims,
]


def applied(conn: Connection) -> list[str]:
    if dialect(conn) == "postgres":
        postgres.prepare(conn)
    else:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
    return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


@changes_schema
def migrate(conn: Connection, upto: int | None = None) -> list[str]:
    """Apply the migrations not yet applied (the first `upto` only, for tests); return their names."""
    done = applied(conn)
    known = [m.__name__ for m in MIGRATIONS]
    unknown = [name for name in done if name not in known]
    if unknown:
        raise StorageError(
            f"This database was written by a newer membot (migrations {', '.join(unknown)}); "
            "upgrade membot or point MEMBOT_DB at another file."
        )
    ran = []
    for migration in MIGRATIONS[:upto]:
        if migration.__name__ in done:
            continue
        log.info("applying migration %s", migration.__name__)
        if dialect(conn) == "postgres":  # the same steps, in PostgreSQL's words
            postgres.apply_migration(conn, migration.__name__)
        else:
            migration(conn)
        conn.execute(
            "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (migration.__name__, now_iso())
        )
        ran.append(migration.__name__)
    return ran
