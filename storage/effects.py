"""Tool effects: what a tool call did, recorded in the same transaction as the effect itself.

Table `tool_effects`: (agent_id, tool_call_id) key, effect (a sentence: "stored passage 12").
The row is deleted in the transaction that stores the call's result, so it only outlives a call
that a crash cut off between its effect and its result: then the agent is told truthfully that
the call ran, instead of being invited to run it again.
"""

from __future__ import annotations

from storage.db import Connection


def record(conn: Connection, agent_id: int, tool_call_id: str, effect: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO tool_effects (agent_id, tool_call_id, effect) VALUES (?, ?, ?)",
        (agent_id, tool_call_id, effect),
    )


def clear(conn: Connection, agent_id: int, tool_call_id: str) -> None:
    conn.execute("DELETE FROM tool_effects WHERE agent_id = ? AND tool_call_id = ?", (agent_id, tool_call_id))


def recorded(conn: Connection, agent_id: int, tool_call_ids: list[str]) -> dict[str, str]:
    """The effects recorded for these calls of this agent (calls whose result was never stored)."""
    if not tool_call_ids:
        return {}
    marks = ",".join("?" * len(tool_call_ids))
    rows = conn.execute(
        f"SELECT tool_call_id, effect FROM tool_effects WHERE agent_id = ? AND tool_call_id IN ({marks})",
        (agent_id, *tool_call_ids),
    )
    return {str(call): str(effect) for call, effect in rows}
