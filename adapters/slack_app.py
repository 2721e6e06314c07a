"""`membot slack`: the Slack app (slack-bolt's AsyncApp), in Socket Mode or HTTP mode.

Socket Mode when SLACK_APP_TOKEN (xapp-) is set: the app dials Slack, nothing listens. Else HTTP
mode: Slack posts events to `/slack/events` on MEMBOT_HTTP_HOST:MEMBOT_HTTP_PORT, each request's
signature and age checked by bolt with SLACK_SIGNING_SECRET (a bad or stale one gets 401 and
reaches nobody). Both start by asking Slack who the bot is (auth.test): a refused token stops
the start with one line naming the fix (adapters/slack_connection.py).

Every event is acknowledged at once (Slack retries what is not answered within 3 seconds) and
answered in a task of its own (adapters/slack_events.py makes the neutral event). A redelivery
has the same message ts, which the core answers once, also after a restart. A failure in one
event is logged and the person gets a short apology; the app goes on. `/membot WORDS` and a
command typed in a DM run the core's chat commands and answer that person alone. A command's
files (`/membot export`) are uploaded into the person's DM with the bot, wherever the command
was used (from a channel, an ephemeral line says where it went); `/import` takes the file
attached to a DM whose text is `import` or `/import` (Slack's composer takes a leading `/` as a
slash command, so the bare word counts there). On stop: no new events, turns under way get
MEMBOT_SHUTDOWN_GRACE seconds, then the web client closes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Coroutine
from dataclasses import replace
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError

from adapters.slack_connection import check_credentials, http_mode, identify, socket_mode, web_client
from adapters.slack_events import CACHE_SIZE, NETWORK_ERRORS, PLATFORM, Directory, Json, slack_error
from adapters.slack_sender import SlackSender
from adapters.slack_text import escape, split
from bot.events import IMPORT_MAX_BYTES, Answer, Event, Person
from bot.runtime import Runtime

log = logging.getLogger(__name__)

COMMAND = "/membot"
APOLOGY = "Sorry, something went wrong on my side; please try again."
UNKNOWN = "Unknown command; try /membot help"
SENT_TO_DM = "I sent the file to our direct messages: your memory is never shown in a channel."
IMPORT_HOW = (
    "Slash commands cannot carry files: send me the .json file that /membot export gave you in a "
    "direct message, with the text import."
)
UPLOAD_FAILED = "I could not upload the file (Slack said {why}); the app may need the files:write scope."
COMMAND_WORD = re.compile(r"(?<![\w/])/([a-z]+)\b")
FINISH_SECONDS = 5.0  # after the drain, for events still being translated
BOLT_LOGGER = "slack_bolt.membot"  # bolt's loggers take their level from it


class _TokenNotice(logging.Filter):
    """Drops bolt's notice that SLACK_BOT_TOKEN (bolt reads the environment too) yields to our client."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


