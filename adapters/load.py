"""`membot load PATH... --user NAME`: documents into a person's archival memory, for the operator.

Files and folders (recursively; hidden ones skipped, and in a folder only the formats we read:
.txt .md .pdf .html ...) are loaded one after the other into the agent of NAME on --platform
(default "terminal", the person `membot chat --user NAME` talks to), privately, in their direct
conversation. A progress bar runs on stderr while a terminal watches; each file gets one line on
stdout (loaded, unchanged, replaced) or one error line on stderr, and the others still load;
the exit code is 1 if any file failed. `--list` shows what the person has, `--remove NAME`
removes a document (by its name, path or number). Needs the embedder, not the chat model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from bot.errors import InvalidInput, MembotError, StorageError
from bot.extract import SUFFIXES
from bot.loading import MAX_BYTES, Loaded, close_memory, listing, load, open_memory, remove, size_text
from bot.memory import AgentMemory
from bot.settings import Settings

DEFAULT_PLATFORM = "terminal"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("load", help="load documents into a person's archival memory")
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (read recursively)")
    parser.add_argument("--user", required=True, help="whose memory (their user id on --platform)")
    parser.add_argument(
        "--platform", default=DEFAULT_PLATFORM, help=f"the person's platform (default {DEFAULT_PLATFORM})"
    )
    parser.add_argument("--list", action="store_true", help="list the person's documents")
    parser.add_argument("--remove", metavar="NAME", help="remove a document (its name, path or number)")
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_BYTES, help=f"largest file to load (default {MAX_BYTES})"
    )


def files(paths: list[Path]) -> list[tuple[Path, str]]:
    """(path, document name) of each file to load: a file as given is named by its file name, a
    file found in a folder by the folder's name and its path under it."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_dir():
            found.append((path, path.name or str(path)))
            continue
        root = path.resolve()
        for item in sorted(root.rglob("*")):
            relative = item.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not item.is_file():
                continue
            if item.suffix.lower() in SUFFIXES:
                found.append((item, f"{root.name}/{relative.as_posix()}"))
    return found


def _line(loaded: Loaded, name: str) -> str:
    n = loaded.passages
    if loaded.status == "unchanged":
        same = "" if loaded.document.name == name else f" as {loaded.document.name}"
        return f"unchanged {name}: {n} passages (already loaded{same})"
    if loaded.status == "replaced":
        return f"replaced  {name}: {n} passages (the earlier version's {loaded.replaced} removed)"
    return f"loaded    {name}: {n} passages"


async def _close(memory: AgentMemory) -> None:
    await close_memory(memory.db, memory.embedder)


async def run(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not args.paths and not args.list and not args.remove:
        print("membot load: give files or folders to load, or --list, or --remove NAME", file=sys.stderr)
        return 1
    memory = await open_memory(settings, args.platform, args.user, create=bool(args.paths))
    if memory is None:
        print(f"{args.platform} user {args.user} has no memory yet, so no documents.", file=out)
        return 0 if not args.remove else 1
    try:
        failed = 0
        if args.remove:
            gone = await remove(memory, args.remove)
            for document in gone:
                print(f"removed   {document.name}: {document.passages} passages", file=out)
            if not gone:
                print(
                    f"membot load: {args.user} has no document {args.remove!r} (see --list)", file=sys.stderr
                )
                failed += 1
        if args.paths:
            failed += await _load_all(memory, files(args.paths), args.max_bytes, out)
        if args.list:
            await _list(memory, out)
        return 1 if failed else 0
    finally:
        await _close(memory)


async def _load_all(memory: AgentMemory, found: list[tuple[Path, str]], max_bytes: int, out: TextIO) -> int:
    """Load each file in turn; how many failed."""
    failed = 0
    totals = {"loaded": 0, "replaced": 0, "unchanged": 0}
    passages = 0
    with tqdm(total=len(found), unit="file", file=sys.stderr, disable=None, leave=False) as bar:
        for path, name in found:
            bar.set_description(name[-40:])

            def progress(done: int, total: int) -> None:
                bar.set_postfix_str(f"{done}/{total} passages embedded")

            try:
                loaded = await load(
                    memory, path, name, origin=str(path.resolve()), max_bytes=max_bytes, progress=progress
                )
            except (InvalidInput, StorageError, MembotError) as exc:
                failed += 1
                bar.write(f"membot load: {exc}", file=sys.stderr)
            else:
                totals[loaded.status] += 1
                passages += loaded.passages if loaded.status != "unchanged" else 0
                bar.write(_line(loaded, name), file=out)
            bar.update(1)
    done = ", ".join(f"{n} {status}" for status, n in totals.items() if n)
    print(
        f"{len(found)} files: {done or 'none loaded'}{f', {failed} failed' if failed else ''}; "
        f"{passages} new passages",
        file=out,
    )
    return failed


async def _list(memory: AgentMemory, out: TextIO) -> None:
    found = await listing(memory)
    if not found:
        print("no documents loaded", file=out)
    for d in found:
        where = "" if d.private else " (public)"
        print(
            f"{d.id:>5}  {d.name}  {d.kind}, {size_text(d.size)}, {d.passages} passages, "
            f"{d.created_at[:10]}{where}",
            file=out,
        )
