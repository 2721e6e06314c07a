"""The Slack sender: the outbox's messages posted to Slack (chat.postMessage).

The agent's Markdown becomes mrkdwn, cut near 4,000 characters (adapters/slack_text.py); a
reply in a channel goes in its thread. A DM known only by its person (`dm:TEAM:USER`, from a
reminder or a heartbeat) is opened first (conversations.open) and remembered. Rate limits (429)
are waited out by the web client's retry handler (Slack's Retry-After); a message cut in parts
that fails half-way goes on from the first part not yet posted when the outbox retries it.
Slack's refusals that retrying cannot cure (no such channel, not in it, archived, no such
user, a bot, a deactivated account) are permanent; after the app stops, `SenderClosed`.
Slack bots have no typing indicator in the Events API: the turn signals do nothing. `upload`
hands a command's files to a person (files_upload_v2, needs the files:write scope).
"""

from __future__ import annotations

import re

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import CACHE_SIZE, NETWORK_ERRORS, Directory, slack_error
from adapters.slack_text import escape, split, to_mrkdwn
from bot.events import Answer, Conversation, DeliveryError, Outgoing, SenderClosed

SLACK_CHANNEL = re.compile(r"^[CDG][A-Z0-9]+$")
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "user_not_found",
        "cannot_dm_bot",
        "account_inactive",
        "user_disabled",
    }
)


class SlackSender:
    def __init__(self, client: AsyncWebClient, directory: Directory) -> None:
        self.client = client
        self.directory = directory
        self.closed = False
        self._dms: dict[str, str] = {}  # user id -> its DM channel id
        self._posted: dict[int, int] = {}  # outbox id -> parts already posted (a retry goes on from there)

    async def send(self, message: Outgoing) -> None:
        if self.closed:
            raise SenderClosed("the Slack app is stopping")
        conversation = message.conversation
        parts = split(to_mrkdwn(message.text))
        if not parts:
            return  # nothing to show (Slack refuses an empty message)
        try:
            channel = await self._channel(message)
            for number in range(self._posted.get(message.id, 0), len(parts)):
                await self.post(channel, parts[number], conversation.thread_id)
                if message.id:
                    self._posted[message.id] = number + 1
        except SlackApiError as exc:
            code = slack_error(exc)
            raise DeliveryError(f"Slack refused the message: {code}", permanent=code in PERMANENT) from exc
        except NETWORK_ERRORS as exc:
            if self.closed:
                raise SenderClosed("the Slack app is stopping") from exc
            raise DeliveryError(f"Slack could not be reached: {slack_error(exc)}") from exc
        self._posted.pop(message.id, None)
        if len(self._posted) > CACHE_SIZE:
            self._posted.clear()

    async def post(self, channel: str, text: str, thread_ts: str = "") -> None:
        """One chat.postMessage (mrkdwn text), in `thread_ts` if given."""
        if thread_ts:
            await self.client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts, mrkdwn=True)
            self.directory.joined(channel, thread_ts)
        else:
            await self.client.chat_postMessage(channel=channel, text=text, mrkdwn=True)

    async def _channel(self, message: Outgoing) -> str:
        conversation = message.conversation
        if SLACK_CHANNEL.match(conversation.channel_id):
            return conversation.channel_id
        if not conversation.private:
            raise DeliveryError(f"{conversation.channel_id!r} is not a Slack channel", permanent=True)
        return await self.dm((message.recipient or conversation.channel_id).rpartition(":")[2])

    async def dm(self, user: str) -> str:
        """The id of the bot's DM with this Slack user id (conversations.open, remembered)."""
        if user not in self._dms:
            response = await self.client.conversations_open(users=user)
            if len(self._dms) >= CACHE_SIZE:
                self._dms.clear()
            self._dms[user] = str((response.get("channel") or {})["id"])
        return self._dms[user]

    async def upload(self, channel: str, answer: Answer) -> None:
        """The answer in `channel`: each file with the text as its comment (the first file's), or
        the text alone. Raises SlackApiError or a network error as the client does."""
        if not answer.files:
            for part in split(escape(answer.text)):
                await self.post(channel, part)
            return
        for number, file in enumerate(answer.files):
            await self.client.files_upload_v2(
                channel=channel,
                content=file.data,
                filename=file.name,
                title=file.name,
                initial_comment=escape(answer.text) if number == 0 else None,
            )

    async def turn_started(self, conversation: Conversation) -> None:
        return None

    async def turn_ended(self, conversation: Conversation) -> None:
        return None