class Listeners:
    """The bolt app's listeners: acknowledge, then translate and answer in a task of our own."""

    def __init__(self, runtime: Runtime, directory: Directory, sender: SlackSender) -> None:
        self.runtime = runtime
        self.directory = directory
        self.sender = sender
        self._tasks: set[asyncio.Task[None]] = set()
        self._known: set[str] = set()  # accounts that have an agent
        self._commands: set[str] = set()  # DM commands answered (channel:ts): a redelivery is not

    def app(self, signing_secret: str) -> AsyncApp:
        logger = logging.getLogger(BOLT_LOGGER)
        if not any(isinstance(f, _TokenNotice) for f in logger.filters):
            logger.addFilter(_TokenNotice())
        app = AsyncApp(
            client=self.directory.client,
            signing_secret=signing_secret,
            name="membot.slack",
            logger=logger,
            # The ack goes back once a message is stored (Listeners.answer), before its turn.
            process_before_response=True,
        )
        app.event("message")(self._on_message)
        app.event("app_mention")(self._on_mention)
        app.command(COMMAND)(self._on_command)
        app.event(re.compile(".*"))(self._on_other)  # acknowledged, not logged with its body
        app.error(self._on_error)
        return app

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, seconds: float) -> None:
        """Wait for the tasks under way at most `seconds`, then cut them off."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(list(self._tasks), timeout=seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)

    async def _on_message(self, body: Json, event: Json) -> None:
        await self.answer(body, event, mention=False)

    async def _on_mention(self, body: Json, event: Json) -> None:
        await self.answer(body, event, mention=True)

    async def _on_other(self) -> None:
        return None

    async def _on_command(self, ack: AsyncAck, command: Json, respond: AsyncRespond) -> None:
        await ack()
        self.spawn(self.slash_command(command, respond))

    async def _on_error(self, error: Exception) -> None:
        log.error("a Slack request failed in bolt", exc_info=error)

    async def answer(self, body: Json, event: Json, mention: bool) -> None:
        """One message or mention, to its speaker's agent: stored before Slack gets its ack (so a
        person's messages are answered in the order Slack sent them, whichever process each
        reached), answered in a task of its own; a failure here gets an apology."""
        try:
            found = await self.directory.event_of(body, event, mention)
            if found is None:
                return
            c = found.conversation
            log.info("slack message %s from %s in %s", found.message_id, found.person.user_id, c.channel_id)
            if self.runtime.settings.log_content:
                log.info("slack message %s text: %s", found.message_id, found.text)
            if c.private and found.attachments and found.text.strip().lower() == "import":
                found = replace(found, text="/import")  # the word alone: a leading / is Slack's
            if c.private and self.runtime.is_command(found.text):
                self.spawn(self._guarded(body, event, self.dm_command(found, event)))
                return
            await self.ensure_agent(found.person)
            turn = await self.runtime.accept(found)
        except Exception:
            log.exception("a Slack event (%s) failed", body.get("event_id", "?"))
            self.spawn(self.apologise(event))
            return
        self.spawn(self._guarded(body, event, turn()))

    async def _guarded(self, body: Json, event: Json, work: Awaitable[object]) -> None:
        try:
            await work
        except Exception:
            log.exception("a Slack event (%s) failed", body.get("event_id", "?"))
            await self.apologise(event)

    async def ensure_agent(self, person: Person) -> None:
        """A new person's agent gets the time zone of their Slack profile."""
        if person.user_id in self._known:
            return
        if await self.runtime.find_agent(PLATFORM, person.user_id) is None:
            profile = await self.directory.profile(person.user_id.rpartition(":")[2])
            await self.runtime.agent_for(PLATFORM, person.user_id, person.name, timezone=profile.timezone)
        if len(self._known) >= CACHE_SIZE:
            self._known.clear()
        self._known.add(person.user_id)

    async def dm_command(self, event: Event, raw: Json) -> None:
        """A command typed in a DM: answered as a plain DM, never by the agent; its files (every
        one readable, for `/import`) go to the core with it."""
        key = f"{event.conversation.channel_id}:{event.message_id}"
        if key in self._commands:
            return
        if len(self._commands) >= CACHE_SIZE:
            self._commands.clear()
        self._commands.add(key)
        await self.ensure_agent(event.person)
        files = self.directory.attachments(raw, every=IMPORT_MAX_BYTES)
        answer = await self.runtime.answer(event.person, event.text, files) or Answer(UNKNOWN)
        failed = await self.hand_over(event.conversation.channel_id, answer)
        if failed:
            await self.sender.upload(event.conversation.channel_id, Answer(failed))

    async def hand_over(self, channel: str, answer: Answer) -> str:
        """The answer in the person's DM, its files uploaded there; '' if done, else what to tell
        the person about the refused upload."""
        try:
            await self.sender.upload(channel, answer)
        except SlackApiError as exc:
            if not answer.files:
                raise
            log.error("could not upload %s to %s: %s", answer.files[0].name, channel, slack_error(exc))
            return UPLOAD_FAILED.format(why=slack_error(exc))
        return ""

    async def slash_command(self, command: Json, respond: AsyncRespond) -> None:
        """`/membot WORDS`: the chat command `/WORDS`, answered to that person alone."""
        try:
            person = await self.directory.person(str(command.get("team_id") or ""), str(command["user_id"]))
            await self.ensure_agent(person)
            words = str(command.get("text") or "").strip() or "help"
            log.info("slack command %s %s from %s", COMMAND, words.split()[0], person.user_id)
            found = await self.slash_answer(person, words, str(command.get("channel_id") or ""))
            answer = found.text
            if not words.lower().startswith("memory"):  # help and usage lines name the Slack command
                answer = self.as_slash_commands(answer)
        except Exception:
            log.exception("the Slack command %s failed", COMMAND)
            answer = APOLOGY
        if not answer:
            return
        try:
            for part in split(escape(answer)):
                if command.get("response_url"):
                    await respond(text=part, response_type="ephemeral")
                else:
                    await self.directory.client.chat_postEphemeral(
                        channel=str(command.get("channel_id") or ""),
                        user=str(command.get("user_id") or ""),
                        text=part,
                    )
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.error("could not answer the Slack command %s: %s", COMMAND, slack_error(exc))
        except Exception:
            log.exception("could not answer the Slack command %s", COMMAND)

    async def slash_answer(self, person: Person, words: str, channel: str) -> Answer:
        """The command's answer; its files uploaded to the person's DM, and then what to say
        ephemerally where the command was used ('' when that is the DM itself)."""
        if words.split()[0].lower() == "import":
            return Answer(IMPORT_HOW)
        answer = await self.runtime.answer(person, "/" + words) or Answer(UNKNOWN)
        if not answer.files:
            return answer
        dm = await self.sender.dm(person.user_id.rpartition(":")[2])
        failed = await self.hand_over(dm, answer)
        return Answer(failed or ("" if dm == channel else SENT_TO_DM))

    def as_slash_commands(self, text: str) -> str:
        """'/timezone ZONE' as '/membot timezone ZONE': the words a person types in Slack."""

        def slash(match: re.Match[str]) -> str:
            word = match.group(1)
            return f"{COMMAND} {word}" if self.runtime.is_command(f"/{word}") else match.group(0)

        return COMMAND_WORD.sub(slash, text)

    async def apologise(self, event: Json) -> None:
        """The short apology, where the person spoke (best effort)."""
        channel = str(event.get("channel") or "")
        if not channel or not event.get("user"):
            return
        thread = (
            "" if event.get("channel_type") == "im" else str(event.get("thread_ts") or event.get("ts") or "")
        )
        try:
            await self.sender.post(channel, APOLOGY, thread)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            log.error("could not apologise in %s: %s", channel, slack_error(exc))


