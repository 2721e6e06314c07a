"""Agents: one per person. A person's accounts (identities) map to their agent.

Table `agents`: id, platform and platform_user_id (its first identity; see `identities`),
display_name, timezone, the recursive summary of the private view (`summary`, `summary_covers` =
how many messages it stands for) and of the public view (`public_summary`,
`public_summary_covers`), `pressure_warned` / `public_pressure_warned` (a memory pressure warning
was given since that view's last flush), memory_updated_at, created_at, last_active_at, and
message_count / passage_count (kept by triggers).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import now_iso
from storage.db import Connection
from storage.errors import AgentNotFoundError

COLUMNS = (
    "id, platform, platform_user_id, display_name, timezone, summary, summary_covers, "
    "pressure_warned, memory_updated_at, created_at, last_active_at, public_summary, "
    "public_summary_covers, public_pressure_warned"
)


@dataclass(frozen=True)
class Agent:
    id: int
    platform: str
    platform_user_id: str
    display_name: str
    timezone: str
    summary: str
    summary_covers: int
    pressure_warned: bool
    memory_updated_at: str | None
    created_at: str
    last_active_at: str
    public_summary: str = ""
    public_summary_covers: int = 0
    public_pressure_warned: bool = False

    def summary_of(self, public: bool) -> tuple[str, int]:
        """The recursive summary of one view and how many messages it covers."""
        if public:
            return self.public_summary, self.public_summary_covers
        return self.summary, self.summary_covers

    def warned(self, public: bool) -> bool:
        return self.public_pressure_warned if public else self.pressure_warned


def _row(row: tuple[object, ...]) -> Agent:
    values = list(row)
    values[7] = bool(values[7])
    values[13] = bool(values[13])
    return Agent(*values)  # type: ignore[arg-type]


def find(conn: Connection, platform: str, platform_user_id: str) -> Agent | None:
    """The agent an identity maps to, if any."""
    row = conn.execute(
        f"SELECT {COLUMNS} FROM agents WHERE id = "
        "(SELECT agent_id FROM identities WHERE platform = ? AND platform_user_id = ?)",
        (platform, platform_user_id),
    ).fetchone()
    return _row(row) if row else None


def exists(conn: Connection, agent_id: int) -> bool:
    return conn.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id,)).fetchone() is not None


def get(conn: Connection, agent_id: int) -> Agent:
    row = conn.execute(f"SELECT {COLUMNS} FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is None:
        raise AgentNotFoundError(f"There is no agent {agent_id} (it may have been forgotten).")
    return _row(row)


def create(conn: Connection, platform: str, platform_user_id: str, display_name: str, timezone: str) -> Agent:
    """A new agent and its first identity."""
    now = now_iso()
    cursor = conn.execute(
        "INSERT INTO agents (platform, platform_user_id, display_name, timezone, created_at, "
        "last_active_at, memory_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (platform, platform_user_id, display_name, timezone, now, now, now),
    )
    agent_id = int(cursor.lastrowid)
    conn.execute(
        "INSERT INTO identities (platform, platform_user_id, agent_id, display_name, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (platform, platform_user_id, agent_id, display_name, now),
    )
    return get(conn, agent_id)


def set_timezone(conn: Connection, agent_id: int, timezone: str) -> None:
    """Change the agent's time zone (an IANA name, checked by the caller)."""
    get(conn, agent_id)
    conn.execute("UPDATE agents SET timezone = ? WHERE id = ?", (timezone, agent_id))


def touch(conn: Connection, agent_id: int) -> None:
    conn.execute("UPDATE agents SET last_active_at = ? WHERE id = ?", (now_iso(), agent_id))


def mark_memory_updated(conn: Connection, agent_id: int) -> None:
    conn.execute("UPDATE agents SET memory_updated_at = ? WHERE id = ?", (now_iso(), agent_id))


def set_pressure_warned(conn: Connection, agent_id: int, warned: bool, public: bool = False) -> None:
    column = "public_pressure_warned" if public else "pressure_warned"
    conn.execute(f"UPDATE agents SET {column} = ? WHERE id = ?", (int(warned), agent_id))


def set_summary(conn: Connection, agent_id: int, summary: str, covers: int, public: bool = False) -> None:
    prefix = "public_" if public else ""
    conn.execute(
        f"UPDATE agents SET {prefix}summary = ?, {prefix}summary_covers = ?, {prefix}pressure_warned = 0 "
        "WHERE id = ?",
        (summary, covers, agent_id),
    )


def ids(conn: Connection) -> list[int]:
    """Every agent id (for maintenance such as re-embedding; reads no memory)."""
    return [int(row[0]) for row in conn.execute("SELECT id FROM agents ORDER BY id")]


@dataclass(frozen=True)
class Listed:
    """One line of `membot agents`: who an agent belongs to and how much it holds (no memory text)."""

    id: int
    accounts: str  # "terminal:alice, discord:1234"
    display_name: str
    messages: int
    passages: int
    last_active_at: str


def listing(conn: Connection) -> list[Listed]:
    """Every agent with its accounts and counts, for the operator (reads no memory text)."""
    rows = conn.execute(
        "SELECT a.id, group_concat(i.platform || ':' || i.platform_user_id, ', '), a.display_name, "
        "a.message_count, a.passage_count, a.last_active_at FROM agents AS a "
        "LEFT JOIN identities AS i ON i.agent_id = a.id GROUP BY a.id ORDER BY a.id"
    )
    return [Listed(int(i), str(acc or ""), str(n), int(m), int(p), str(t)) for i, acc, n, m, p, t in rows]
