"""`membot migrate-db SOURCE TARGET`: copy a whole deployment into another database.

SOURCE and TARGET are each a SQLite file or a PostgreSQL URL (as MEMBOT_DB takes them). Both are
brought to the latest schema (a SOURCE from a newer membot is refused), the TARGET gets the
SOURCE's embedding record (refused if it was embedded with another model), then every table
is copied in pages (storage/copying.py) with a progress bar on stderr, and the rows of every
table are counted on both sides: the counts are printed, and any difference is exit code 1.
What is already in the TARGET is skipped, so running it again changes nothing and finishes a
copy that was interrupted. Stop the bot on SOURCE first: rows stored during the copy may be
missed (a second run picks them up).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from bot.errors import ConfigError, MembotError, StorageError
from storage import copying, migrations, vectors
from storage.copying import Count, Table
from storage.db import Database, open_at
from storage.postgres import is_postgres, redacted


class _NoSlowCalls(logging.Filter):
    """A bulk copy's transactions are slow by nature: their "slow database call" warnings are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("slow database call")


QUIETED = ("storage.db", "storage.postgres")  # the loggers of the two Database classes


@dataclass(frozen=True)
class Report:
    counts: list[Count]
    problems: list[str]  # counts or counters that differ
    seconds: float

    @property
    def copied(self) -> int:
        return sum(c.copied for c in self.counts)


def run(source: str, target: str, lock_wait: float, out: TextIO, err: TextIO) -> int:
    """The command: the counts on `out`, the progress bar and any error on `err`; the exit code."""
    quiet = _NoSlowCalls()
    for name in QUIETED:
        logging.getLogger(name).addFilter(quiet)
    try:
        report = migrate_db(source, target, lock_wait, err)
    except (MembotError, StorageError) as exc:
        print(f"membot migrate-db: {exc}", file=err)
        return 1
    finally:
        for name in QUIETED:
            logging.getLogger(name).removeFilter(quiet)
    print(f"{'table':<16} {'source':>9} {'target':>9} {'copied':>9}", file=out)
    for c in report.counts:
        print(f"{c.table:<16} {c.source:>9} {c.target:>9} {c.copied:>9}", file=out)
    rate = report.copied / report.seconds if report.seconds > 0 else 0.0
    print(
        f"copied {report.copied} rows from {redacted(source)} to {redacted(target)} in "
        f"{report.seconds:.1f} s ({rate:.0f} rows/s)",
        file=out,
    )
    if report.problems:
        for problem in report.problems:
            print(f"membot migrate-db: {problem}", file=err)
        print(
            "membot migrate-db: the target does not match the source (nothing was deleted): stop the bot "
            "on the source and run it again, or copy into an empty database.",
            file=err,
        )
        return 1
    return 0


def check_arguments(source: str, target: str) -> None:
    """Refuse, before opening anything, a SOURCE file that is not there or a TARGET that is SOURCE."""
    if not is_postgres(source) and not Path(source).is_file():
        raise ConfigError(
            f"there is no database at {source} (SOURCE); give the file membot uses (MEMBOT_DB)."
        )
    if is_postgres(source) or is_postgres(target):
        same = source.rstrip("/") == target.rstrip("/")
    else:
        same = Path(source).resolve() == Path(target).resolve()
    if same:
        raise ConfigError(
            f"SOURCE and TARGET are the same database ({redacted(source)}); name another TARGET."
        )


def migrate_db(source: str, target: str, lock_wait: float, err: TextIO) -> Report:
    check_arguments(source, target)
    started = time.perf_counter()
    src = open_at(source, lock_wait, vector_cache_bytes=0)
    try:
        dst = open_at(target, lock_wait, vector_cache_bytes=0)
        try:
            tables = copying.plan()
            record = _prepare(src, dst, source)
            return _copy(src, dst, tables, record is not None, err, started)
        finally:
            dst.close()
    finally:
        src.close()


