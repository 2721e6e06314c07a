"""The Discord adapter: `membot discord`. Discord messages in as neutral events, the core's out.

`serve(runtime, stopping)` logs in, syncs the slash commands, registers the sender and connects
to the gateway until `stopping` is set; then turns under way finish (`Runtime.drain`) and the
client closes. Which messages are answered: every DM; in a server, those that mention the bot,
reply to one of its messages, or are in a channel of MEMBOT_DISCORD_CHANNELS. Each speaker is
answered by their own agent, told whether the place is private (a DM) or public (a channel,
where the name of the server and channel and the speaker are in its prompt). A thread is a
conversation of its own. `/memory`, `/timezone`, `/help` (and `/quiet`, where the core has it)
are slash commands answered to the person alone, and the same words typed in a DM. `/export`
hands over a file and `/import` takes one (adapters/discord_files.py): typed in a server channel,
they are refused there without a word of memory.

DISCORD_API_URL moves the REST base; when it is not Discord's, the gateway URL is asked from its
`GET /gateway` (a plain client never asks: it dials Discord's fixed gateway), so the bot runs
against a local stand-in of Discord. discord.py itself reconnects and RESUMEs; the core drops a
redelivered message by its id.

MEMBOT_DISCORD_SHARDS=FIRST-LAST/COUNT runs only those gateway shards, so processes on one
database split one bot: Discord sends a server's events to shard (server id >> 22) % COUNT and
every DM to shard 0. At start each process answers only what its own shards received
(`receives`); any process delivers to any channel (the sender speaks REST, whatever its shards),
the outbox's claims sending each message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters import discord_files
from adapters.discord_sender import DiscordSender
from adapters.discord_text import mentions_to_names, readable, split
from bot.events import Answer, Attachment, ConfigError, Conversation, Event, Person
from bot.runtime import Runtime

log = logging.getLogger(__name__)

PLATFORM = "discord"
DEFAULT_API = "https://discord.com/api/v10"
APOLOGY = "Sorry, something went wrong on my side; please try again."
NOT_AVAILABLE = "That command is not available in this version of membot."
IN_PUBLIC = "Use the slash command {command} for that here: its answer is shown to you alone."
FILES_IN_PUBLIC = "Use {command} in a direct message with me: your memory is never shown in a channel."
FILE_COMMANDS = ("/export", "/import")
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
NO_CONTENT_WARNING = (
    "Discord refused the Message Content intent, so membot runs without it: messages in servers "
    "that do not mention the bot or reply to it arrive empty, and MEMBOT_DISCORD_CHANNELS cannot "
    "work. Switch it on in the Developer Portal: your application -> Bot -> Privileged Gateway "
    "Intents -> Message Content Intent, then restart membot."
)


def intents(message_content: bool = True) -> discord.Intents:
    chosen = discord.Intents.default()
    chosen.guilds = chosen.guild_messages = chosen.dm_messages = True
    chosen.message_content = message_content
    return chosen


class ShardPlan(Protocol):
    """MEMBOT_DISCORD_SHARDS as the settings parse it (`Settings.discord_shard_plan`)."""

    @property
    def count(self) -> int | None: ...  # shards in all; None: as many as Discord recommends

    @property
    def ids(self) -> tuple[int, ...] | None: ...  # the ones this process runs; None: every one


def make_client(plan: ShardPlan | None, chosen: discord.Intents) -> discord.Client:
    """A plain client (no plan), or an AutoShardedClient for MEMBOT_DISCORD_SHARDS=auto or a count
    (every shard here) or FIRST-LAST/COUNT (only those shards here, the rest in other processes)."""
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # a text bot: no voice
    if plan is None:
        return discord.Client(intents=chosen)
    if plan.ids is not None:
        log.info("discord: shards %d-%d of %d in this process", plan.ids[0], plan.ids[-1], plan.count)
        return discord.AutoShardedClient(intents=chosen, shard_ids=list(plan.ids), shard_count=plan.count)
    return discord.AutoShardedClient(intents=chosen, shard_count=plan.count)


def receives(client: discord.Client, conversation: Conversation) -> bool:
    """Whether this process's shards receive the conversation's messages: every Discord one,
    unless it runs only some shards; then DMs only with shard 0 (Discord sends them there) and
    server channels only of the servers its shards hold."""
    if conversation.platform != PLATFORM:
        return False
    ids = getattr(client, "shard_ids", None)
    if not ids:
        return True
    if conversation.private:
        return 0 in ids
    return conversation.channel_id.isdigit() and client.get_channel(int(conversation.channel_id)) is not None


class DiscordBot:
    """One Discord connection's handlers, on a client made by `make_client`."""

    def __init__(self, runtime: Runtime, client: discord.Client, sender: DiscordSender) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.client = client
        self.sender = sender
        self.recovered = False
        self.tree = app_commands.CommandTree(client)
        self._add_commands()
        client.event(self.on_ready)
        client.event(self.on_message)

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("discord: connected as %s (id %s)", user, user.id if user else "?")
        if not self.recovered:
            self.recovered = True
            await self.runtime.recover(lambda event: receives(self.client, event.conversation))

    async def on_message(self, message: discord.Message) -> None:
        """Answer one message if it is for the bot; a failure is logged and apologised for."""
        try:
            event = self.event_for(message)
            if event is not None:
                await self._answer(message, event)
        except Exception as exc:
            log.error(
                "discord: message %s from user %s failed: %s",
                message.id,
                message.author.id,
                type(exc).__name__,
                exc_info=exc,
            )
            with contextlib.suppress(discord.HTTPException, aiohttp.ClientError, OSError):
                await message.channel.send(APOLOGY, allowed_mentions=discord.AllowedMentions.none())

    async def _answer(self, message: discord.Message, event: Event) -> None:
        if self.runtime.is_command(event.text):
            command = event.text.split()[0]
            if event.conversation.private:
                files = tuple(discord_files.attachment(a) for a in message.attachments)
                answer = await self.runtime.answer(event.person, event.text, files) or Answer(NOT_AVAILABLE)
            elif command.lower() in FILE_COMMANDS:
                answer = Answer(FILES_IN_PUBLIC.format(command=command.lower()))
            else:
                answer = Answer(IN_PUBLIC.format(command=command))
            await discord_files.send(message.channel, answer)
            return
        if self.settings.log_content:
            log.info("discord: message %s text: %s", message.id, event.text)
        await self.runtime.handle(event)

    def event_for(self, message: discord.Message) -> Event | None:
        """The neutral event for a message the bot should answer; None for any other."""
        me = self.client.user
        author = message.author
        if me is None or author.id == me.id or author.bot or message.type not in ANSWERED_TYPES:
            return None
        if message.guild is not None and not self._for_me(message, me.id):
            return None
        names = _mention_names(message)
        text = mentions_to_names(message.content, me.id, names)
        files = tuple(_attachment(a) for a in message.attachments)
        if not text and not files:
            return None
        return Event(
            Person(PLATFORM, str(author.id), author.display_name),
            conversation_of(message.channel),
            text,
            message_id=str(message.id),
            sent_at=message.created_at,
            attachments=files,
        )

    def _for_me(self, message: discord.Message, me: int) -> bool:
        if any(user.id == me for user in message.mentions):
            return True
        answered = message.reference.resolved if message.reference else None
        if isinstance(answered, discord.Message) and answered.author.id == me:
            return True
        channels = self.settings.discord_channel_ids
        parent = getattr(message.channel, "parent_id", None)
        return str(message.channel.id) in channels or (parent is not None and str(parent) in channels)

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(name="memory", description="What I remember about you (only you see this)")
        async def memory(interaction: discord.Interaction) -> None:
            await self._command(interaction, "/memory")

        @tree.command(name="timezone", description="Set your time zone, for reminders and dates")
        @app_commands.describe(zone="An IANA time zone such as Europe/Sofia or America/New_York")
        async def timezone(interaction: discord.Interaction, zone: str) -> None:
            await self._command(interaction, f"/timezone {zone}")

        @tree.command(name="quiet", description="No unprompted messages from me; 'off' allows them again")
        @app_commands.describe(mode="off: allow unprompted messages again")
        @app_commands.choices(mode=[app_commands.Choice(name="off", value="off")])
        async def quiet(
            interaction: discord.Interaction, mode: app_commands.Choice[str] | None = None
        ) -> None:
            await self._command(interaction, "/quiet off" if mode else "/quiet")

        @tree.command(
            name="link", description="Share one memory with your other account (code from /link there)"
        )
        @app_commands.describe(code="The code /link gave you on your other account; leave out to get one")
        async def link(interaction: discord.Interaction, code: str = "") -> None:
            await self._command(interaction, f"/link {code}".strip())

        @tree.command(name="unlink", description="This account leaves the shared memory and starts over")
        async def unlink(interaction: discord.Interaction) -> None:
            await self._command(interaction, "/unlink")

        @tree.command(name="forget", description="Delete what I keep about you (asks you to confirm first)")
        @app_commands.describe(
            what="leave out: everything; 'passage ID', 'about QUERY', or 'confirm' after the preview"
        )
        async def forget(interaction: discord.Interaction, what: str = "") -> None:
            await self._command(interaction, f"/forget {what}".strip())

        @tree.command(name="export", description="Everything I keep about you, as one file (for you alone)")
        async def export(interaction: discord.Interaction) -> None:
            await discord_files.deferred(interaction, self.runtime, person_of(interaction.user), "/export")

        @tree.command(name="import", description="Make a file /export gave you your memory here")
        @app_commands.describe(file="The .json file that /export gave you")
        async def import_(interaction: discord.Interaction, file: discord.Attachment) -> None:
            files = (discord_files.attachment(file),)
            await discord_files.deferred(
                interaction, self.runtime, person_of(interaction.user), "/import", files
            )

        @tree.command(name="help", description="What you can ask me to do")
        async def help_(interaction: discord.Interaction) -> None:
            await self._command(interaction, "/help")

    async def _command(self, interaction: discord.Interaction, words: str) -> None:
        """A slash command's answer, ephemeral (shown to that person alone)."""
        user = interaction.user
        person = person_of(user)
        try:
            answer = await self.runtime.command(person, words) or NOT_AVAILABLE
        except Exception:
            log.exception("discord: the command %s of user %s failed", words.split()[0], user.id)
            answer = APOLOGY
        parts = split(answer)
        await interaction.response.send_message(parts[0], ephemeral=True)
        for part in parts[1:]:
            await interaction.followup.send(part, ephemeral=True)

    async def sync_commands(self) -> None:
        """Register the slash commands: with one guild (at once) if MEMBOT_DISCORD_GUILD is set,
        else globally (Discord takes up to an hour to show them everywhere)."""
        guild_id = self.settings.discord_guild.strip()
        try:
            if guild_id:
                guild = discord.Object(int(guild_id))
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
            else:
                synced = await self.tree.sync()
        except (discord.HTTPException, ValueError) as exc:
            log.warning(
                "discord: could not register the slash commands (%s); typed commands in a DM still "
                "work. Invite the bot with the applications.commands scope, and check that "
                "MEMBOT_DISCORD_GUILD is the id of a server the bot is in.",
                exc,
            )
            return
        log.info(
            "discord: %d slash commands synced %s",
            len(synced),
            f"to guild {guild_id}" if guild_id else "globally",
        )


