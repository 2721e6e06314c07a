"""Slack's `message` and `app_mention` events as the core's neutral events.

Who: `Person("slack", "TEAM:USER", display name)`, by ids (names can be faked; the team is the
workspace the app is installed in, the same for events and slash commands). Where: a DM is a
private conversation; in a channel, the thread is the conversation (a mention's own thread, or
the thread under it), public, named `#channel`, in the workspace. What: the text as a person
reads it (the bot's own mention dropped, `<@U…>` as `@name`, `<url|label>` as `label (url)`)
and its files (plain text and Markdown are readable; the core reads them within its limit).

Only a person speaking counts: no `bot_id`, no subtype but `file_share` (and
`thread_broadcast`, a thread reply also shown in the channel), not the bot itself, and some
text or a file. A channel message counts when it mentions the bot (`app_mention`) or is in a
thread the bot takes part in; a mention also arrives as a `message` event, and both map to the
same conversation and message id (the `ts`), so the core answers it once.

`Directory` asks Slack about people, channels and threads once per process (users.info,
conversations.info, conversations.replies) and keeps the answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.events import Attachment, Conversation, Event, Kind, Person

log = logging.getLogger(__name__)

PLATFORM = "slack"
SPEAKING = frozenset({"", "file_share", "thread_broadcast"})
# files the core loads (bot/extract.py): text, Markdown, PDF, HTML, by media type or name
READABLE_TYPES = frozenset({"application/pdf", "application/xhtml+xml"})
READABLE_ENDINGS = (".txt", ".text", ".log", ".rst", ".md", ".markdown", ".pdf", ".html", ".htm", ".xhtml")
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
CONTROL = re.compile(r"<([^<>\n]+)>")
SPECIAL = {"!here": "@here", "!channel": "@channel", "!everyone": "@everyone"}
CACHE_SIZE = 10_000
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError)

Json = dict[str, Any]


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is in its workspace (auth.test)."""

    user_id: str
    bot_id: str
    team_id: str
    team_name: str


@dataclass(frozen=True)
class Profile:
    name: str
    timezone: str  # an IANA name, or '' when Slack gave none