def _prepare(src: Database, dst: Database, source: str) -> tuple[str, int] | None:
    """Both databases at the latest schema, the target with the source's embedding record."""
    if not src.call_read(copying.is_membot):
        raise ConfigError(
            f"{redacted(source)} (SOURCE) is not a membot database: it has no `_migrations` table."
        )
    # the source first: one from a newer membot is refused before the target is touched
    src.call(migrations.migrate)
    dst.call(migrations.migrate)
    record = src.call_read(vectors.recorded)
    if record is None:
        return None
    model, dim = record
    if model.startswith("unfinished"):
        raise ConfigError(
            f"the source has an {model} (a `membot reembed` stopped half-way): finish it there first."
        )
    there = dst.call_read(vectors.recorded)
    if there is not None and there != record:
        raise StorageError(
            f"the target was embedded with {there[0]} ({there[1]} dimensions) and the source with {model} "
            f"({dim} dimensions): their vectors cannot be mixed. Copy into an empty database, or run "
            "`membot reembed` on one of them first."
        )
    src.call(vectors.ensure, model, dim)  # an old vector layout is brought up to date first
    dst.call(vectors.ensure, model, dim)
    return record


def _copy(
    src: Database, dst: Database, tables: list[Table], with_vectors: bool, err: TextIO, started: float
) -> Report:
    before = src.call_read(copying.counts, tables)
    vector_tables = list(vectors.TABLES) if with_vectors else []
    copied: dict[str, int] = {}
    with tqdm(total=sum(before.values()), unit="row", file=err, disable=None, desc="copying") as bar:

        def progress(table: str, rows: int) -> None:
            bar.set_description(table, refresh=False)
            bar.update(rows)

        orders = src.call_read(copying.reading_order, tables)
        for table in tables:
            copied[table.name] = _copy_table(src, dst, table, orders[table.name], progress)
        for name in vector_tables:
            copied[name] = _copy_vectors(src, dst, name, progress)
    dst.call(copying.finish, tables)
    after_src = src.call_read(copying.counts, tables)
    after_dst = dst.call_read(copying.counts, tables)
    names = [t.name for t in tables] + vector_tables
    found = [Count(n, after_src.get(n, 0), after_dst.get(n, 0), copied[n]) for n in names]
    problems = [
        f"{c.table}: {c.source} rows in the source, {c.target} in the target"
        for c in found
        if c.source != c.target
    ]
    problems += _counter_problems(src, dst, tables)
    return Report(found, problems, time.perf_counter() - started)


def _copy_table(
    src: Database, dst: Database, table: Table, order: tuple[str, ...], progress: copying.Progress
) -> int:
    existing = None if table.key else Counter(dst.call_read(copying.all_rows, table))
    copied, after = 0, None
    while True:
        page = src.call_read(copying.read_rows, table, order, after)
        if not page:
            return copied
        rows = [tuple(row[len(order) :]) for row in page]
        if existing is not None:
            rows = copying.missing(rows, existing)
        try:
            copied += dst.call(copying.write_rows, table, rows)
        except StorageError as exc:
            raise StorageError(f"copying {table.name}: {exc}") from exc
        progress(table.name, len(page))
        if not order:
            return copied
        after = tuple(page[-1][: len(order)])


def _copy_vectors(src: Database, dst: Database, table: str, progress: copying.Progress) -> int:
    copied, after = 0, 0
    while True:
        ids = src.call_read(copying.vector_ids, table, after)
        if not ids:
            return copied
        present = set(dst.call_read(copying.vector_ids, table, after, ids[-1]))
        wanted = [rowid for rowid in ids if rowid not in present]
        if wanted:
            rows = src.call_read(copying.read_vectors, table, wanted)
            copied += dst.call(copying.write_vectors, table, rows)
        progress(table, len(ids))
        after = ids[-1]


def _counter_problems(src: Database, dst: Database, tables: list[Table]) -> list[str]:
    """Counters the target's triggers kept that do not end equal to the source's."""
    problems = []
    theirs = dst.call_read(copying.counter_values, tables)
    for name, ours in src.call_read(copying.counter_values, tables).items():
        table = next(t for t in tables if t.name == name)
        differ = sorted(set(ours) - set(theirs.get(name, [])))
        if differ:
            width = len(table.key)
            problems.append(
                f"{name}: {', '.join(table.counters)} differ for {len(differ)} rows (the first: "
                f"{dict(zip(table.key, differ[0][:width], strict=True))}, source {differ[0][width:]})"
            )
    return problems
