"""Terminal chat: `membot chat --user NAME`, for local use, demos and scripted runs.

Reads lines from stdin (a terminal or a pipe); prints what the agent sends with send_message to
stdout, one block per message; inner monologue and tool activity go to stderr with --verbose.
`/memory` shows the core memory blocks and statistics, `/exit` (or end of input) quits.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from bot.runtime import Incoming, Runtime

PLATFORM = "terminal"
HELP = "Commands: /memory shows what I remember, /exit quits."


async def show_memory(runtime: Runtime, user: str, out: TextIO) -> None:
    memory = runtime.memory(await runtime.agent_for(PLATFORM, user, user))
    for block in await memory.blocks():
        out.write(f"[{block.label}] {len(block.value)}/{block.char_limit} chars - {block.description}\n")
        out.write((block.value or "(empty)") + "\n\n")
    stats = await memory.stats()
    agent = await memory.refresh()
    out.write(
        f"recall memory: {stats.recall_messages} messages; archival memory: {stats.archival_passages} "
        f"passages; summary covers {agent.summary_covers} messages; time zone {agent.timezone}\n"
    )
    out.flush()


async def chat(runtime: Runtime, user: str, verbose: bool, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    interactive = stdin.isatty()
    loop = asyncio.get_running_loop()
    if interactive:
        err.write(f"membot: chatting as {user!r}. {HELP}\n")
    while True:
        if interactive:
            err.write("you> ")
            err.flush()
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        command = text.strip().lower()
        if command in {"/exit", "/quit"}:
            return 0
        if command == "/memory":
            await show_memory(runtime, user, out)
            continue
        if command == "/help":
            out.write(HELP + "\n")
            continue
        turn = await runtime.handle(Incoming(PLATFORM, user, text, user_name=user))
        if verbose:
            for line_ in turn.activity:
                err.write(f"  · {line_}\n")
            err.flush()
        for reply in turn.replies:
            out.write(reply + "\n\n")
        out.flush()
