"""The operator's commands: `membot agents`, `memory`, `export`, `import`, `forget`.

A person is named as in `membot chat`: `--user NAME` and `--platform P` (default terminal; for
Discord the user id, for Slack TEAM:USER). Output is plain text on stdout (JSON for export),
errors one line on stderr. Exit codes: 0 done, 1 refused or failed, 2 `forget` without `--yes`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bot import controls
from bot.errors import InvalidInput
from bot.events import Person
from bot.runtime import Runtime
from bot.settings import Settings

COMMANDS = ("agents", "memory", "export", "import", "forget")
READERS = ("agents", "memory", "export")  # need an existing database


def add_parsers(commands: Any) -> None:
    commands.add_parser("agents", help="list every agent: accounts, counts, last active")
    memory = commands.add_parser("memory", help="show one person's core memory and counts")
    export = commands.add_parser("export", help="write one person's memory as a JSON file")
    export.add_argument("--output", "-o", type=Path, help="the file to write (default: stdout)")
    load = commands.add_parser("import", help="import an export file as a new agent")
    load.add_argument("file", type=Path, help="a file written by `membot export` (or `/export`)")
    forget = commands.add_parser("forget", help="delete everything membot keeps about one person")
    forget.add_argument("--yes", action="store_true", help="really delete (there is no undo)")
    for parser, required in ((memory, True), (export, True), (load, False), (forget, True)):
        parser.add_argument(
            "--user", required=required, help="the person: terminal name, Discord user id, Slack TEAM:USER"
        )
        parser.add_argument("--platform", default="terminal", help="terminal (default), discord or slack")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Check what can be checked without the database, then run the command."""
    if args.command in READERS and not settings.uses_postgres and not Path(settings.db).exists():
        print(
            f"membot {args.command}: there is no database at {settings.db} (MEMBOT_DB) yet.", file=sys.stderr
        )
        return 1
    if args.command == "forget" and not args.yes:
        print(
            f"membot forget: this deletes everything kept about {args.platform} user {args.user!r}, "
            "with no undo; run it again with --yes.",
            file=sys.stderr,
        )
        return 2
    if args.command == "import":
        try:
            args.data = args.file.read_bytes()
        except OSError as exc:
            print(f"membot import: cannot read {args.file}: {exc.strerror}.", file=sys.stderr)
            return 1
    code, exported = asyncio.run(_start(settings, args))
    if exported is not None:
        if args.output is None:
            print(exported)
        else:
            args.output.write_text(exported + "\n", encoding="utf-8")
            print(f"membot export: wrote {args.output} ({args.output.stat().st_size} bytes)", file=sys.stderr)
    return code


async def _start(settings: Settings, args: argparse.Namespace) -> tuple[int, str | None]:
    runtime = await Runtime.start(settings)
    try:
        if args.command == "export":
            return await _export(runtime, args)
        return await _command(runtime, args), None
    finally:
        await runtime.close()


async def _export(runtime: Runtime, args: argparse.Namespace) -> tuple[int, str | None]:
    found = await runtime.find_agent(args.platform, args.user)
    if found is None:
        print(f"membot export: no memory is kept for {args.platform} user {args.user!r}.", file=sys.stderr)
        return 1, None
    return 0, json.dumps(await controls.export(runtime, found.id), ensure_ascii=False, indent=1)


async def _command(runtime: Runtime, args: argparse.Namespace) -> int:
    if args.command == "agents":
        return await _agents(runtime)
    if args.command == "import":
        return await _import(runtime, args)
    found = await runtime.find_agent(args.platform, args.user)
    if found is None:
        print(
            f"membot {args.command}: no memory is kept for {args.platform} user {args.user!r}.",
            file=sys.stderr,
        )
        return 1
    if args.command == "memory":
        print(await runtime.command(Person(args.platform, args.user, found.display_name), "/memory"))
        return 0
    deleted = await controls.forget(runtime, found.id)
    print(
        f"Forgot {args.platform} user {args.user!r}: {deleted.messages} messages, {deleted.passages} "
        f"passages and their vectors, core memory, identities and everything else kept about them."
    )
    return 0


async def _agents(runtime: Runtime) -> int:
    rows = await runtime.agents()
    print(f"{'id':>5}  {'messages':>8}  {'passages':>8}  {'last active':<20}  accounts")
    for row in rows:
        print(
            f"{row.id:>5}  {row.messages:>8}  {row.passages:>8}  {row.last_active_at[:19]:<20}  {row.accounts}"
        )
    print(f"{len(rows)} agents")
    return 0


async def _import(runtime: Runtime, args: argparse.Namespace) -> int:
    identity = (args.platform, args.user) if args.user else None
    try:
        agent_id = await controls.import_file(runtime, args.data, identity)
    except InvalidInput as exc:
        print(f"membot import: {exc}", file=sys.stderr)
        return 1
    print(f"Imported {args.file} as agent {agent_id}.")
    return 0
