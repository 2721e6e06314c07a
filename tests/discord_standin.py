"""A stand-in of Discord on 127.0.0.1: its REST API and its gateway, for the real discord.py client.

It runs an aiohttp server in a thread of its own (so a test, or a `membot discord` process, talks
to it over real sockets) and speaks the gateway protocol the way Discord does: HELLO (op 10),
then the client's IDENTIFY (op 2) gets READY and a GUILD_CREATE for one server with a text
channel and a thread; HEARTBEAT (op 1) gets its ACK (op 11); RESUME (op 6) replays what the
session missed, then RESUMED. A test pushes dispatches (MESSAGE_CREATE, INTERACTION_CREATE) in
Discord's payload format, with sequence numbers. What the bot sends back is recorded: messages
(their JSON: content, message_reference, allowed_mentions), DMs opened, typing, command syncs,
interaction callbacks and follow-ups, and the files uploaded with any of them (`uploads`: a
request with files is multipart/form-data, its JSON in the `payload_json` part and each file in a
`files[N]` part, as discord.py sends it). Like Discord, it echoes the bot's own messages back
through the gateway.

Shards route as on Discord: each session IDENTIFYs as shard [id, count]; a server's events
(its GUILD_CREATE, its messages and interactions) go to the session of shard
(guild_id >> 22) % count, and DMs to shard 0 (`shard_of`). `GET /gateway/bot` recommends
`shards` shards (1 unless told).

Payload shapes follow discord.py's `discord/types/*.py` (the API's documented objects).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

TOKEN = "stand-in-bot-token"
DISCORD_EPOCH = 1420070400000
MESSAGE_CONTENT = 1 << 15
GUILD_ID = "900000000000000001"
CHANNEL_ID = "900000000000000002"
THREAD_ID = "900000000000000003"
GUILD_NAME = "Acme"
_ids = itertools.count(1)


def snowflake() -> str:
    """A fresh id in Discord's format: milliseconds since 2015 shifted left 22 bits, plus a counter."""
    return str(((int(time.time() * 1000) - DISCORD_EPOCH) << 22) | (next(_ids) % 4096))


def shard_of(guild_id: str | None, count: int) -> int:
    """The shard Discord sends a server's events to; DMs (no server) go to shard 0."""
    return (int(guild_id) >> 22) % count if guild_id else 0


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name.lower(),
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


BOT = {**user("800000000000000001", "Membot", bot=True), "verified": True, "mfa_enabled": False, "flags": 0}


def member(of: dict[str, Any] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"roles": [], "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0}
    if of is not None:
        found["user"] = of
    return found


def message(
    channel_id: str,
    author: dict[str, Any],
    content: str,
    *,
    guild: bool,
    message_id: str = "",
    mentions: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    replying_to: dict[str, Any] | None = None,
    kind: int = 0,
) -> dict[str, Any]:
    """A MESSAGE_CREATE payload (a Discord message object)."""
    data: dict[str, Any] = {
        "id": message_id or snowflake(),
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [{**m, "member": member()} if guild else m for m in mentions or []],
        "mention_roles": [],
        "attachments": list(attachments or []),
        "embeds": [],
        "pinned": False,
        "type": 19 if replying_to is not None else kind,
        "flags": 0,
        "components": [],
    }
    if guild:
        data["guild_id"] = GUILD_ID
        data["member"] = member()
    if replying_to is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": replying_to["id"],
            "channel_id": replying_to["channel_id"],
            **({"guild_id": GUILD_ID} if guild else {}),
        }
        data["referenced_message"] = replying_to
    return data


