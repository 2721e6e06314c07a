"""What conversation search returns: neighbours of a hit, speakers, and first the days a query names.

Real database, real WordLlama embedder, the bot's own import path (`AgentMemory.import_messages`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from bot.memory import AgentMemory, Imported, Scope
from bot.runtime import open_database
from storage import agents, messages, migrations
from storage.db import Database
from tests.conftest import shared_embedder

START = datetime(2023, 5, 8, 13, 0)


async def memory_with(tmp_path: Path, lines: list[tuple[str, str, datetime]]) -> AgentMemory:
    embedder = shared_embedder()
    db = await open_database(str(tmp_path / "r.db"), embedder.name, embedder.dim)
    record = await db.run(agents.create, "test", "u", "Caroline", "UTC")
    memory = AgentMemory(db, embedder, record)
    roles = {"Caroline": "user"}
    await memory.import_messages(
        [Imported(roles.get(who, "assistant"), who, text, at) for who, text, at in lines]
    )
    return memory


def chat(start: datetime, *lines: tuple[str, str]) -> list[tuple[str, str, datetime]]:
    return [(who, text, start + timedelta(seconds=i)) for i, (who, text) in enumerate(lines)]


FILLER = [("Melanie", f"Random chatter number {i} about the weather and traffic.") for i in range(12)]


async def test_the_reply_after_a_hit_is_found_with_it(tmp_path: Path):
    lines = chat(
        START,
        *FILLER[:6],
        ("Caroline", "What did you think of the pottery workshop?"),
        ("Melanie", "Honestly it felt like therapy, I was so calm afterwards."),
        *FILLER[6:],
    )
    memory = await memory_with(tmp_path, lines)
    found = [m.content for m in await memory.search_messages("pottery workshop", 3)]
    assert found[0] == lines[6][1]
    assert lines[7][1] in found  # shares no word with the query: found as the hit's reply
    memory.db.close()


async def test_a_long_silence_separates_conversations(tmp_path: Path):
    reply = "It was lovely, thanks."
    lines = chat(START, *FILLER[:3], ("Caroline", "What did you think of the pottery workshop?"))
    lines += chat(START + timedelta(days=3), ("Melanie", reply), *FILLER[3:6])
    lines += chat(START + timedelta(days=5), ("Caroline", "Another workshop soon?"), ("Melanie", reply))
    memory = await memory_with(tmp_path, lines)
    found = await memory.search_messages("pottery workshop", 20)
    replies = [m.id for m in found if m.content == reply]
    # the same words twice: the one right after a hit ranks higher than the one days after it
    assert replies == sorted(replies, reverse=True)
    memory.db.close()


async def test_messages_by_the_person_the_query_names_come_first(tmp_path: Path):
    lines = chat(
        START,
        ("Caroline", "I adopted a puppy from the shelter."),
        *FILLER[:5],
        ("Melanie", "I adopted a puppy from the shelter too."),
        *FILLER[5:],
    )
    memory = await memory_with(tmp_path, lines)
    about_melanie = await memory.search_messages("Did Melanie adopt a puppy?", 1)
    about_caroline = await memory.search_messages("Did Caroline adopt a puppy?", 1)
    assert about_melanie[0].speaker == "Melanie" and about_caroline[0].speaker == "Caroline"
    memory.db.close()


async def test_messages_from_the_days_the_query_names_come_first(tmp_path: Path):
    lines = chat(datetime(2023, 3, 2, 9), ("Caroline", "We went hiking in the hills."), *FILLER[:4])
    lines += chat(datetime(2023, 8, 20, 9), ("Caroline", "We went hiking in the hills again."), *FILLER[4:])
    memory = await memory_with(tmp_path, lines)
    march = await memory.search_messages("hiking in March 2023", 1)
    august = await memory.search_messages("hiking in August 2023", 1)
    assert march[0].content == lines[0][1] and august[0].content == lines[5][1]
    memory.db.close()


async def test_a_named_day_comes_first_even_when_other_days_share_more_words(tmp_path: Path):
    seen = ("Joanna", "We finally saw Inception at the cinema, what a plot twist!")
    lines = chat(datetime(2022, 5, 1, 20), *FILLER[:3], seen, *FILLER[3:6])
    lines += chat(
        datetime(2022, 8, 20, 9),
        ("Joanna", "Movie night again: I watch a movie every week, any movie I can find."),
        ("Melanie", "Did you watch the new movie yet?"),
        *FILLER[6:],
    )
    memory = await memory_with(tmp_path, lines)
    found = [
        m.content for m in await memory.search_messages("What movie did Joanna watch on 1 May, 2022?", 12)
    ]
    # no word in common with the question, but said that day: the days' messages are searched first
    assert found[0] == seen[1]
    # the rest follows, ranked as usual: the word matches from August are still found
    assert lines[10][1] in found and found.index(lines[10][1]) > found.index(seen[1])
    undated = [m.content for m in await memory.search_messages("What movie did Joanna watch?", 3)]
    assert seen[1] not in undated  # without a date nothing changes: words and meaning decide
    memory.db.close()


async def test_a_named_day_in_public_finds_only_what_was_said_in_public(tmp_path: Path):
    day = datetime(2022, 5, 1, 20)
    memory = await memory_with(tmp_path, chat(day, ("Caroline", "My new door code is 4417."), *FILLER[:4]))
    public = AgentMemory(memory.db, memory.embedder, memory.agent, Scope(None, private=False))
    await public.import_messages(
        [Imported("user", "Caroline", "The park was sunny today.", day + timedelta(hours=1))]
    )
    found = [m.content for m in await public.search_messages("What did Caroline say on 1 May, 2022?", 10)]
    assert found == ["The park was sunny today."]
    private = [m.content for m in await memory.search_messages("What did Caroline say on 1 May, 2022?", 10)]
    assert "My new door code is 4417." in private and "The park was sunny today." in private
    memory.db.close()


async def test_search_never_returns_the_current_turn_or_another_agent(tmp_path: Path):
    memory = await memory_with(tmp_path, chat(START, ("Caroline", "My locker code is 4417."), *FILLER))
    other = await memory.db.run(agents.create, "test", "v", "Vic", "UTC")
    spy = AgentMemory(memory.db, memory.embedder, other)
    await spy.add_message("user", "user", "what is the locker code?", search_text="what is the locker code?")
    assert await spy.search_messages("locker code", 10, before_id=None) != []
    assert all(m.speaker == "Vic" for m in await spy.search_messages("locker code 4417", 10))
    first = (await memory.search_messages("locker code", 1))[0]
    assert await memory.search_messages("locker code", 10, before_id=first.id) == []
    memory.db.close()


def test_migrations_number_old_messages_index_their_neighbours_and_record_speakers(tmp_path: Path):
    db = Database(tmp_path / "old.db")
    db.call(migrations.migrate, 3)

    def old_rows(conn):
        conn.execute(
            "INSERT INTO agents (platform, platform_user_id, timezone, created_at, last_active_at) "
            "VALUES ('discord', '1', 'UTC', '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')"
        )
        for i, text in enumerate(["hello", "", "how are you", "fine"]):
            conn.execute(
                "INSERT INTO messages (agent_id, role, kind, content, search_text, created_at) "
                "VALUES (1, 'user', 'user', ?, ?, ?)",
                (text or "tool output", text, f"2024-01-01T00:00:0{i}.000000Z"),
            )

    db.call(old_rows)
    assert db.call(migrations.migrate)[:4] == [  # (later issues add migrations after these)
        "m004_turns",
        "m005_context",
        "m006_owner_tokens",
        "m007_conversations",
    ]
    rows = db.call(lambda c: c.execute("SELECT turn, context FROM messages ORDER BY id").fetchall())
    assert rows == [(1, "how are you"), (None, ""), (2, "hello\nfine"), (3, "how are you")]
    later = "2024-01-01T05:00:00.000000Z"  # hours later: a new conversation, not a neighbour
    db.call(
        messages.append, 1, "user", "user", "new one", search_text="new one", speaker="Ana", created_at=later
    )
    db.call(messages.append, 1, "user", "user", "and two", search_text="and two", created_at=later)
    rows = db.call(lambda c: c.execute("SELECT turn, context FROM messages ORDER BY id").fetchall())
    assert rows[3:] == [(3, "how are you"), (4, "and two"), (5, "new one")]
    assert [i for i, _ in db.call(messages.text_matches, 1, "fine", 5)] == [4, 3]  # text, then context
    assert [p.turn for p in db.call(messages.at_turns, 1, [4])] == [4]
    assert db.call(messages.speakers, 1) == ["Ana"]
    assert db.call(messages.speakers, 2) == []
    db.close()
