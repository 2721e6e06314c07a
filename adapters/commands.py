"""The `membot` commands: chat, discord, slack, run, eval, reembed, migrate-db.

`discord`, `slack` and `run` are long-running services: one runtime, the scheduler, and each
platform's `serve(runtime, stopping)`; SIGINT or SIGTERM sets `stopping`, every platform stops
taking events, turns under way get MEMBOT_SHUTDOWN_GRACE seconds (`Runtime.drain`), and the exit
code is 0. A platform that fails to start (a wrong token) stops the others: one line, exit 1.

Settings are read and logging set up first (bot/logs.py); a command that writes memory then
checks that the database can be written before anything else starts, so a read-only file, a
full disk or a MEMBOT_DB that cannot be created is one line naming the fix and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from adapters import admin, evaluate, load
from bot import logs
from bot.errors import ConfigError, MembotError, StorageError
from bot.runtime import check_database
from bot.settings import Settings, load_settings

log = logging.getLogger("membot")

WRITERS = ("chat", "discord", "slack", "run", "reembed", "import", "forget", "load")
SERVICES = ("discord", "slack", "run")
Serve = Callable[[Any, asyncio.Event], Coroutine[Any, Any, None]]  # (runtime, stopping)
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
    load.add_parser(commands)
    commands.add_parser("reembed", help="re-embed all memory with MEMBOT_EMBEDDER")
    copy = commands.add_parser(
        "migrate-db", help="copy every row of one database into another (stop the bot first)"
    )
    copy.add_argument("source", help="the database to copy: a SQLite file or a postgresql:// URL")
    copy.add_argument("target", help="where to copy it: a SQLite file or a postgresql:// URL")
    admin.add_parsers(commands)
    return parser


async def _chat(settings: Settings, user: str, verbose: bool) -> int:
    from adapters.terminal import chat
    from bot.runtime import Runtime
    from bot.scheduler import Scheduler

    runtime = await Runtime.start(settings)
    scheduler = Scheduler(runtime)
    try:
        await scheduler.start()
        return await chat(runtime, user, verbose, sys.stdin, sys.stdout, sys.stderr)
    finally:
        await scheduler.close()
        await runtime.close()


def _platforms(settings: Settings, command: str) -> dict[str, Serve]:
    """The platforms `command` runs: `run` takes every one whose credentials are set."""
    found: dict[str, Serve] = {}
    if command in ("discord", "run") and (settings.discord_token or command == "discord"):
        if not settings.discord_token:
            raise ConfigError("DISCORD_TOKEN is not set: put the bot token in .env (README, Run on Discord).")
        from adapters.discord_bot import serve as serve_discord

        found["discord"] = serve_discord
    if command in ("slack", "run") and (settings.slack_bot_token or command == "slack"):
        if not settings.slack_bot_token:
            raise ConfigError(
                "SLACK_BOT_TOKEN is not set: put the xoxb- token in .env (README, Run on Slack)."
            )
        from adapters.slack_app import serve as serve_slack

        found["slack"] = serve_slack
    if not found:
        raise ConfigError(
            "no platform is configured: set DISCORD_TOKEN and/or SLACK_BOT_TOKEN in .env, "
            "or use `membot chat` in the terminal."
        )
    return found


async def _service(settings: Settings, platforms: dict[str, Serve]) -> int:
    """Run `platforms` and the scheduler on one runtime until SIGINT/SIGTERM."""
    from bot.runtime import Runtime
    from bot.scheduler import Scheduler

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    runtime = await Runtime.start(settings)
    scheduler = Scheduler(runtime)
    tasks: dict[asyncio.Task[None], str] = {
        asyncio.create_task(serve(runtime, stopping), name=name): name for name, serve in platforms.items()
    }
    try:
        await scheduler.start()
        log.info("membot is running: %s (stop with Ctrl-C)", ", ".join(platforms))
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopping.set()  # a platform ended (failed to start, or lost for good): stop the others too
        await scheduler.close()
        await asyncio.wait(tasks, timeout=settings.shutdown_grace + 30)
        await runtime.drain(settings.shutdown_grace)
        for task, name in tasks.items():
            if not task.done():
                log.warning("%s did not stop in time; cutting it off", name)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("membot stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await scheduler.close()
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
        logs.setup(
            settings, quiet=command in ("chat", "eval", "load", "migrate-db", *admin.COMMANDS) and not verbose
        )
        _prepare(settings, command)
        if command == "chat":
            user = getattr(args, "user", None) or getpass.getuser()
            return asyncio.run(_chat(settings, user, verbose))
        if command == "reembed":
            return asyncio.run(_reembed(settings))
        if command == "migrate-db":
            from bot import migrate_db

            return migrate_db.run(args.source, args.target, settings.db_lock_wait, sys.stdout, sys.stderr)
        if command in admin.COMMANDS:
            return admin.run(settings, args)
        if command == "load":
            return asyncio.run(load.run(settings, args))
        if command == "eval":
            return asyncio.run(evaluate.run(settings, args))
        return asyncio.run(_service(settings, _platforms(settings, command)))
    except (ConfigError, StorageError, MembotError) as exc:
        print(f"membot: {exc}", file=sys.stderr)
        return 1