def guild_create() -> dict[str, Any]:
    """GUILD_CREATE for the server Acme: #general and a thread 'plans' in it, the bot a member."""
    return {
        "id": GUILD_ID,
        "name": GUILD_NAME,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": "700000000000000001",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [
            {
                "id": GUILD_ID,
                "name": "@everyone",
                "color": 0,
                "hoist": False,
                "position": 0,
                "permissions": "1071698660929",
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "vanity_url_code": None,
        "banner": None,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": None,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "joined_at": now_iso(),
        "large": False,
        "unavailable": False,
        "member_count": 3,
        "voice_states": [],
        "members": [member(BOT)],
        "channels": [
            {
                "id": CHANNEL_ID,
                "type": 0,
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
            }
        ],
        "threads": [
            {
                "id": THREAD_ID,
                "guild_id": GUILD_ID,
                "parent_id": CHANNEL_ID,
                "owner_id": "700000000000000001",
                "name": "plans",
                "type": 11,
                "member_count": 2,
                "message_count": 0,
                "total_message_sent": 0,
                "rate_limit_per_user": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": now_iso(),
                    "locked": False,
                },
                "last_message_id": None,
                "flags": 0,
            }
        ],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def _json(data: Any, status: int = 200) -> web.Response:
    # exactly "application/json": discord.py parses a body only under that content type
    return web.Response(
        status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )


def _error(status: int, code: int, text: str) -> web.Response:
    return _json({"message": text, "code": code}, status)


@dataclass(frozen=True)
class Upload:
    """A file the bot uploaded: where to (a channel id, 'callback' or 'followup'), name, bytes."""

    where: str
    filename: str
    data: bytes
    ephemeral: bool = False

    def json(self) -> Any:
        return json.loads(self.data)


async def _body(request: web.Request, where: str) -> tuple[dict[str, Any], list[Upload]]:
    """A request's JSON, and its files if it is multipart (payload_json + files[N])."""
    if not request.content_type.startswith("multipart/"):
        return await request.json(), []
    form = await request.post()
    body = json.loads(str(form["payload_json"]))
    flags = (body.get("data") or body).get("flags", 0)
    files = [
        Upload(where, part.filename, part.file.read(), bool(flags & 64))
        for name, part in form.items()
        if name.startswith("files[") and isinstance(part, web.FileField)
    ]
    return body, files


@dataclass
class _Session:
    id: str
    ws: web.WebSocketResponse | None
    shard: list[int]  # [id, count]
    seq: int = 0
    ready: bool = False  # READY and the GUILD_CREATEs of its shard were sent
    sent: list[dict[str, Any]] = field(default_factory=list)  # every dispatch, for RESUME


class DiscordStandIn:
    """Start with `with DiscordStandIn() as discord:`; `discord.api_url` is DISCORD_API_URL."""

    def __init__(self, *, allow_message_content: bool = True, echo: bool = True, shards: int = 1) -> None:
        self.allow_message_content = allow_message_content
        self.echo = echo
        self.recommended_shards = shards  # what GET /gateway/bot answers
        self.posts: list[dict[str, Any]] = []  # {"channel_id", "json"} per message created
        self.typing: list[str] = []
        self.dms_opened: list[str] = []
        self.closed_dms: set[str] = set()  # users whose DMs refuse the bot (50007)
        self.syncs: list[tuple[str, list[dict[str, Any]]]] = []  # (path, commands)
        self.callbacks: list[dict[str, Any]] = []  # interaction callbacks (type, data)
        self.followups: list[dict[str, Any]] = []
        self.uploads: list[Upload] = []  # files that came with messages, callbacks, follow-ups
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.files: dict[str, bytes] = {}  # attachment name -> bytes, served at /files/NAME
        self.downloads: list[str] = []
        self.sessions: dict[str, _Session] = {}
        self.replay_after: int | None = None  # on RESUME, replay from here (as if the client had missed them)
        self._dm_channels: dict[str, str] = {}  # DM channel id -> user id
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> DiscordStandIn:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the Discord stand-in did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gw", self._gateway)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_route("*", "/api/v10/{path:.*}", self._api)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gw"

    def file_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # what tests do ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A session is live and has had its READY and its shard's GUILD_CREATEs."""
        return bool(self.live_shards())

    def live_shards(self) -> set[int]:
        """The shard ids of the live sessions that have had their READY and GUILD_CREATEs."""
        return {
            s.shard[0] for s in self.sessions.values() if s.ws is not None and not s.ws.closed and s.ready
        }

    def last_seq(self) -> int:
        return max((s.seq for s in self.sessions.values()), default=0)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a dispatch (op 0) to the live sessions of its shard: its guild's, or 0 for a DM
        (thread-safe)."""
        self._call(self._dispatch_all(event, data))

    def reconnect(self) -> None:
        """Ask every client to reconnect (op 7), as Discord does before moving a session."""
        self._call(self._reconnect_all())

    def attach(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        """An attachment object whose bytes this stand-in serves."""
        self.files[name] = data
        return {
            "id": snowflake(),
            "filename": name,
            "size": len(data),
            "url": self.file_url(name),
            "proxy_url": self.file_url(name),
            "content_type": content_type,
        }

    def texts(self, channel_id: str | None = None) -> list[str]:
        return [p["json"].get("content", "") for p in self.posts if channel_id in (None, p["channel_id"])]

    def dm_channel_of(self, user_id: str) -> str:
        """The DM channel id between the bot and this user (made on first use)."""
        for channel, owner in self._dm_channels.items():
            if owner == user_id:
                return channel
        channel = snowflake()
        self._dm_channels[channel] = user_id
        return channel

    # gateway ---------------------------------------------------------------------------------

    async def _dispatch_all(self, event: str, data: dict[str, Any]) -> None:
        guild_id = data.get("guild_id")
        for session in list(self.sessions.values()):
            shard, count = session.shard
            if session.ws is not None and not session.ws.closed and shard == shard_of(guild_id, count):
                await self._send_dispatch(session, event, data)

    async def _send_dispatch(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_str(json.dumps(frame))

    async def _reconnect_all(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.send_str(json.dumps({"op": 7, "d": None}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        session: _Session | None = None
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                session = await self._identify(ws, data)
            elif op == 6:
                session = await self._resume(ws, data)
            if ws.closed:
                break
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> _Session | None:
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        if data.get("token") != TOKEN:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        if data.get("intents", 0) & MESSAGE_CONTENT and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard = data.get("shard") or [0, 1]
        session = _Session(snowflake(), ws, shard)
        self.sessions[session.id] = session
        ours = shard[0] == shard_of(GUILD_ID, shard[1])  # the one server, Acme, is on this shard
        ready = {
            "v": 10,
            "user": BOT,
            "guilds": [{"id": GUILD_ID, "unavailable": True}] if ours else [],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "shard": shard,
            "application": {"id": BOT["id"], "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._send_dispatch(session, "READY", ready)
        if ours:
            await self._send_dispatch(session, "GUILD_CREATE", guild_create())
        session.ready = True
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> _Session | None:
        self.resumes.append({k: v for k, v in data.items() if k != "token"})
        session = self.sessions.get(data.get("session_id", ""))
        if data.get("token") != TOKEN or session is None:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return None
        session.ws = ws
        seen = int(data.get("seq") or 0)
        if self.replay_after is not None:
            seen = min(seen, self.replay_after)
        for frame in [f for f in session.sent if f["s"] > seen]:
            await ws.send_str(json.dumps(frame))
        await self._send_dispatch(session, "RESUMED", {})
        return session

    # REST ------------------------------------------------------------------------------------

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.downloads.append(name)
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path))
        parts = path.strip("/").split("/")
        if parts[0] in ("interactions", "webhooks"):  # authorised by the interaction's token
            return await self._interaction(request, parts)
        if request.headers.get("Authorization") != f"Bot {TOKEN}":
            return _error(401, 0, "401: Unauthorized")
        route: dict[tuple[str, str], Callable[[web.Request, list[str]], Any]] = {
            ("GET", "/users/@me"): lambda r, p: _json(BOT),
            ("GET", "/applications/@me"): lambda r, p: _json(self._application()),
            ("GET", "/oauth2/applications/@me"): lambda r, p: _json(self._application()),
            ("GET", "/gateway"): lambda r, p: _json({"url": self.gateway_url}),
            ("GET", "/gateway/bot"): lambda r, p: _json(
                {
                    "url": self.gateway_url,
                    "shards": self.recommended_shards,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            ),
        }
        if (request.method, path) in route:
            return route[(request.method, path)](request, parts)  # type: ignore[no-any-return]
        if request.method == "POST" and path == "/users/@me/channels":
            return await self._open_dm(request)
        if request.method == "GET" and parts[0] == "users" and len(parts) == 2:
            return _json(user(parts[1], f"user{parts[1][-4:]}"))
        if parts[0] == "channels" and len(parts) == 3 and request.method == "POST":
            if parts[2] == "typing":
                self.typing.append(parts[1])
                return web.Response(status=204)
            if parts[2] == "messages":
                return await self._create_message(request, parts[1])
        if request.method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            commands = await request.json()
            self.syncs.append((path, commands))
            return _json(
                [{**c, "id": snowflake(), "application_id": BOT["id"], "version": "1"} for c in commands]
            )
        return _error(404, 0, f"404: Not Found ({request.method} {path})")

    def _application(self) -> dict[str, Any]:
        return {
            "id": BOT["id"],
            "name": "Membot",
            "icon": None,
            "description": "",
            "summary": "",
            "verify_key": "0" * 64,
            "flags": 0,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user("700000000000000001", "Owner"),
        }

    async def _open_dm(self, request: web.Request) -> web.Response:
        recipient = str((await request.json())["recipient_id"])
        self.dms_opened.append(recipient)
        channel = self.dm_channel_of(recipient)
        return _json(
            {
                "id": channel,
                "type": 1,
                "last_message_id": None,
                "recipients": [user(recipient, f"user{recipient[-4:]}")],
            }
        )

    async def _create_message(self, request: web.Request, channel_id: str) -> web.Response:
        body, files = await _body(request, channel_id)
        known = {CHANNEL_ID, THREAD_ID, *self._dm_channels}
        if channel_id not in known:
            return _error(404, 10003, "Unknown Channel")
        if self._dm_channels.get(channel_id) in self.closed_dms:
            return _error(403, 50007, "Cannot send messages to this user")
        content = body.get("content") or ""
        if not content.strip() and not files:
            return _error(400, 50006, "Cannot send an empty message")
        if len(content) > 2000:
            return _error(400, 50035, "Invalid Form Body: content must be 2000 or fewer in length.")
        self.posts.append({"channel_id": channel_id, "json": body, "files": [f.filename for f in files]})
        self.uploads += files
        guild = channel_id not in self._dm_channels
        created = message(channel_id, BOT, content, guild=guild)
        if guild:
            created["member"] = member()
        if self.echo:
            await self._dispatch_all("MESSAGE_CREATE", created)
        return _json(created)

    async def _interaction(self, request: web.Request, parts: list[str]) -> web.Response:
        body, files = await _body(request, "followup" if parts[0] == "webhooks" else "callback")
        self.uploads += files
        if parts[0] == "webhooks":  # a follow-up message
            self.followups.append({**body, "files": [f.filename for f in files]})
            answer = message(CHANNEL_ID, BOT, body.get("content", ""), guild=False)
            answer["flags"] = body.get("flags", 0)
            return _json(answer)
        interaction_id = parts[1]
        self.callbacks.append(body)
        data = body.get("data") or {}
        answer = message(CHANNEL_ID, BOT, data.get("content", ""), guild=False)
        answer["flags"] = data.get("flags", 0)
        return _json(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_id": answer["id"],
                    "response_message_loading": False,
                    "response_message_ephemeral": bool(data.get("flags", 0) & 64),
                },
                "resource": {"type": body.get("type", 4), "message": answer},
            }
        )


def slash_command(
    name: str,
    speaker: dict[str, Any],
    options: dict[str, str] | None = None,
    *,
    guild: bool = True,
    files: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload: `speaker` ran /name (in #general, or in their DM), with
    string `options` and attachment options (`files`: name -> an attachment from `attach`)."""
    data: dict[str, Any] = {
        "id": snowflake(),
        "name": name,
        "type": 1,
        "options": [{"type": 3, "name": k, "value": v} for k, v in (options or {}).items()],
    }
    for option, attachment in (files or {}).items():
        data["options"].append({"type": 11, "name": option, "value": attachment["id"]})
        data.setdefault("resolved", {}).setdefault("attachments", {})[attachment["id"]] = attachment
    interaction: dict[str, Any] = {
        "id": snowflake(),
        "application_id": BOT["id"],
        "type": 2,
        "data": data,
        "token": "interaction-token-" + snowflake(),
        "version": 1,
        "app_permissions": "1071698660929",
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10485760,
    }
    if guild:
        interaction.update(
            guild_id=GUILD_ID,
            guild={"id": GUILD_ID, "locale": "en-US", "features": []},
            guild_locale="en-US",
            channel_id=CHANNEL_ID,
            channel={
                "id": CHANNEL_ID,
                "type": 0,
                "name": "general",
                "guild_id": GUILD_ID,
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            },
            member={**member(speaker), "permissions": "1071698660929"},
            authorizing_integration_owners={"0": GUILD_ID},
            context=0,
        )
    else:
        interaction.update(
            channel_id="1",
            channel={"id": "1", "type": 1, "last_message_id": None, "recipients": [speaker], "name": ""},
            user=speaker,
            authorizing_integration_owners={"0": GUILD_ID},
            context=1,
        )
    return interaction
