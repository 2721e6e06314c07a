"""Documents larger than the window: loading, idempotence, bad input, search with sources, reading on,
chat attachments, and `membot load` as a process.

Through the real loader, extractors, chunker, embedder (WordLlama) and SQLite file; the model is
the scripted fake on 127.0.0.1. PDFs are written by hand (tests/pdf.py); HTML is inline.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader, PdfWriter

from bot.errors import InvalidInput
from bot.events import Attachment, Event
from bot.loading import load, remove, size_text
from bot.memory import AgentMemory, Scope
from bot.memory_tools import registry
from bot.tokens import count_text
from bot.tools import Address, ToolContext
from storage import documents, lifecycle
from tests.fake_openai import Answer, FakeOpenAI, call, last_message, say
from tests.pdf import make_pdf
from tests.platform import CHANNEL, dm
from tests.test_service import heard
from tests.test_terminal_chat import TIMEOUT, environment, query, run_chat

GUIDE = """# Garden guide

Tomatoes want sun and a deep weekly watering.

## Pests

Aphids gather under the leaves; a jet of water knocks them off.

### Slugs

Beer traps catch slugs overnight.
"""
PAGE = """<!doctype html><html><head><title>Recipes</title><style>p { color: red }</style>
<script>alert("never stored")</script></head><body>
<h1>Soup</h1><p>Simmer the <b>lentils</b> for twenty minutes.</p>
<div><h2>Serving</h2><ul><li>Lemon juice</li><li>Fresh parsley</li></ul></div>
<noscript>enable javascript</noscript></body></html>
"""
REPORT = [
    ["Annual report", "", "Revenue grew by a third over the year."],
    ["Outlook", "", "The teal division opens a second workshop in spring."],
]


def folder(root: Path) -> Path:
    docs = root / "docs"
    (docs / "kitchen").mkdir(parents=True)
    (docs / "guide.md").write_text(GUIDE)
    (docs / "kitchen" / "soup.html").write_text(PAGE)
    (docs / "notes.txt").write_text("Call the plumber on Monday.\n\nThe boiler code is 7731.\n")
    (docs / "report.pdf").write_bytes(make_pdf(REPORT))
    (docs / ".hidden.md").write_text("never loaded")
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return docs


async def memory_of(runtime: Any, user: str = "ann", private: bool = True) -> AgentMemory:
    agent = await runtime.agent_for("terminal", user, user.title())
    conversation = await runtime.db.run(runtime.reception.conversation, dm(user, "").conversation)
    return runtime.memory(agent, Scope(conversation, private))


def rows(memory: AgentMemory, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    def read(conn: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]

    return memory.db.call_read(read)


async def test_a_folder_of_every_format_loads_with_document_position_and_section(
    fake_server, runtime_for, tmp_path
):
    runtime = await runtime_for(fake_server())
    memory = await memory_of(runtime)
    docs = folder(tmp_path)
    for name in ("guide.md", "kitchen/soup.html", "notes.txt", "report.pdf"):
        loaded = await load(memory, docs / name, name, origin=str(docs / name))
        assert loaded.status == "loaded" and loaded.passages >= 1
    stored = rows(
        memory,
        "SELECT d.name, d.kind, p.position, p.section, p.content FROM passages AS p "
        "JOIN documents AS d ON d.id = p.document_id ORDER BY d.id, p.position",
    )
    by_doc: dict[str, list[tuple[Any, ...]]] = {}
    for name, kind, position, section, content in stored:
        by_doc.setdefault(name, []).append((kind, position, section, content))
    guide = by_doc["guide.md"]
    assert [(p, s) for _, p, s, _ in guide] == [
        (1, "Garden guide"),
        (2, "Garden guide > Pests"),
        (3, "Garden guide > Pests > Slugs"),
    ]
    assert guide[2][3] == "Beer traps catch slugs overnight." and guide[0][0] == "markdown"
    soup = by_doc["kitchen/soup.html"]
    assert [s for _, _, s, _ in soup] == ["Soup", "Soup > Serving"]
    assert "Simmer the lentils for twenty minutes." in soup[0][3] and "Fresh parsley" in soup[1][3]
    html_text = " ".join(c for *_, c in soup)
    assert "alert" not in html_text and "color" not in html_text and "javascript" not in html_text
    report = by_doc["report.pdf"]
    assert [(k, s) for k, _, s, _ in report] == [("pdf", "page 1"), ("pdf", "page 2")]
    assert "teal division opens a second workshop" in report[1][3]
    assert by_doc["notes.txt"][0][3] == "Call the plumber on Monday.\n\nThe boiler code is 7731."
    assert (await memory.stats()).archival_passages == len(stored)


async def test_the_same_file_again_is_stored_once_and_a_changed_file_replaces_its_passages(
    fake_server, runtime_for, tmp_path
):
    runtime = await runtime_for(fake_server())
    memory = await memory_of(runtime)
    path = tmp_path / "guide.md"
    path.write_text(GUIDE)
    first = await load(memory, path, "guide.md", origin=str(path))
    again = await load(memory, path, "guide.md", origin=str(path))
    renamed = await load(memory, path.read_bytes(), "copy of guide.md", origin="elsewhere")
    assert (again.status, renamed.status) == ("unchanged", "unchanged")
    assert again.document.id == renamed.document.id == first.document.id
    assert (await memory.stats()).archival_passages == 3

    path.write_text(GUIDE.replace("Beer traps", "Copper tape").replace("weekly", "daily"))
    changed = await load(memory, path, "guide.md", origin=str(path))
    assert (changed.status, changed.replaced, changed.passages) == ("replaced", 3, 3)
    assert rows(memory, "SELECT count(*) FROM documents") == [(1,)]
    assert rows(memory, "SELECT count(*) FROM passages") == [(3,)]
    assert rows(memory, "SELECT count(*) FROM passages_vec WHERE agent_id = ?", memory.agent_id) == [(3,)]
    found = [p.content for p in await memory.search_passages("beer traps slugs", 5)]
    assert not any("Beer" in text for text in found) and any("Copper tape" in text for text in found)


def encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BAD = [
    ("empty.txt", b"", "empty.txt is empty"),
    ("blank.md", b"  \n\n \t\n", "blank.md is empty"),
    ("tool.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00" * 20, "tool.txt is a binary file"),
    ("latin.txt", "Caf\xe9 cr\xe8me".encode("latin-1"), "latin.txt is not UTF-8 text"),
    ("secret.pdf", encrypted_pdf(), "secret.pdf is an encrypted PDF"),
    ("scan.pdf", None, "scan.pdf has no text layer"),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "broken.pdf is not a PDF I can read"),
    ("letter.docx", b"PK\x03\x04 zipped", "letter.docx is not a format I read"),
    ("huge.txt", b"x" * 2048, "huge.txt is 2 kB, over the 1 kB I load"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_one_clear_message_and_nothing_is_stored(
    fake_server, runtime_for, name, data, message
):
    if data is None:
        writer = PdfWriter()
        writer.add_blank_page(200, 200)
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    runtime = await runtime_for(fake_server())
    memory = await memory_of(runtime)
    with pytest.raises(InvalidInput) as caught:
        await load(memory, data, name, max_bytes=1000)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert rows(memory, "SELECT count(*) FROM documents") == [(0,)]
    assert rows(memory, "SELECT count(*) FROM passages") == [(0,)]


WORDS = [a + b + c for a in "bdfgklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "l")]


def long_document(tokens: int, needle: str) -> str:
    """Markdown of about `tokens` tokens of pseudo-words in chapters; `needle` in the middle one."""
    rng = random.Random(11)
    chapters, chapter = [], 0
    while sum(count_text(c) for c in chapters[-1:]) == 0 or count_text("\n".join(chapters)) < tokens:
        chapter += 1
        paragraphs = [" ".join(rng.choices(WORDS, k=rng.randint(40, 90))) + "." for _ in range(12)]
        chapters.append(f"## Chapter {chapter}\n\n" + "\n\n".join(paragraphs))
    middle = len(chapters) // 2
    chapters[middle] = chapters[middle].replace("\n\n", f"\n\n{needle}\n\n", 1)
    return "# The keeper's log\n\n" + "\n\n".join(chapters)


NEEDLE = "The lighthouse keeper hides the spare key under the blue stone by the north gate."
CITATION = re.compile(r"\[document (\d+) '([^']+)', passage (\d+) of (\d+)(?:, in ([^\]]+))?\] (.*)")


def tool_text(request: dict[str, Any]) -> str:
    """A tool result's message (one cut to fit a small window is no longer whole JSON)."""
    content = str(last_message(request)["content"])
    try:
        return str(json.loads(content)["message"])
    except ValueError:
        body = re.sub(r'^\{"status": "\w+", "message": "', "", content)
        return body.replace("\\n", "\n").replace('\\"', '"')


