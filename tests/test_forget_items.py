"""`/forget passage ID` and `/forget about QUERY`: a preview, then `/forget confirm` deletes exactly
the previewed archival passages of the person's own agent, leaving none of their text on disk,
and nothing else of theirs or anyone else's."""

from __future__ import annotations

from pathlib import Path

from bot import loading
from bot.events import Event
from tests.test_forget import on_disk, passage_hits, remembering
from tests.test_terminal_chat import query

ALICE = Event.direct("terminal", "alice", "hi").person
BOB = Event.direct("terminal", "bob", "hi").person


async def _stored(runtime, agent, *texts: str) -> list[int]:
    """Archival passages put in directly (so their words are in no recall message)."""
    memory = runtime.memory(agent)
    vectors = [await memory.vector(text) for text in texts]
    return await runtime.db.run(
        lambda conn: [memory.insert_passage(conn, t, v).id for t, v in zip(texts, vectors, strict=True)]
    )


async def test_forget_one_passage_of_a_document_after_a_preview(fake_server, runtime_for, tmp_path: Path):
    runtime = await runtime_for(fake_server(remembering))
    await runtime.handle(Event.direct("terminal", "alice", "alice says zebrafoxtrot1"))
    await runtime.handle(Event.direct("terminal", "bob", "bob says bobword1"))
    alice = await runtime.find_agent("terminal", "alice")
    bob = await runtime.find_agent("terminal", "bob")
    text = "# Garden\n\n" + "\n\n".join(
        f"Bed {i} grows plantword{i}x beans. "
        + "It is in the spring garden, next to the shed and the old pear tree. " * 6
        + f"That is all about bed {i}."
        for i in range(12)
    )
    loaded = await loading.load(runtime.memory(alice), text.encode(), "garden.md")
    assert loaded.passages > 3
    [(target, content)] = query(
        tmp_path,
        "SELECT id, content FROM passages WHERE agent_id = ? AND content LIKE '%plantword7x%'",
        alice.id,
    )
    assert "plantword3x" not in content
    [(bobs,)] = query(tmp_path, "SELECT id FROM passages WHERE agent_id = ?", bob.id)

    refused = await runtime.command(ALICE, "/forget confirm")
    assert refused is not None and "Send /forget first" in refused  # nothing pending
    assert await runtime.command(ALICE, f"/forget passage {bobs}") == f"I have no such passage: {bobs}."
    assert "Send /forget first" in (await runtime.command(ALICE, "/forget confirm") or "")
    assert query(tmp_path, "SELECT count(*) FROM passages WHERE id = ?", bobs) == [(1,)]

    shown = await runtime.command(ALICE, f"/forget passage {target}")
    assert shown is not None and f"archival passage {target}" in shown and "/forget confirm" in shown
    assert "plantword7x" in shown
    before = query(tmp_path, "SELECT count(*) FROM passages WHERE agent_id = ?", alice.id)[0][0]
    assert on_disk(tmp_path, b"plantword7x") > 0

    done = await runtime.command(ALICE, "/forget confirm")
    assert done == "Done: I have forgotten 1 archival passage."
    assert query(tmp_path, "SELECT count(*) FROM passages WHERE agent_id = ?", alice.id) == [(before - 1,)]
    assert passage_hits(tmp_path, "plantword7x") == [(0,)]
    assert query(tmp_path, "SELECT count(*) FROM passages_vec WHERE rowid = ?", target) == [(0,)]
    assert on_disk(tmp_path, b"plantword7x") == 0  # not in the file, the index or the WAL
    assert on_disk(tmp_path, b"plantword3x") > 0 and on_disk(tmp_path, b"bobword1") > 0
    assert query(tmp_path, "SELECT passage_count FROM documents WHERE agent_id = ?", alice.id) == [
        (loaded.passages - 1,)
    ]
    assert query(tmp_path, "SELECT passage_count FROM agents WHERE id = ?", alice.id) == [(before - 1,)]
    memory = await runtime.command(ALICE, "/memory")
    assert memory is not None and f"garden.md ({loaded.passages - 1} passages)" in memory
    assert "zebrafoxtrot1" in memory  # core memory untouched
    assert "Send /forget first" in (await runtime.command(ALICE, "/forget confirm") or "")  # used up
    assert query(tmp_path, "SELECT count(*) FROM passages WHERE agent_id = ?", bob.id) == [(1,)]


async def test_forget_about_a_query_deletes_exactly_the_previewed_passages(
    fake_server, runtime_for, tmp_path: Path
):
    runtime = await runtime_for(fake_server(remembering))
    await runtime.handle(Event.direct("terminal", "alice", "alice says zebrafoxtrot1"))
    await runtime.handle(Event.direct("terminal", "bob", "bob says bobword1"))
    alice = await runtime.find_agent("terminal", "alice")
    bob = await runtime.find_agent("terminal", "bob")
    sister = await _stored(
        runtime,
        alice,
        "My sister Quillane lives in Varna.",
        "Quillane's birthday is on 3 May.",
        "Quillane likes chess.",
    )
    kept = await _stored(runtime, alice, "The cat is called Pumpernix.", "Works as a nurse at night.")
    [bobs] = await _stored(runtime, bob, "Bob's friend is called Quillane too.")

    shown = await runtime.command(ALICE, "/forget about Quillane")
    assert shown is not None and shown.startswith("3 archival passages match 'Quillane'")
    assert "messages in our conversation history are not included" in shown
    for passage_id in sister:
        assert f"  {passage_id}: " in shown
    assert "Pumpernix" not in shown and "Bob's friend" not in shown

    later = await _stored(runtime, alice, "Quillane moved to Sofia.")  # after the preview: not deleted
    assert on_disk(tmp_path, b"Varna") > 0
    done = await runtime.command(ALICE, "/forget confirm")
    assert done == "Done: I have forgotten 3 archival passages."
    left = {i for (i,) in query(tmp_path, "SELECT id FROM passages WHERE agent_id = ?", alice.id)}
    assert not left & set(sister) and set(kept) | set(later) <= left
    assert query(tmp_path, "SELECT count(*) FROM passages WHERE id = ?", bobs) == [(1,)]
    assert on_disk(tmp_path, b"Varna") == 0 and on_disk(tmp_path, b"chess") == 0
    assert on_disk(tmp_path, b"Pumpernix") > 0

    none = await runtime.command(ALICE, "/forget about xylophonequux")
    assert none is not None and "nothing to forget" in none
    assert "Send /forget first" in (await runtime.command(ALICE, "/forget confirm") or "")
    assert "Usage: /forget passage ID" in (await runtime.command(ALICE, "/forget passage x") or "")

    # the last preview is what confirm deletes: /forget about, then plain /forget, forgets everything
    assert (await runtime.command(BOB, "/forget about Quillane") or "").startswith("1 archival passages")
    assert "This deletes everything" in (await runtime.command(BOB, "/forget") or "")
    assert "forgotten everything" in (await runtime.command(BOB, "/forget confirm") or "")
    assert await runtime.find_agent("terminal", "bob") is None
    assert await runtime.find_agent("terminal", "alice") is not None
