"""Terminal chat: `membot chat --user NAME`, for local use, demos and scripted runs.

A private conversation with one person. Reads lines from stdin (a terminal or a pipe); each
message the agent sends is printed to stdout the moment it is sent, one block per message
(control characters and escape sequences removed); inner monologue and tool activity go to
stderr with --verbose. `/memory` shows the core memory blocks and statistics, `/timezone ZONE`
sets the person's time zone, `/exit` (or end of input) quits.
"""

from __future__ import annotations

import asyncio
import re
from typing import TextIO

from bot.events import Conversation, Event, Outgoing, Person, SenderClosed
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
    answer = await runtime.command(Person(PLATFORM, user, user), text)
    if answer is None:
        return False
    out.write(printable(answer) + "\n")
    out.flush()
    return True


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
