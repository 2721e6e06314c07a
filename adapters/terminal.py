"""Terminal chat: `membot chat --user NAME`, for local use, demos and scripted runs.

A private conversation with one person. Reads lines from stdin (a terminal or a pipe); each
message the agent sends is printed to stdout the moment it is sent, one block per message
(control characters and escape sequences removed); inner monologue and tool activity go to
stderr with --verbose. `/memory` shows the core memory blocks and statistics, `/timezone ZONE`
sets the person's time zone, `/exit` (or end of input) quits. `/export` writes the export file
into the current directory (readable by its owner only, mode 0600) and prints its path;
`/import PATH` hands that file back to the core, as a platform hands it an attachment.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TextIO

from bot.events import Attachment, Conversation, Event, File, Outgoing, Person, SenderClosed
from bot.runtime import Runtime

PLATFORM = "terminal"
# ANSI/VT escape sequences (CSI, OSC, other ESC sequences) and the C0/C1 controls but tab and newline
UNPRINTABLE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def printable(text: str) -> str:
    """`text` without anything that would steer the terminal (clear screen, window title, ...)."""
    return UNPRINTABLE.sub("", text)


class TerminalSender:
    """Prints the agent's messages as they are sent."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.closed = False

    async def send(self, message: Outgoing) -> None:
        try:
            self.out.write(printable(message.text) + "\n\n")
            self.out.flush()
        except (BrokenPipeError, ValueError) as exc:  # the reader went away (`membot chat | head`)
            self.closed = True
            raise SenderClosed("the terminal's output is closed") from exc

    async def turn_started(self, conversation: Conversation) -> None:
        return None

    async def turn_ended(self, conversation: Conversation) -> None:
        return None


async def command(runtime: Runtime, user: str, text: str, out: TextIO) -> bool:
    """Run a /command; False if `text` is not one."""
    if not runtime.is_command(text):
        return False
    name, _, argument = text.strip().partition(" ")
    files: tuple[Attachment, ...] = ()
    if name.lower() == "/import":
        if not argument.strip():
            out.write("Usage: /import PATH (a file that /export or `membot export` wrote).\n")
            out.flush()
            return True
        try:
            files = (await asyncio.to_thread(_attachment, argument.strip()),)
        except OSError as exc:
            out.write(f"Cannot read {argument.strip()}: {exc.strerror or exc}.\n")
            out.flush()
            return True
    answer = await runtime.answer(Person(PLATFORM, user, user), text, files)
    if answer is None:
        return False
    lines = [answer.text]
    for file in answer.files:
        try:
            lines.append(f"Wrote {await asyncio.to_thread(save, file, Path.cwd())}")
        except OSError as exc:
            lines.append(f"Could not write {file.name} here: {exc.strerror or exc}.")
    out.write("".join(printable(line) + "\n" for line in lines))
    out.flush()
    return True


def _attachment(name: str) -> Attachment:
    """A local file as the core takes an attachment (its bytes read only if the core wants them)."""
    path = Path(name).expanduser()
    size = path.stat().st_size
    if not path.is_file():
        raise IsADirectoryError(21, "not a file")

    async def read() -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    return Attachment(path.name, size, "application/json", read)


def save(file: File, folder: Path) -> Path:
    """Write `file` into `folder` for its owner alone (0600), never over an existing file."""
    stem, dot, suffix = file.name.rpartition(".")
    for number in range(100):
        path = folder / (file.name if number == 0 else f"{stem}-{number}{dot}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(file.data)
        return path
    raise FileExistsError(17, "too many files of that name")


async def chat(runtime: Runtime, user: str, verbose: bool, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    interactive = stdin.isatty()
    loop = asyncio.get_running_loop()
    conversation = Conversation.direct(PLATFORM, user)
    sender = TerminalSender(out)
    await runtime.register_sender(PLATFORM, sender, channels={conversation.channel_id})
    await runtime.recover(lambda event: event.conversation.channel_id == conversation.channel_id)
    person = Person(PLATFORM, user, user)
    if interactive:
        err.write(f"membot: chatting as {user!r}. {await runtime.command(person, '/help')} /exit quits.\n")
    try:
        while True:
            if interactive:
                err.write("you> ")
                err.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                return 0
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if text.strip().lower() in {"/exit", "/quit"}:
                return 0
            if await command(runtime, user, text, out):
                continue
            turn = await runtime.handle(Event(person, conversation, text))
            if verbose:
                for line_ in turn.activity:
                    err.write(f"  · {line_}\n")
                err.flush()
            await runtime.delivery.idle(5.0)
            if sender.closed:
                raise BrokenPipeError("the output was closed")
    finally:
        await runtime.delivery.idle(5.0)
