"""One person, one agent across platforms: `/link`, `/link CODE`, `/unlink`.

`/link` on one account gives a one-time code (CODE_LIFETIME, ten minutes); `/link CODE` sent from
the person's other account joins that account to the first one's agent. Both sides act: the code
is shown only to the account that asked for it. When the second account already had an agent,
its memory is merged in (`lifecycle.move_agent`: messages in time order, passages, vectors); its
core memory blocks are appended to the same blocks of the kept agent where they fit and kept as
archival passages where they do not, and its summaries become archival passages, so nothing is
lost. `/unlink` splits the asking account off again: it gets a fresh, empty agent, and the
merged memory stays with the agent.

Codes live in the database (storage/link_codes.py, migration m010): only their sha256 is stored,
so they survive a restart and work across processes (`membot chat` in one, `membot discord` in
another). A second `/link` replaces the agent's unused code. A wrong, used or expired code is
refused; after MAX_FAILURES wrong codes from one account within FAILURE_WINDOW, it is refused
for the rest of that window even with a right code (`link_failures`), so codes cannot be guessed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from storage import agents, blocks, identities, lifecycle, link_codes, passages
from storage.clock import now_iso, to_iso

if TYPE_CHECKING:
    from bot.events import Person
    from bot.runtime import Runtime
    from storage.blocks import Block
    from storage.db import Connection

log = logging.getLogger(__name__)

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or typed, unambiguous
CODE_LENGTH = 8
CODE_LIFETIME = timedelta(minutes=10)
MAX_FAILURES = 5  # wrong codes one account may send within FAILURE_WINDOW
FAILURE_WINDOW = timedelta(minutes=10)

REFUSED = "That code is wrong, used or expired. Send /link on your other account for a new one."
LIMITED = "Too many wrong codes from this account; try again in 10 minutes."


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def _hash(code: str) -> str:
    cleaned = "".join(code.split()).replace("-", "").upper()
    return hashlib.sha256(cleaned.encode()).hexdigest()


def _account(platform: str, user_id: str) -> str:
    return f"{platform} user {user_id}"


def _failures(conn: Connection, platform: str, user_id: str) -> int:
    return link_codes.failures(conn, platform, user_id, to_iso(datetime.now(UTC) - FAILURE_WINDOW))


# merging


@dataclass(frozen=True)
class Plan:
    """What to do with the merged agent's blocks and summaries: (scope, label, new value) writes
    to the kept agent's blocks, and texts to keep as archival passages."""

    writes: tuple[tuple[str, str, str], ...]
    keep: tuple[str, ...]


def plan(kept: list[Block], merged: list[Block], summaries: tuple[str, str]) -> Plan:
    """Append each of `merged`'s blocks (its lines the kept block lacks) to the kept agent's block
    of the same scope and label if it fits, else keep it as a passage; summaries become passages."""
    current = {(b.scope, b.label): b for b in kept}
    values = {key: b.value for key, b in current.items()}
    keep: list[str] = []
    for block in merged:
        key = (block.scope, block.label)
        have = set(values.get(key, "").splitlines())
        text = "\n".join(line for line in block.value.strip().splitlines() if line not in have)
        if not text.strip():
            continue
        target = current.get(key)
        joined = (values[key].rstrip() + "\n" + text).lstrip("\n") if target else ""
        if target is not None and len(joined) <= target.char_limit:
            values[key] = joined
        else:
            keep.append(f"Core memory [{block.label}] of a linked account: {text}")
    writes = tuple((s, lb, v) for (s, lb), v in values.items() if v != current[(s, lb)].value)
    for name, summary in zip(("summary", "public summary"), summaries, strict=True):
        if summary.strip():
            keep.append(f"Earlier conversations ({name}) of a linked account: {summary.strip()}")
    return Plan(writes, tuple(dict.fromkeys(keep)))


def _merge(
    conn: Connection, code: str, keep_id: int, merge_id: int, to_do: Plan, vectors: list[bytes]
) -> lifecycle.Moved | None:
    if not link_codes.use(conn, _hash(code), keep_id, now_iso()) or not agents.exists(conn, merge_id):
        return None
    link_codes.drop_for_agent(conn, merge_id)  # not carried over
    moved = lifecycle.move_agent(conn, merge_id, keep_id)
    for scope, label, value in to_do.writes:
        blocks.write(conn, keep_id, label, value, scope)
    for text, vector in zip(to_do.keep, vectors, strict=True):
        passages.insert(conn, keep_id, text, vector, "link")
    return moved