def researcher(request: dict[str, Any]) -> Answer:
    """Searches, reads on from the best hit, then answers citing it."""
    if not request.get("tools"):
        return Answer(content="Summary: the person asked about a key.")
    if last_message(request)["role"] == "user":
        return call("archival_memory_search", query="spare key of the lighthouse", request_heartbeat=True)
    text = tool_text(request)
    if text.startswith("Showing passages"):
        hit = CITATION.search(text.splitlines()[1])
        assert hit is not None, text
        return call(
            "archival_memory_read", document=int(hit[1]), position=int(hit[3]), request_heartbeat=True
        )
    if text.startswith("Document"):
        [line] = [line for line in text.splitlines() if "spare key" in line]
        position = re.match(r"\[passage (\d+)", line)
        assert position is not None
        where = re.match(r"Document (\d+) '([^']+)'", text)
        assert where is not None
        return say(f"Under the blue stone by the north gate ({where[2]}, passage {position[1]}).")
    return Answer(content="done")


async def test_a_search_finds_the_passage_in_a_document_twenty_times_the_window_and_the_reply_cites_it(
    fake_server, runtime_for, tmp_path
):
    fake = fake_server(researcher)
    runtime = await runtime_for(fake, MEMBOT_CONTEXT_WINDOW="2000")
    text = long_document(20 * 2000, NEEDLE)
    assert count_text(text) >= 20 * 2000
    path = tmp_path / "log.md"
    path.write_text(text)
    memory = await memory_of(runtime)
    reported: list[tuple[int, int]] = []
    loaded = await load(
        memory, path, "log.md", origin=str(path), progress=lambda d, t: reported.append((d, t))
    )
    assert loaded.passages > 50 and reported[-1] == (loaded.passages, loaded.passages)
    [needle_at] = rows(memory, "SELECT position, section FROM passages WHERE content LIKE '%spare key%'")

    turn = await runtime.handle(Event.direct("terminal", "ann", "Where is the spare key?", "Ann"))
    assert turn.replies == [f"Under the blue stone by the north gate (log.md, passage {needle_at[0]})."]
    search_result = tool_text(fake.agent_requests[1])
    first_hit = CITATION.search(search_result.splitlines()[1])
    assert first_hit is not None and NEEDLE in first_hit[6]
    assert (first_hit[2], int(first_hit[3]), first_hit[5]) == ("log.md", *needle_at)
    assert needle_at[1].startswith("The keeper's log > Chapter ")
    biggest = max(len(json.dumps(r["messages"])) for r in fake.agent_requests)
    assert biggest < len(text) / 10  # the document never went into the context window