def slack_error(exc: Exception) -> str:
    """A short cause for a log line or an outbox row: Slack's error code, or the network's."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
    return f"{type(exc).__name__}: {exc}"


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = value


class Directory:
    """People, channels and threads as Slack describes them, asked once and remembered."""

    def __init__(
        self, client: AsyncWebClient, bot: BotIdentity, session: aiohttp.ClientSession, max_bytes: int
    ) -> None:
        self.client = client
        self.bot = bot
        self.session = session
        self.max_bytes = max_bytes
        self._people: dict[str, Profile] = {}
        self._channels: dict[str, str] = {}
        self._threads: dict[tuple[str, str], bool] = {}  # (channel, thread ts) -> the bot takes part

    async def profile(self, user_id: str) -> Profile:
        """users.info's display name (or real name) and time zone; the id if Slack does not say."""
        found = self._people.get(user_id)
        if found is not None:
            return found
        try:
            response = await self.client.users_info(user=user_id)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.warning("users.info for %s failed (%s); using the id as the name", user_id, slack_error(exc))
            return Profile(user_id, "")
        user: Json = response.get("user") or {}
        names: Json = user.get("profile") or {}
        name = (
            names.get("display_name") or names.get("real_name") or user.get("real_name") or user.get("name")
        )
        found = Profile(str(name or user_id), str(user.get("tz") or ""))
        _remember(self._people, user_id, found)
        return found

    async def person(self, team_id: str, user_id: str) -> Person:
        return Person(
            PLATFORM, f"{team_id or self.bot.team_id}:{user_id}", (await self.profile(user_id)).name
        )

    async def channel_name(self, channel_id: str) -> str:
        """'#general' (conversations.info); '' if Slack will not say (the id is used instead)."""
        if channel_id in self._channels:
            return self._channels[channel_id]
        try:
            response = await self.client.conversations_info(channel=channel_id)
        except NETWORK_ERRORS as exc:
            log.warning("conversations.info for %s failed: %s", channel_id, slack_error(exc))
            return ""
        except SlackApiError as exc:  # e.g. missing_scope (channels:read): asking again will not help
            log.warning("conversations.info for %s refused: %s", channel_id, slack_error(exc))
            name = ""
        else:
            found = (response.get("channel") or {}).get("name")
            name = f"#{found}" if found else ""
        _remember(self._channels, channel_id, name)
        return name

    async def channel(self, channel_id: str, thread_ts: str) -> Conversation:
        """A channel's thread, as a public conversation."""
        name = await self.channel_name(channel_id)
        return Conversation(PLATFORM, channel_id, False, thread_ts, name, self.bot.team_name)

    def joined(self, channel_id: str, thread_ts: str) -> None:
        """The bot takes part in this thread (it was mentioned or posted there)."""
        _remember(self._threads, (channel_id, thread_ts), True)

    async def in_thread(self, channel_id: str, thread_ts: str) -> bool:
        """Whether the bot takes part in this thread: it posted there, or the thread's first
        message mentions it or is its own (conversations.replies, asked once per thread)."""
        key = (channel_id, thread_ts)
        if key in self._threads:
            return self._threads[key]
        try:
            response = await self.client.conversations_replies(channel=channel_id, ts=thread_ts, limit=1)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.warning("conversations.replies for %s failed: %s", channel_id, slack_error(exc))
            return False
        messages: list[Json] = response.get("messages") or []
        parent = messages[0] if messages else {}
        bot = self.bot.user_id
        joined = (
            bot in (parent.get("reply_users") or [])
            or f"<@{bot}>" in str(parent.get("text") or "")
            or parent.get("user") == bot
        )
        _remember(self._threads, key, joined)
        return joined

    async def readable(self, text: str) -> str:
        """Slack's markup as a person reads it."""
        ids = set(MENTION.findall(text)) - {self.bot.user_id}
        names = {user_id: (await self.profile(user_id)).name for user_id in ids}

        def mention(match: re.Match[str]) -> str:
            user_id = match.group(1)
            return "" if user_id == self.bot.user_id else f"@{names[user_id]}"

        text = CONTROL.sub(_control, MENTION.sub(mention, text))
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
        return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def attachments(self, event: Json, every: int = 0) -> tuple[Attachment, ...]:
        """The event's files; readable ones (documents) with a download of at most the attachment
        limit, or, with `every` (a command's files: `/import`), each one, up to `every` bytes."""
        files = []
        for file in event.get("files") or []:
            name = str(file.get("name") or file.get("title") or "file")
            media_type = str(file.get("mimetype") or "")
            url = str(file.get("url_private_download") or file.get("url_private") or "")
            readable = bool(url) and (
                bool(every) or media_type in READABLE_TYPES or name.lower().endswith(READABLE_ENDINGS)
            )
            limit = every or self.max_bytes
            read: Callable[[], Awaitable[bytes]] | None = (
                partial(self.download, url, limit) if readable else None
            )
            files.append(Attachment(name, int(file.get("size") or 0), media_type, read))
        return tuple(files)

    async def download(self, url: str, limit: int | None = None) -> bytes:
        """A file's bytes (at most one more than `limit`, by default the attachment limit), with
        the bot token: only from Slack."""
        max_bytes = self.max_bytes if limit is None else limit
        host = urlsplit(url).hostname or ""
        if not (
            host == "slack.com"
            or host.endswith(".slack.com")
            or host == urlsplit(self.client.base_url).hostname
        ):
            raise ValueError(f"{host} is not Slack; the token is not sent there")
        headers = {"Authorization": f"Bearer {self.client.token}"}
        async with self.session.get(url, headers=headers, raise_for_status=True) as response:
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > max_bytes:
                    break
            return bytes(data)

    def speaks(self, event: Json) -> bool:
        """A person speaking, not a bot, an edit, a deletion, a join, ..."""
        if event.get("bot_id") or str(event.get("subtype") or "") not in SPEAKING:
            return False
        user = event.get("user")
        return bool(user) and user != self.bot.user_id

    async def event_of(self, body: Json, event: Json, mention: bool) -> Event | None:
        """The neutral event for a Slack `message` or `app_mention`, or None if it is not for us."""
        if not self.speaks(event):
            return None
        channel, ts = str(event.get("channel") or ""), str(event.get("ts") or "")
        thread = str(event.get("thread_ts") or "")
        if mention:
            self.joined(channel, thread or ts)
            conversation = await self.channel(channel, thread or ts)
        elif event.get("channel_type") == "im":
            conversation = Conversation(PLATFORM, channel, private=True, name="a direct message")
        elif thread and await self.in_thread(channel, thread):
            conversation = await self.channel(channel, thread)
        else:
            return None  # a channel message not for the bot (a mention comes as app_mention)
        text = await self.readable(str(event.get("text") or ""))
        files = self.attachments(event)
        if not text and not files:
            return None
        person = await self.person(str(body.get("team_id") or ""), str(event["user"]))
        sent_at = datetime.fromtimestamp(float(ts), UTC) if ts else None
        return Event(person, conversation, text, Kind.MESSAGE, ts, sent_at, files)


def _control(match: re.Match[str]) -> str:
    """One of Slack's `<...>` sequences: a channel, a special mention, a user group, a link."""
    target, _, label = match.group(1).partition("|")
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!"):
        return SPECIAL.get(target) or label or f"@{target[1:].split('^')[0]}"
    if target.startswith("@"):
        return f"@{label or target[1:]}"
    if not label or label == target or target in (f"mailto:{label}", f"http://{label}", f"https://{label}"):
        return label or target
    return f"{label} ({target})"