def person_of(user: discord.User | discord.Member) -> Person:
    return Person(PLATFORM, str(user.id), user.display_name)


def conversation_of(channel: discord.abc.MessageableChannel) -> Conversation:
    """Where a message was written: a DM, a server channel, or a thread of one."""
    guild = getattr(channel, "guild", None)
    if guild is None:
        return Conversation(PLATFORM, str(channel.id), private=True, name="a direct message")
    name = f"#{getattr(channel, 'name', None) or channel.id}"
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        name = f"#{parent.name if parent else channel.parent_id} › {channel.name}"
        return Conversation(PLATFORM, str(channel.id), False, str(channel.id), name, guild.name)
    return Conversation(PLATFORM, str(channel.id), private=False, name=name, place=guild.name)


def _mention_names(message: discord.Message) -> Iterable[tuple[str, str]]:
    for user in message.mentions:
        yield f"<@{user.id}>", "@" + user.display_name
        yield f"<@!{user.id}>", "@" + user.display_name
    for role in message.role_mentions:
        yield f"<@&{role.id}>", "@" + role.name
    for channel in message.channel_mentions:
        yield f"<#{channel.id}>", "#" + channel.name


def _attachment(attachment: discord.Attachment) -> Attachment:
    media = attachment.content_type or "application/octet-stream"
    read = attachment.read if readable(attachment.filename, media) else None
    return Attachment(attachment.filename, attachment.size, media, read=read)


