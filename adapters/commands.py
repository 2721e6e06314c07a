"""The `membot` commands: chat, discord, slack, run, eval, reembed.

Settings are read and logging set up first (bot/logs.py); a command that writes memory then
checks that the database can be written before anything else starts, so a read-only file, a
full disk or a MEMBOT_DB that cannot be created is one line naming the fix and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from adapters import evaluate
from bot import logs
from bot.errors import ConfigError, MembotError, StorageError
from bot.runtime import check_database
from bot.settings import Settings, load_settings

WRITERS = ("chat", "discord", "slack", "run", "reembed")
NEED_MODEL = ("chat", "discord", "slack", "run")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="membot", description="A chat bot that never forgets.")
    parser.add_argument("--env-file", default=".env", help="settings file to read (default .env)")
    commands = parser.add_subparsers(dest="command")
    chat = commands.add_parser("chat", help="chat in this terminal (the default)")
    chat.add_argument("--user", default=None, help="whose agent to talk to (default: your login name)")
    chat.add_argument("--verbose", action="store_true", help="show inner monologue and tool calls on stderr")
    commands.add_parser("discord", help="run the Discord bot")
    commands.add_parser("slack", help="run the Slack bot")
    commands.add_parser("run", help="run every platform that has a token set")
    evaluate.add_parser(commands)
    commands.add_parser("reembed", help="re-embed all memory with MEMBOT_EMBEDDER")
    return parser


async def _chat(settings: Settings, user: str, verbose: bool) -> int:
    from adapters.terminal import chat
    from bot.runtime import Runtime

    runtime = await Runtime.start(settings)
    try:
        return await chat(runtime, user, verbose, sys.stdin, sys.stdout, sys.stderr)
    finally:
        await runtime.close()


async def _reembed(settings: Settings) -> int:
    from bot.reembed import reembed

    await reembed(settings, report=lambda line: print(line, file=sys.stderr))
    return 0


def _prepare(settings: Settings, command: str) -> None:
    """Fail early, in one line: no key for OpenAI's endpoint, a database that cannot be written."""
    if command in NEED_MODEL:
        settings.llm_api_key()
    if command in WRITERS:
        check_database(settings)


def run(argv: list[str] | None = None) -> int:
    """Run one `membot` command; its errors are one line on stderr and exit code 1."""
    args = _parser().parse_args(argv)
    command = args.command or "chat"
    verbose = bool(getattr(args, "verbose", False))
    try:
        settings = load_settings(dotenv_path=args.env_file)
        logs.setup(settings, quiet=command in ("chat", "eval") and not verbose)
        _prepare(settings, command)
        if command == "chat":
            user = getattr(args, "user", None) or getpass.getuser()
            return asyncio.run(_chat(settings, user, verbose))
        if command == "reembed":
            return asyncio.run(_reembed(settings))
        if command == "eval":
            return asyncio.run(evaluate.run(settings, args))
        print(f"membot {command}: not available in this version yet; use `membot chat`.", file=sys.stderr)
        return 2
    except (ConfigError, StorageError, MembotError) as exc:
        print(f"membot: {exc}", file=sys.stderr)
        return 1
