"""The Discord sender: delivers the core's outgoing messages, shows typing while an agent works.

A message goes to its conversation's channel (a DM, a server channel, a thread); a DM known only
by its person (`dm:USERID`, e.g. a reminder for someone who has not written since the start) is
opened first. A reply is a Discord reply to the message it answers; a long one goes out in parts
of at most 2,000 characters, only the first of them the reply. Nobody but the person answered
can be pinged (no @everyone, @here or roles). Discord's refusals map to the core's errors: DMs
closed (50007), no access, an unknown channel or a bad request are permanent; anything else is
retried by the core, and the parts already delivered are not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord

from adapters.discord_text import sanitise, split
from bot.events import Conversation, DeliveryError, Outgoing, SenderClosed

log = logging.getLogger(__name__)

TYPING_EVERY = 8.0  # seconds; Discord shows "is typing" for about 10 s after each POST /typing


class DiscordSender:
    """Implements `bot.events.Sender` for Discord, over whichever client is connected."""

    def __init__(self, log_content: bool = False) -> None:
        self.log_content = log_content
        self.client: discord.Client | None = None
        self.closed = False
        self._parts_sent: dict[int, int] = {}  # outbox id -> parts delivered, for a retry
        self._typing: dict[str, tuple[int, asyncio.Task[None]]] = {}  # channel id -> (turns, task)

    def use(self, client: discord.Client) -> None:
        self.client = client

    def close(self) -> None:
        self.closed = True
        for _, task in self._typing.values():
            task.cancel()
        self._typing.clear()

    def _live_client(self) -> discord.Client:
        client = self.client
        if self.closed or client is None or client.is_closed():
            raise SenderClosed("the Discord client is closed")
        return client

    async def _channel(self, conversation: Conversation, recipient: str) -> discord.abc.Messageable:
        client = self._live_client()
        channel_id = conversation.channel_id
        if channel_id.startswith("dm:"):
            user_id = int(channel_id[3:] or recipient)
            user = client.get_user(user_id) or await client.fetch_user(user_id)
            return await user.create_dm()
        found = client.get_channel(int(channel_id))
        if isinstance(found, discord.abc.Messageable):
            return found
        return client.get_partial_messageable(int(channel_id))

    async def send(self, message: Outgoing) -> None:
        try:
            channel = await self._channel(message.conversation, message.recipient)
            await self._send_parts(channel, message)
        except discord.Forbidden as exc:  # 50007 DMs closed, 50001 no access, 50013 no permission
            raise DeliveryError(
                f"Discord refused the message ({exc.code}): {exc.text}", permanent=True
            ) from exc
        except discord.NotFound as exc:  # 10003 unknown channel, 10013 unknown user
            raise DeliveryError(
                f"Discord does not know the channel ({exc.code}): {exc.text}", permanent=True
            ) from exc
        except discord.HTTPException as exc:
            permanent = 400 <= exc.status < 500 and exc.status != 429
            raise DeliveryError(
                f"Discord answered {exc.status} ({exc.code}): {exc.text}", permanent=permanent
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if self.client is None or self.client.is_closed():
                raise SenderClosed("the Discord client closed while sending") from exc
            raise DeliveryError(f"cannot reach Discord: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a channel or user id that is not a number
            raise DeliveryError(
                f"not a Discord channel: {message.conversation.channel_id}", permanent=True
            ) from exc

    async def _send_parts(self, channel: discord.abc.Messageable, message: Outgoing) -> None:
        parts = split(sanitise(message.text))
        recipient = message.recipient
        mentions = discord.AllowedMentions(
            everyone=False,
            roles=False,
            users=[discord.Object(int(recipient))] if recipient.isdigit() else False,
            replied_user=True,
        )
        reference = None
        if message.reply_to.isdigit() and hasattr(channel, "get_partial_message"):
            answered = channel.get_partial_message(int(message.reply_to))
            reference = answered.to_reference(fail_if_not_exists=False)
        done = self._parts_sent.get(message.id, 0)
        for index, part in enumerate(parts):
            if index < done:
                continue
            await channel.send(part, reference=reference if index == 0 else None, allowed_mentions=mentions)  # type: ignore[arg-type]
            if message.id:
                self._parts_sent[message.id] = index + 1
        self._parts_sent.pop(message.id, None)
        if len(parts) > 1:
            log.info("discord: outbox %d went out in %d parts", message.id, len(parts))

    async def turn_started(self, conversation: Conversation) -> None:
        key = conversation.channel_id
        if key in self._typing:
            turns, task = self._typing[key]
            self._typing[key] = (turns + 1, task)
            return
        if key.startswith("dm:") or not key.isdigit() or self.closed or self.client is None:
            return  # no channel yet to type in
        channel = self.client.get_partial_messageable(int(key))
        self._typing[key] = (1, asyncio.create_task(self._keep_typing(channel)))

    async def turn_ended(self, conversation: Conversation) -> None:
        key = conversation.channel_id
        if key not in self._typing:
            return
        turns, task = self._typing[key]
        if turns > 1:
            self._typing[key] = (turns - 1, task)
            return
        del self._typing[key]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _keep_typing(self, channel: discord.PartialMessageable) -> None:
        """POST /typing now and every few seconds, until cancelled (a failure just stops it)."""
        while True:
            try:
                await channel.typing()
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                log.debug("discord: typing in %s failed: %s", channel.id, exc)
                return
            await asyncio.sleep(TYPING_EVERY)