def context(memory: AgentMemory) -> ToolContext:
    return ToolContext(memory, Address(memory.scope.conversation_id or 0, "terminal", "ann"))


async def read(memory: AgentMemory, **arguments: Any) -> tuple[bool, str]:
    outcome = await registry().call(context(memory), "archival_memory_read", json.dumps(arguments))
    return outcome.ok, json.loads(outcome.content)["message"]


async def test_reading_on_pages_through_a_document_forwards_and_back(fake_server, runtime_for):
    runtime = await runtime_for(fake_server())
    memory = await memory_of(runtime)
    text = "\n\n".join(f"Paragraph {n} " + "word " * 150 for n in range(1, 21))
    loaded = await load(memory, text.encode(), "long.txt")
    total = loaded.passages
    assert total == 20
    ok, page0 = await read(memory, document=loaded.document.id, position=10)
    assert ok and page0.startswith(
        f"Document {loaded.document.id} 'long.txt' (text, 20 passages), passages 9-11:"
    )
    assert [int(n) for n in re.findall(r"\[passage (\d+)\] Paragraph (\d+)", page0)[0]] == [9, 9]
    assert "page=-1 for what comes before or page=1 for what follows" in page0
    ok, page1 = await read(memory, document="long.txt", position=10, page=1)
    assert ok and "passages 12-14:" in page1
    ok, back = await read(memory, document=str(loaded.document.id), position=10, page=-3)
    assert ok and "passages 1-2:" in back and "comes before" not in back
    ok, end = await read(memory, document=loaded.document.id, position=20)
    assert ok and "passages 19-20:" in end and "follows" not in end
    ok, outside = await read(memory, document=loaded.document.id, position=10, page=5)
    assert not ok and "has passages 1-20" in outside
    ok, unknown = await read(memory, document="nope.md", position=1)
    assert not ok and "There is no document 'nope.md'" in unknown and "long.txt" in unknown


