"""The `membot` command: chat, discord, slack, run, eval, reembed."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

from adapters import evaluate
from bot.errors import ConfigError, MembotError
from bot.settings import Settings, load_settings
from storage.errors import StorageError

log = logging.getLogger("membot")


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


def _logging(settings: Settings, quiet: bool) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    if quiet:
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


async def _chat(settings: Settings, user: str, verbose: bool) -> int:
    from adapters.terminal import chat
    from bot.runtime import Runtime

    settings.llm_api_key()  # fail early, in one line, when no key is set for OpenAI's endpoint
    runtime = await Runtime.start(settings)
    try:
        return await chat(runtime, user, verbose, sys.stdin, sys.stdout, sys.stderr)
    finally:
        await runtime.close()


async def _reembed(settings: Settings) -> int:
    from bot.reembed import reembed

    await reembed(settings, report=lambda line: print(line, file=sys.stderr))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "chat"
    try:
        settings = load_settings(dotenv_path=args.env_file)
        _logging(settings, quiet=command in ("chat", "eval") and not getattr(args, "verbose", False))
        if command == "chat":
            user = getattr(args, "user", None) or getpass.getuser()
            return asyncio.run(_chat(settings, user, getattr(args, "verbose", False)))
        if command == "reembed":
            return asyncio.run(_reembed(settings))
        if command == "eval":
            return asyncio.run(evaluate.run(settings, args))
        print(f"membot {command}: not available in this version yet; use `membot chat`.", file=sys.stderr)
        return 2
    except (ConfigError, StorageError, MembotError) as exc:
        print(f"membot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
