"""`/link`, `/link CODE`, `/unlink`: one person's accounts sharing one agent (bot/linking.py).

A real runtime on a real database with a scripted model (`remembering`: each message's last word
goes to core and archival memory; 'find X' searches archival memory). Codes are read from the
bot's answer, as a person would.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot import controls, linking
from bot.events import Event, Person
from storage.blocks import Block
from tests.test_forget import remembering
from tests.test_terminal_chat import lines, query, run_chat

ANN = Person("terminal", "ann", "ann")
ANN_DISCORD = Person("discord", "4242", "ann")
CODE = re.compile(r"Your link code: ([A-Z0-9]{8})\.")


def code_in(answer: str | None) -> str:
    found = CODE.search(answer or "")
    assert found, answer
    return found.group(1)


async def chat(runtime, person: Person, *texts: str) -> str:
    """What the bot replied to these messages, joined."""
    replies = []
    for text in texts:
        turn = await runtime.handle(Event.direct(person.platform, person.user_id, text, person.name))
        replies += turn.replies
    return "\n".join(replies)


async def test_two_accounts_share_one_memory_after_link(fake_server, runtime_for, tmp_path: Path):
    runtime = await runtime_for(fake_server(remembering))
    await chat(runtime, ANN, "ann says termword1", "ann says termword2")
    await chat(runtime, ANN_DISCORD, "ann says discword1")
    await chat(runtime, ANN, "ann says termword3")  # later than discord's: order is by time
    a = await runtime.find_agent("terminal", "ann")
    b = await runtime.find_agent("discord", "4242")
    assert a.id != b.id

    code = code_in(await runtime.command(ANN, "/link"))
    assert code.isalnum() and not set(code) & set("01OI")
    answer = await runtime.command(ANN_DISCORD, f"/link {code.lower()}")
    assert answer.startswith("Linked: your discord account now shares memory with terminal user ann")
    assert "merged" in answer and "1 passages" in answer

    a2, b2 = await runtime.find_agent("terminal", "ann"), await runtime.find_agent("discord", "4242")
    assert a2.id == b2.id == a.id
    assert query(tmp_path, "SELECT count(*) FROM agents WHERE id = ?", b.id) == [(0,)]
    users = [
        t
        for (t,) in query(
            tmp_path,
            "SELECT content FROM messages WHERE agent_id = ? AND role = 'user' ORDER BY turn",
            a.id,
        )
    ]
    words = [w for t in users for w in re.findall(r"(termword\d|discword\d)", t)]
    assert words == ["termword1", "termword2", "discword1", "termword3"]
    # discord's core memory is not lost: appended to the kept human block
    [(human,)] = query(
        tmp_path,
        "SELECT value FROM blocks WHERE agent_id = ? AND scope = 'private' AND label = 'human'",
        a.id,
    )
    assert "likes termword1" in human and "likes discword1" in human and human.count("Name: ann") == 1

    assert "a passage about termword1" in await chat(runtime, ANN_DISCORD, "find termword1")
    assert "a passage about discword1" in await chat(runtime, ANN, "find discword1")

    again = await runtime.command(ANN_DISCORD, f"/link {code}")
    assert again == linking.REFUSED  # a code works once
    same = await runtime.command(ANN_DISCORD, f"/link {code_in(await runtime.command(ANN, '/link'))}")
    assert "already shares memory" in same


async def test_an_account_without_memory_joins_and_unlink_starts_it_over(
    fake_server, runtime_for, tmp_path: Path
):
    runtime = await runtime_for(fake_server(remembering))
    await chat(runtime, ANN, "ann says termword1")
    agent = await runtime.find_agent("terminal", "ann")
    code = code_in(await runtime.command(ANN, "/link"))
    answer = await runtime.command(ANN_DISCORD, f"/link {code}")
    assert "Linked" in answer and "no memory here" in answer
    assert (await runtime.find_agent("discord", "4242")).id == agent.id
    await chat(runtime, ANN_DISCORD, "ann says discword1")

    # the terminal account (the agent's first one) leaves; discord keeps everything
    assert "Unlinked" in await runtime.command(ANN, "/unlink")
    fresh = await runtime.find_agent("terminal", "ann")
    kept = await runtime.find_agent("discord", "4242")
    assert fresh.id != agent.id and kept.id == agent.id
    assert query(tmp_path, "SELECT count(*) FROM messages WHERE agent_id = ?", fresh.id) == [(0,)]
    assert query(tmp_path, "SELECT count(*) FROM passages WHERE agent_id = ?", fresh.id) == [(0,)]
    texts = [t for (t,) in query(tmp_path, "SELECT content FROM passages WHERE agent_id = ?", kept.id)]
    assert any("termword1" in t for t in texts) and any("discword1" in t for t in texts)
    assert "nothing to unlink" in await runtime.command(ANN, "/unlink")
    assert "nothing to unlink" in await runtime.command(ANN_DISCORD, "/unlink")
    await chat(runtime, ANN, "ann says newword1")  # the fresh agent answers
    assert query(tmp_path, "SELECT count(*) FROM messages WHERE agent_id = ?", fresh.id)[0][0] > 0


async def test_wrong_expired_and_forgotten_codes_are_refused(fake_server, runtime_for, monkeypatch):
    runtime = await runtime_for(fake_server(remembering))
    await chat(runtime, ANN, "ann says termword1")
    assert await runtime.command(ANN_DISCORD, "/link ABCDEFGH") == linking.REFUSED

    monkeypatch.setattr(linking, "CODE_LIFETIME", timedelta(seconds=-1))
    expired = code_in(await runtime.command(ANN, "/link"))
    assert await runtime.command(ANN_DISCORD, f"/link {expired}") == linking.REFUSED
    monkeypatch.undo()

    replaced = code_in(await runtime.command(ANN, "/link"))
    newer = code_in(await runtime.command(ANN, "/link"))  # replaces the unused one
    assert await runtime.command(ANN_DISCORD, f"/link {replaced}") == linking.REFUSED

    agent = await runtime.find_agent("terminal", "ann")
    await controls.forget(runtime, agent.id)
    assert await runtime.command(ANN_DISCORD, f"/link {newer}") == linking.REFUSED
    assert await runtime.find_agent("discord", "4242") is None


async def test_guessing_is_limited(fake_server, runtime_for):
    runtime = await runtime_for(fake_server(remembering))
    code = code_in(await runtime.command(ANN, "/link"))
    for i in range(linking.MAX_FAILURES):
        assert await runtime.command(ANN_DISCORD, f"/link WRONG{i:03d}") == linking.REFUSED
    assert await runtime.command(ANN_DISCORD, f"/link {code}") == linking.LIMITED  # even the right one
    assert await runtime.find_agent("discord", "4242") is None
    other = Person("discord", "5151", "ann")  # other accounts are not blocked
    assert await runtime.command(other, "/link WRONG999") == linking.REFUSED
    assert "Linked" in await runtime.command(other, f"/link {code}")

    def failures(conn: Any, user: str) -> int:
        return int(
            conn.execute("SELECT count(*) FROM link_failures WHERE platform_user_id = ?", (user,)).fetchone()[
                0
            ]
        )

    agent = await runtime.find_agent("discord", "5151")
    assert agent is not None and await runtime.db.read(failures, "5151") == 1
    await controls.forget(runtime, agent.id)  # forgetting the person forgets their wrong guesses too
    assert (
        await runtime.db.read(failures, "5151") == 0
        and await runtime.db.read(failures, "4242") >= linking.MAX_FAILURES
    )


def test_merged_core_memory_that_does_not_fit_and_summaries_become_passages():
    kept = [Block("human", "", "Name: ann\nlikes tea", 40, "", "private"), Block("persona", "", "P", 100, "")]
    merged = [
        Block("human", "", "likes coffee and biscuits here", 40, "", "private"),  # too long
        Block("human", "", "likes a very long list of things", 40, "", "public"),  # no such block
        Block("persona", "", "P", 100, ""),
        Block("notes", "", "x" * 50, 100, ""),
    ]
    to_do = linking.plan(kept, merged, ("we talked about boats", ""))
    assert to_do.writes == ()
    assert len(to_do.keep) == 4 and any("boats" in k for k in to_do.keep)
    assert any("coffee" in k for k in to_do.keep) and any("x" * 50 in k for k in to_do.keep)
    already = Block("human", "", "Name: ann", 40, "", "private")  # already there: dropped
    assert linking.plan(kept, [already], ("", "")) == linking.Plan((), ())
    fits = linking.plan(kept, [Block("human", "", "likes jam", 40, "", "private")], ("", ""))
    assert fits.writes == (("private", "human", "Name: ann\nlikes tea\nlikes jam"),) and fits.keep == ()


def test_a_code_from_one_process_links_in_another(fake_server, tmp_path: Path):
    fake = fake_server(remembering)
    first = run_chat(fake, tmp_path, "ann", lines("ann says termword1", "/link")).stdout.decode()
    code = code_in(first)
    second = run_chat(fake, tmp_path, "ann2", lines("ann2 says otherword1", f"/link {code}")).stdout.decode()
    assert "Linked: your terminal account now shares memory with terminal user ann" in second
    [(a,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'ann'")
    [(b,)] = query(tmp_path, "SELECT agent_id FROM identities WHERE platform_user_id = 'ann2'")
    assert a == b
    texts = [t for (t,) in query(tmp_path, "SELECT content FROM passages WHERE agent_id = ?", a)]
    assert any("termword1" in t for t in texts) and any("otherword1" in t for t in texts)
    [(stored,)] = query(tmp_path, "SELECT code_hash FROM link_codes")
    assert code not in stored and len(stored) == 64