async def test_a_private_document_is_never_found_or_read_in_public(fake_server, runtime_for):
    runtime = await runtime_for(fake_server())
    private = await memory_of(runtime)
    loaded = await load(private, b"The vault combination is 4417 and only Ann knows it.", "vault.txt")
    agent = private.agent
    channel = await runtime.db.run(runtime.reception.conversation, CHANNEL)
    public = runtime.memory(agent, Scope(channel, private=False))
    assert await public.search_passages("vault combination", 5) == []
    ok, message = await read(public, document=loaded.document.id, position=1)
    assert not ok and "There is no document" in message and "vault.txt" not in message
    shared = await load(public, b"The picnic is on Saturday at the lake.", "picnic.txt")
    assert [p.content for p in await private.search_passages("picnic lake", 1)] == [
        "The picnic is on Saturday at the lake."
    ]
    assert shared.document.private is False
    assert await remove(public, "vault.txt") == []  # not visible in public: not removable there


async def test_forgetting_an_agent_deletes_its_documents_and_their_vectors(fake_server, runtime_for):
    runtime = await runtime_for(fake_server())
    memory = await memory_of(runtime)
    await load(memory, GUIDE.encode(), "guide.md")
    other = await memory_of(runtime, "bob")
    await load(other, GUIDE.encode(), "guide.md")
    await runtime.db.run(lifecycle.delete_agent, memory.agent_id)
    assert rows(other, "SELECT agent_id, count(*) FROM documents GROUP BY agent_id") == [(other.agent_id, 1)]
    assert rows(other, "SELECT count(*) FROM passages_vec WHERE agent_id = ?", memory.agent_id) == [(0,)]
    assert await runtime.db.read(documents.list_for, memory.agent_id) == []


def attached(name: str, data: bytes, media_type: str = "text/plain") -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(name, len(data), media_type, fetch)


async def test_an_attachment_is_loaded_into_archival_memory_in_the_conversations_scope(
    fake_server, runtime_for
):
    runtime = await runtime_for(fake_server(heard), MEMBOT_ATTACHMENT_MAX_BYTES="4000")
    base = dm("ann", "here is the report")
    pdf = make_pdf(REPORT)
    event = Event(
        base.person,
        base.conversation,
        base.text,
        attachments=(attached("report.pdf", pdf, "application/pdf"), attached("big.txt", b"y" * 5000)),
    )
    [reply] = (await runtime.handle(event)).replies
    assert (
        f"[file report.pdf ({size_text(len(pdf))}) loaded into your archival memory as document 1, 2 passages"
        in reply
    )
    assert "big.txt: 5 kB, over the 4 kB I load; not loaded" in reply
    assert "teal division" not in reply  # the file's text is not in the message
    [agent_id] = runtime.reception.agents.values()
    agent = await runtime.db.read(documents.list_for, agent_id)
    assert [(d.name, d.origin, d.private) for d in agent] == [("report.pdf", "chat:chat", True)]

    again = Event(base.person, CHANNEL, "same file, in public", attachments=(attached("report.pdf", pdf),))
    [public_reply] = (await runtime.handle(again)).replies
    assert "loaded into your archival memory as document 2" in public_reply  # the private copy is unseen here
    bad = Event(
        base.person,
        base.conversation,
        "",
        attachments=(attached("notes.txt", "Gr\xfc\xdfe".encode("latin-1")),),
    )
    [bad_reply] = (await runtime.handle(bad)).replies
    assert "[file notes.txt: not loaded: notes.txt is not UTF-8 text" in bad_reply