async def _discover_gateway(client: discord.Client, api: str) -> None:
    """Point the gateway at the one DISCORD_API_URL's `GET /gateway` names (the class attribute:
    discord.py returns to it after an INVALID_SESSION)."""
    if api.rstrip("/") == DEFAULT_API:
        return
    data = await client.http.request(discord.http.Route("GET", "/gateway"))
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(data["url"])
    log.info("discord: gateway %s (from DISCORD_API_URL)", data["url"])


async def _login(client: discord.Client, token: str, api: str) -> None:
    try:
        await client.login(token)
    except discord.LoginFailure:
        raise ConfigError(
            "Discord refused DISCORD_TOKEN: copy the bot token from the Developer Portal "
            "(your application -> Bot -> Reset Token) into .env"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConfigError(
            f"cannot reach Discord at {api} ({type(exc).__name__}): check the network, or DISCORD_API_URL"
        ) from None


def _quiet_discord_logs(log_content: bool) -> None:
    """discord.py's DEBUG lines carry message bodies: held at INFO unless MEMBOT_LOG_CONTENT."""
    if not log_content:
        logger = logging.getLogger("discord")
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


async def serve(runtime: Runtime, stopping: asyncio.Event) -> None:
    """Run the Discord bot until `stopping` is set; raises ConfigError if Discord refuses it."""
    settings = runtime.settings
    _quiet_discord_logs(settings.log_content)
    api = settings.discord_api_url.rstrip("/")
    discord.http.Route.BASE = api
    sender = DiscordSender(settings.log_content)
    content = True
    first = True
    try:
        while True:
            client = make_client(settings.discord_shard_plan, intents(content))
            try:
                bot = DiscordBot(runtime, client, sender)
                await _login(client, settings.discord_token, api)
                await _discover_gateway(client, api)
                if first:
                    await bot.sync_commands()
                    first = False
                sender.use(client)
                runtime.register_sender(PLATFORM, sender)
                await _connected(client, runtime, stopping)
                return
            except discord.PrivilegedIntentsRequired:
                if not content:
                    raise
                log.warning(NO_CONTENT_WARNING)
                content = False
            finally:
                if not client.is_closed():
                    await client.close()
    except discord.ConnectionClosed as exc:
        raise ConfigError(
            f"Discord closed the gateway connection (code {exc.code}): check DISCORD_TOKEN and "
            "MEMBOT_DISCORD_SHARDS (README, Run on Discord)"
        ) from None
    finally:
        sender.close()


async def _connected(client: discord.Client, runtime: Runtime, stopping: asyncio.Event) -> None:
    """Keep the gateway connection until `stopping`; then drain the turns and close."""
    connection = asyncio.create_task(client.connect(), name="discord-gateway")
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([connection, stop], return_when=asyncio.FIRST_COMPLETED)
        if connection.done():
            connection.result()  # raises what ended it (PrivilegedIntentsRequired, ConnectionClosed)
            log.warning("discord: the gateway connection ended; membot stops")
            return
        log.info("discord: stopping")
        await runtime.drain(runtime.settings.shutdown_grace)
        await client.close()
        try:
            await asyncio.wait_for(connection, timeout=10)
        except TimeoutError:
            log.warning("discord: the gateway did not close within 10 s; cutting it off")
        except asyncio.CancelledError:
            if not connection.cancelled():
                raise
        log.info("discord: stopped")
    finally:
        stop.cancel()
        if not connection.done():
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connection
        if not client.is_closed():
            await client.close()