def _join(conn: Connection, code: str, keep_id: int, platform: str, user_id: str, name: str) -> bool:
    if (
        not link_codes.use(conn, _hash(code), keep_id, now_iso())
        or agents.find(conn, platform, user_id) is not None
    ):
        return False
    identities.link(conn, platform, user_id, keep_id, name)
    return True


# commands


async def link(runtime: Runtime, person: Person, argument: str) -> str:
    """`/link`: a code for this account's agent; `/link CODE`: join this account to its agent."""
    code = argument.strip()
    if not code:
        return await _give_code(runtime, person)
    return await _redeem(runtime, person, code)


async def _give_code(runtime: Runtime, person: Person) -> str:
    agent = await runtime.agent_for(person.platform, person.user_id, person.name)
    code, now = new_code(), datetime.now(UTC)
    await runtime.db.run(
        link_codes.store,
        agent.id,
        person.platform,
        person.user_id,
        _hash(code),
        to_iso(now),
        to_iso(now + CODE_LIFETIME),
    )
    return (
        f"Your link code: {code}. On your other account, send /link {code} within 10 minutes; that "
        "account will then share this memory (anything it remembers is merged in). Show this code to "
        "no one else."
    )


async def _redeem(runtime: Runtime, person: Person, code: str) -> str:
    platform, user_id = person.platform, person.user_id
    if await runtime.db.run(_failures, platform, user_id) >= MAX_FAILURES:
        return LIMITED
    found = await runtime.db.read(link_codes.valid, _hash(code), now_iso())
    if found is None:
        await runtime.db.run(link_codes.record_failure, platform, user_id, now_iso())
        return REFUSED
    other = _account(found.platform, found.platform_user_id)
    mine = await runtime.find_agent(platform, user_id)
    if mine is not None and mine.id == found.agent_id:
        return f"This account already shares memory with {other}; nothing to link."
    if mine is None:
        async with runtime.locks.hold(found.agent_id):
            joined = await runtime.db.run(_join, code, found.agent_id, platform, user_id, person.name)
        if not joined:
            return REFUSED
        runtime.reception.forget(person)
        return f"Linked: your {platform} account now shares memory with {other} (you had no memory here to merge)."
    first, second = sorted((found.agent_id, mine.id))
    async with runtime.locks.hold(first), runtime.locks.hold(second):
        to_do = await runtime.db.read(_plan, found.agent_id, mine.id)
        if to_do is None:
            return REFUSED
        keeper = await runtime.db.read(agents.get, found.agent_id)
        vectors = [await runtime.memory(keeper).vector(text) for text in to_do.keep]
        moved = await runtime.db.run(_merge, code, found.agent_id, mine.id, to_do, vectors)
        if moved is None:
            return REFUSED
        runtime.reception.forget_agent(mine.id)
        if mine.id in runtime.reception.unembedded:
            runtime.reception.unembedded.discard(mine.id)
            runtime.reception.unembedded.add(found.agent_id)
    log.info("linked %s:%s into agent %s (merged agent %s)", platform, user_id, found.agent_id, mine.id)
    extra = f"; kept {len(to_do.keep)} core memory or summary notes as passages" if to_do.keep else ""
    return (
        f"Linked: your {platform} account now shares memory with {other}; merged {moved.messages} "
        f"messages and {moved.passages} passages{extra}."
    )


def _plan(conn: Connection, keep_id: int, merge_id: int) -> Plan | None:
    if not agents.exists(conn, keep_id) or not agents.exists(conn, merge_id):
        return None
    kept = blocks.list_for(conn, keep_id, blocks.PRIVATE) + blocks.list_for(conn, keep_id, blocks.PUBLIC)
    merged = blocks.list_for(conn, merge_id, blocks.PRIVATE) + blocks.list_for(conn, merge_id, blocks.PUBLIC)
    record = agents.get(conn, merge_id)
    return plan(kept, merged, (record.summary, record.public_summary))


async def unlink(runtime: Runtime, person: Person, argument: str) -> str:
    """`/unlink`: this account leaves its shared agent and starts over with an empty one."""
    platform, user_id = person.platform, person.user_id
    found = await runtime.find_agent(platform, user_id)
    if found is None:
        return "I keep nothing about you; nothing to unlink."
    async with runtime.locks.hold(found.id):
        split = await runtime.db.run(identities.split, found.id, platform, user_id)
        runtime.reception.forget(person)
    if not split:
        return "This account is not linked to another one; nothing to unlink."
    await runtime.agent_for(platform, user_id, person.name)
    return (
        f"Unlinked: your {platform} account starts over with an empty memory; what we talked about "
        "so far stays with your other linked accounts."
    )