# `membot load` as a process


def membot(home: Path, fake: FakeOpenAI, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "load", *args],
        capture_output=True,
        text=True,
        env=environment(fake, home),
        cwd=home,
        timeout=TIMEOUT,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_membot_load_loads_a_folder_reports_each_file_and_chat_sees_it(tmp_path):
    docs = folder(tmp_path)
    with FakeOpenAI(heard) as fake:
        first = membot(tmp_path, fake, str(docs), "--user", "ann")
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [
            "loaded    docs/guide.md: 3 passages",
            "loaded    docs/kitchen/soup.html: 2 passages",
            "loaded    docs/notes.txt: 1 passages",
            "loaded    docs/report.pdf: 2 passages",
            "4 files: 4 loaded; 8 new passages",
        ]
        (docs / "notes.txt").write_text("Call the plumber on Tuesday instead.\n")
        (docs / "empty.md").write_text("")
        huge = tmp_path / "huge.txt"
        with huge.open("wb") as handle:
            handle.truncate(200 * 1024 * 1024)  # 200 MB, sparse: nothing is written
        second = membot(tmp_path, fake, str(docs), str(huge), str(tmp_path / "missing.md"), "--user", "ann")
        assert second.returncode == 1
        assert second.stdout.splitlines() == [
            "unchanged docs/guide.md: 3 passages (already loaded)",
            "unchanged docs/kitchen/soup.html: 2 passages (already loaded)",
            "replaced  docs/notes.txt: 1 passages (the earlier version's 1 removed)",
            "unchanged docs/report.pdf: 2 passages (already loaded)",
            "7 files: 1 replaced, 3 unchanged, 3 failed; 1 new passages",
        ]
        assert second.stderr.splitlines() == [
            "membot load: docs/empty.md is empty: there is nothing to load.",
            "membot load: huge.txt is 209.7 MB, over the 52.4 MB I load: split it into smaller files.",
            "membot load: missing.md cannot be read (No such file or directory): check it exists and you may read it.",
        ]
        removed = membot(tmp_path, fake, "--remove", "docs/kitchen/soup.html", "--list", "--user", "ann")
        assert removed.returncode == 0, removed.stderr
        listed = removed.stdout.splitlines()
        assert listed[0] == "removed   docs/kitchen/soup.html: 2 passages"
        assert [line.split()[1] for line in listed[1:]] == [
            "docs/guide.md",
            "docs/report.pdf",
            "docs/notes.txt",
        ]
        assert query(tmp_path, "SELECT count(*) FROM passages") == [(6,)]
        chat = run_chat(fake, tmp_path, "ann", "/memory\n")
    out = chat.stdout.decode()
    assert "archival memory: 6 passages" in out
    assert (
        "documents: 3 loaded: docs/guide.md (3 passages), docs/report.pdf (2 passages), docs/notes.txt (1 passages)"
        in out
    )
    assert os.path.getsize(huge) == 200 * 1024 * 1024


async def test_a_pdf_locked_only_against_printing_still_loads(fake_server, runtime_for):
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(REPORT))))
    writer.encrypt(user_password="", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    runtime = await runtime_for(fake_server())
    loaded = await load(await memory_of(runtime), out.getvalue(), "locked.pdf")
    assert (loaded.status, loaded.passages) == ("loaded", 2)