async def serve(runtime: Runtime, stopping: asyncio.Event) -> None:
    """Run the Slack app until `stopping` is set (see the module's docstring)."""
    settings = runtime.settings
    check_credentials(settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret)
    if not settings.log_content:
        _quiet_sdk_logs()
    session = aiohttp.ClientSession()
    try:
        client = web_client(settings.slack_bot_token, settings.slack_api_url, session)
        bot = await identify(client)
        directory = Directory(client, bot, session, settings.attachment_max_bytes)
        sender = SlackSender(client, directory)
        listeners = Listeners(runtime, directory, sender)
        app = listeners.app(settings.slack_signing_secret)
        if settings.slack_app_token:
            stop = await socket_mode(app, client, settings.slack_app_token)
        else:
            stop = await http_mode(app, settings.http_host, settings.http_port)
        log.info("Slack: running as %s in workspace %s", bot.user_id, bot.team_id)
        try:
            await runtime.register_sender(PLATFORM, sender)
            listeners.spawn(_recover(runtime))
            await stopping.wait()
        finally:
            await stop()
            await runtime.drain(settings.shutdown_grace)
            await listeners.finish(FINISH_SECONDS)
            sender.closed = True
            log.info("Slack: stopped")
    finally:
        await session.close()


def _quiet_sdk_logs() -> None:
    """slack_sdk's DEBUG lines and bolt's INFO ones (a refused request's) carry message bodies."""
    for name, floor in (("slack_sdk", logging.INFO), (BOLT_LOGGER, logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), floor))


async def _recover(runtime: Runtime) -> None:
    await runtime.recover(lambda event: event.conversation.platform == PLATFORM)
