"""Files between a person and the bot on Discord: `/export`'s file out, `/import`'s in.

A command's files go only where that person alone sees them: the slash command's ephemeral
answer in their DM with the bot, or the DM itself (`/export` typed in the DM; the slash command
used in a server channel sends the file to the DM and says so ephemerally, since an ephemeral
message is gone once dismissed). A file over the upload limit (the interaction's, else Discord's
10 MiB) is not sent; the text says how large it is and that the operator's `membot export` can
write it. Every attachment of an `/import` can be read (the core checks its size and content).
"""

from __future__ import annotations

import contextlib
import io
import logging

import aiohttp
import discord

from adapters.discord_text import split
from bot.events import Answer, Attachment, Person
from bot.runtime import Runtime

log = logging.getLogger(__name__)

LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
TOO_LARGE = (
    "{name} is {size:.1f} MB, over Discord's upload limit of {limit:.0f} MB, so I cannot send it "
    "here; the operator can write it for you with `membot export`."
)
SENT_TO_DM = "I sent the file to our direct messages: your memory is never shown in a channel."
NO_DM = (
    "I could not send you a direct message (Discord refused: {why}); allow DMs from this server's "
    "members, or open a DM with me and use /export there."
)
NOTHING = discord.AllowedMentions.none()
APOLOGY = "Sorry, something went wrong on my side; please try again."
NOT_AVAILABLE = "That command is not available in this version of membot."
NETWORK = (discord.HTTPException, aiohttp.ClientError, OSError)


def attachment(found: discord.Attachment) -> Attachment:
    """An attachment of a command (`/import`): readable whatever its type."""
    return Attachment(
        found.filename, found.size, found.content_type or "application/octet-stream", found.read
    )


def fitting(answer: Answer, limit: int = LIMIT) -> tuple[str, list[discord.File]]:
    """The answer's text (a line added per file too large to send) and the files Discord takes."""
    text, files = answer.text, []
    for file in answer.files:
        if len(file.data) > limit:
            mb = 1_000_000
            text += "\n" + TOO_LARGE.format(name=file.name, size=len(file.data) / mb, limit=limit / mb)
            log.warning(
                "discord: %s (%d bytes) is over the upload limit; not sent", file.name, len(file.data)
            )
        else:
            files.append(discord.File(io.BytesIO(file.data), filename=file.name))
    return text, files


async def send(channel: discord.abc.Messageable, answer: Answer, limit: int = LIMIT) -> None:
    """The answer in `channel` (a DM), its files with the first part."""
    text, files = fitting(answer, limit)
    for index, part in enumerate(split(text)):
        if index == 0 and files:
            await channel.send(part, files=files, allowed_mentions=NOTHING)
        else:
            await channel.send(part, allowed_mentions=NOTHING)


async def follow_up(interaction: discord.Interaction, answer: Answer) -> None:
    """A deferred slash command's answer, to that person alone: with its files in their DM with
    the bot (there, ephemeral), else the files go to the DM and the ephemeral answer says so."""
    limit = interaction.filesize_limit or LIMIT
    if not answer.files or isinstance(interaction.channel, discord.DMChannel):
        text, files = fitting(answer, limit)
        parts = split(text)
        await interaction.followup.send(parts[0], files=files or discord.utils.MISSING, ephemeral=True)
        for part in parts[1:]:
            await interaction.followup.send(part, ephemeral=True)
        return
    try:
        await send(await interaction.user.create_dm(), answer, limit)
    except discord.Forbidden as exc:
        log.warning("discord: could not DM the export to user %s: %s", interaction.user.id, exc.code)
        await interaction.followup.send(NO_DM.format(why=exc.text or exc.code), ephemeral=True)
        return
    await interaction.followup.send(SENT_TO_DM, ephemeral=True)


async def deferred(
    interaction: discord.Interaction,
    runtime: Runtime,
    person: Person,
    words: str,
    files: tuple[Attachment, ...] = (),
) -> None:
    """A slash command that hands over a file or may take longer than Discord's 3 seconds (an
    import embeds everything again): acknowledged at once, ephemerally, then `follow_up`."""
    user = interaction.user
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        answer = await runtime.answer(person, words, files) or Answer(NOT_AVAILABLE)
    except Exception:
        log.exception("discord: the command %s of user %s failed", words.split()[0], user.id)
        answer = Answer(APOLOGY)
    try:
        await follow_up(interaction, answer)
    except NETWORK as exc:
        log.error("discord: could not answer the command %s of user %s: %s", words.split()[0], user.id, exc)
        with contextlib.suppress(*NETWORK):
            await interaction.followup.send(APOLOGY, ephemeral=True)
