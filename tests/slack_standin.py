"""A stand-in of Slack on 127.0.0.1: its Web API, file downloads, response URLs, Socket Mode.

It runs an aiohttp server on a loop in its own thread, so the bot in the test's loop or in a
subprocess talks to it over real HTTP (`AsyncWebClient(base_url=standin.url)`). Every Web API
call is recorded (`calls`, `posted`). It can be told to answer a method with HTTP 429 and
`Retry-After: 1`, or with a Slack error, a given number of times. `apps.connections.open`
points Socket Mode at its websocket, where the test pushes envelopes and the acks are recorded.
File uploads go the way `files_upload_v2` makes them: `files.getUploadURLExternal` hands out an
upload URL on this stand-in, the bytes are POSTed there, `files.completeUploadExternal` shares
them in a channel; `uploads` holds each completed file (name, bytes, channel, comment).
`signed` makes the headers of an Events API request signed with a signing secret (v0).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-standin-token"
APP_TOKEN = "xapp-standin-token"
SECRET = "standin-signing-secret"
TEAM, TEAM_NAME, BOT_USER, BOT_ID = "T1", "Acme", "UBOT", "BBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    status: int = 200
    error: str = ""


@dataclass
class Upload:
    """A file shared by files.completeUploadExternal."""

    file_id: str
    filename: str
    data: bytes
    channel: str
    initial_comment: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class StandIn:
    users: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "U1": {"name": "Ann", "tz": "Asia/Tokyo"},
            "U2": {"name": "Bob", "tz": "Europe/Sofia"},
        }
    )
    channels: dict[str, str] = field(default_factory=lambda: {"C1": "general"})
    threads: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # parents, for replies
    files: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to a response_url
    acks: list[dict[str, Any]] = field(default_factory=list)  # Socket Mode acks
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization)
    failures: dict[str, list[str]] = field(default_factory=dict)  # method -> "429" or Slack error codes
    uploads: list[Upload] = field(default_factory=list)  # files shared in a channel, in order

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._pending: dict[str, tuple[str, int, bytes | None]] = {}  # file id -> (name, length, bytes)
        self._sockets: list[web.WebSocketResponse] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # --- the test's side -------------------------------------------------------------------

    def __enter__(self) -> StandIn:
        self._thread.start()
        assert self._started.wait(10), "the Slack stand-in did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, method: str, *answers: str) -> None:
        """Answer the next calls of `method` with these ("429", or a Slack error code)."""
        self.failures.setdefault(method, []).extend(answers)

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def posted(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The chat.postMessage calls Slack took (not the refused ones), oldest first."""
        return [
            c.args
            for c in self.called("chat.postMessage")
            if c.status == 200 and not c.error and channel in (None, c.args.get("channel"))
        ]

    @property
    def sockets(self) -> int:
        return len([ws for ws in self._sockets if not ws.closed])

    def push(self, envelope: dict[str, Any]) -> None:
        """Send a Socket Mode envelope to every connected app."""

        async def send() -> None:
            for ws in list(self._sockets):
                if not ws.closed:
                    await ws.send_str(json.dumps(envelope))

        asyncio.run_coroutine_threadsafe(send(), self._loop).result(10)

    # --- the server's side -----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw and request.content_type == "application/json":
            args.update(json.loads(raw))
        elif raw:
            args.update(parse_qsl(raw.decode()))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or str(args.pop("token", ""))
        call = Call(method, args, token)
        self.calls.append(call)
        pending = self.failures.get(method)
        if pending:
            answer = pending.pop(0)
            if answer == "429":
                call.status = 429
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
                )
            call.error = answer
            return web.json_response({"ok": False, "error": answer})
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != wanted:
            call.error = "invalid_auth"
            return web.json_response({"ok": False, "error": "invalid_auth"})
        body = self._answer(method, args)
        if not body.get("ok"):
            call.error = str(body.get("error"))
        return web.json_response(body)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "user_id": BOT_USER, "bot_id": BOT_ID, "team_id": TEAM, "team": TEAM_NAME}
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        if method == "chat.postMessage":
            ts = f"{1_700_000_000 + next(self._ts)}.000100"
            return {
                "ok": True,
                "channel": args.get("channel"),
                "ts": ts,
                "message": {"text": args.get("text")},
            }
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{1_700_000_000 + next(self._ts)}.000200"}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": f"D{args.get('users')}"}}
        if method == "users.info":
            user = self.users.get(str(args.get("user")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            uid, name = args["user"], user["name"]
            profile = {"display_name": name, "real_name": f"{name} Example"}
            return {
                "ok": True,
                "user": {"id": uid, "name": name.lower(), "tz": user["tz"], "profile": profile},
            }
        if method == "conversations.info":
            name = self.channels.get(str(args.get("channel")))
            if name is None:
                return {"ok": False, "error": "channel_not_found"}
            return {"ok": True, "channel": {"id": args["channel"], "name": name}}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._file_ids)}"
            self._pending[file_id] = (str(args.get("filename")), int(args.get("length") or 0), None)
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            return self._complete(args)
        if method == "conversations.replies":
            parent = self.threads.get((str(args.get("channel")), str(args.get("ts"))))
            return {"ok": True, "messages": [parent] if parent else []}
        return {"ok": False, "error": "unknown_method"}

    async def _upload(self, request: web.Request) -> web.Response:
        """An upload URL's POST: the file's bytes, as many as files.getUploadURLExternal was told."""
        file_id = request.match_info["file_id"]
        data = await request.read()
        if file_id not in self._pending or len(data) != self._pending[file_id][1]:
            return web.Response(status=400, text="unknown upload or wrong length")
        name, length, _ = self._pending[file_id]
        self._pending[file_id] = (name, length, data)
        return web.Response(text=f"OK - {length}")

    def _complete(self, args: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(str(args.get("files") or "[]"))
        channel = str(args.get("channel_id") or "")
        if not channel.startswith(("C", "D", "G")):
            return {"ok": False, "error": "invalid_channel"}
        done = []
        for item in files:
            name, _, data = self._pending.get(str(item.get("id")), ("", 0, None))
            if data is None:
                return {"ok": False, "error": "file_not_found"}
            done.append(Upload(item["id"], name, data, channel, str(args.get("initial_comment") or "")))
        self.uploads += done
        return {"ok": True, "files": [{"id": u.file_id, "title": u.filename} for u in done]}

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.downloads.append((name, request.headers.get("Authorization", "")))
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}" or name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="text/plain")

    async def _response(self, request: web.Request) -> web.Response:
        self.responses.append({"id": request.match_info["id"], **(await request.json())})
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
        return ws


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Headers of a request Slack signed: v0=HMAC-SHA256 of 'v0:{timestamp}:{body}'."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def callback(event: dict[str, Any], event_id: str, team: str = TEAM) -> dict[str, Any]:
    """An Events API body around `event`, as Slack posts it."""
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
    }


def dm(user: str, text: str, ts: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": f"D{user}",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "team": TEAM,
        **more,
    }


def mention(user: str, text: str, ts: str, channel: str = "C1", **more: Any) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "channel": channel,
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "team": TEAM,
        **more,
    }


def channel_message(user: str, text: str, ts: str, channel: str = "C1", **more: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": channel,
        "channel_type": "channel",
        "user": user,
        "text": text,
        "ts": ts,
        "team": TEAM,
        **more,
    }
