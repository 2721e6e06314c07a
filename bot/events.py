"""What adapters and the core exchange: read this module first if you write an adapter.

An adapter turns each platform event into an `Event` and hands it to `Runtime.handle`; it
registers a `Sender` with `Runtime.register_sender` that delivers the core's `Outgoing` messages.
Nothing else of the core is an adapter's business (`InvalidInput`, re-exported here, is what a
person's bad request to the runtime raises, e.g. an unknown time zone; `ConfigError` is what an
adapter raises when its platform refuses the credentials: one line naming the fix, exit 1).

- `Person`: who speaks, by platform user id (never by display name: names can be faked).
- `Conversation`: where: the platform's channel id, a thread id if any, and whether it is
  private (a DM, the terminal) or public (a channel, a group). What a person says in private
  never reaches the model while their agent answers in public.
- `Event`: one thing that happened: a person's message, a system event, a heartbeat, a reminder
  coming due. `message_id` is the platform's id for it; the core drops a second delivery of the
  same id, also across restarts.
- `Outgoing`: a message from an agent to a conversation, written to the outbox first and handed
  to the platform's sender when the agent sends it (not at the end of its turn).
- `Answer`: what a chat command gives back (`Runtime.answer`): text for that person alone, and
  the `File`s to hand them with it (`/export`'s JSON file). An adapter sends the files where only
  that person sees them (a DM, an ephemeral reply, the terminal's current directory).
- `Sender`: what an adapter registers: `send` delivers one message (raise `DeliveryError`, with
  `permanent=True` when retrying cannot help, e.g. the person closed their DMs; `SenderClosed` when
  the sender itself can send nothing more); `turn_started`
  and `turn_ended` bracket an agent's work in a conversation (for typing indicators).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from bot.errors import ConfigError, InvalidInput

__all__ = [
    "IMPORT_MAX_BYTES",
    "Answer",
    "Attachment",
    "ConfigError",
    "Conversation",
    "DeliveryError",
    "Event",
    "File",
    "InvalidInput",
    "Kind",
    "Outgoing",
    "Person",
    "Sender",
    "SenderClosed",
    "event_from_json",
    "event_to_json",
]


class Kind(StrEnum):
    """The closed set of events an agent is woken by."""

    MESSAGE = "user"  # a person wrote to the bot
    SYSTEM = "event"  # something the bot should know (a person joined, a file failed to load, ...)
    HEARTBEAT = "heartbeat"  # a timed wake-up with nobody waiting for an answer
    REMINDER = "reminder"  # a reminder the agent scheduled has come due


@dataclass(frozen=True)
class Person:
    platform: str
    user_id: str
    name: str = ""


@dataclass(frozen=True)
class Conversation:
    """A place where messages are exchanged: a DM, a channel, a thread of a channel."""

    platform: str
    channel_id: str
    private: bool
    thread_id: str = ""
    name: str = ""  # how to call it in a prompt: "#general", "a DM"
    place: str = ""  # the server or workspace, if any

    @classmethod
    def direct(cls, platform: str, user_id: str) -> Conversation:
        """The private conversation with one person (the terminal, or a DM whose id is unknown)."""
        return cls(platform, f"dm:{user_id}", private=True, name="a direct message")

    def describe(self) -> str:
        """Where this is, in a few words for the model."""
        if self.private:
            return f"a private conversation ({self.name or 'direct message'}) on {self.platform}"
        where = self.name or self.channel_id
        if self.thread_id:
            where = f"a thread in {where}"
        place = f" in {self.place}" if self.place else ""
        return f"the public channel {where}{place} on {self.platform}"


@dataclass(frozen=True)
class Attachment:
    """A file that came with an event. `read` fetches its bytes (only when someone needs them)."""

    name: str
    size: int
    media_type: str
    read: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False, repr=False)


IMPORT_MAX_BYTES = 25_000_000  # the largest file `/import` takes from a chat; downloads stop past it


@dataclass(frozen=True)
class File:
    """A file the core hands a person (the adapter uploads it or writes it to disk)."""

    name: str  # a safe file name: letters, digits, '-', '_', '.'
    data: bytes = field(repr=False)
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Answer:
    """A chat command's answer: its text, and the files that go with it (often none)."""

    text: str
    files: tuple[File, ...] = ()


@dataclass(frozen=True)
class Event:
    person: Person
    conversation: Conversation
    text: str
    kind: Kind = Kind.MESSAGE
    message_id: str = ""  # the platform's id of the message; redeliveries of it are dropped
    sent_at: datetime | None = None  # the platform's timestamp, if it gave one
    attachments: tuple[Attachment, ...] = ()

    @classmethod
    def direct(
        cls,
        platform: str,
        user_id: str,
        text: str,
        name: str = "",
        kind: Kind = Kind.MESSAGE,
        message_id: str = "",
    ) -> Event:
        """A private event from or for one person (the terminal, tests, scripts)."""
        person = Person(platform, user_id, name)
        return cls(person, Conversation.direct(platform, user_id), text, kind, message_id)

    @property
    def source_key(self) -> str:
        """The platform-wide key of this message, for dropping redeliveries ('' when unknown)."""
        if not self.message_id:
            return ""
        c = self.conversation
        return f"{c.platform}:{c.channel_id}:{self.message_id}"


@dataclass(frozen=True)
class Outgoing:
    """One message from an agent, as the outbox holds it."""

    id: int
    agent_id: int
    conversation: Conversation
    text: str
    recipient: str = ""  # the platform user id of the agent's person (to open a DM if needed)
    reply_to: str = ""  # the platform message id this answers, if any
    attempts: int = 0


class DeliveryError(Exception):
    """A send failed. `permanent`: retrying cannot help (no access, user unknown, DMs closed)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SenderClosed(DeliveryError):
    """The sender can deliver nothing more (its output closed, it is stopping): the message stays
    pending, for this platform's next start, and the sender is unregistered."""


class Sender(Protocol):
    """What a platform adapter registers for its platform's outgoing messages."""

    async def send(self, message: Outgoing) -> None: ...

    async def turn_started(self, conversation: Conversation) -> None: ...

    async def turn_ended(self, conversation: Conversation) -> None: ...


def event_to_json(event: Event) -> str:
    """The event as the inbox stores it (attachments without their bytes)."""
    c, p = event.conversation, event.person
    return json.dumps(
        {
            "person": [p.platform, p.user_id, p.name],
            "conversation": [c.platform, c.channel_id, c.private, c.thread_id, c.name, c.place],
            "text": event.text,
            "kind": event.kind.value,
            "message_id": event.message_id,
            "sent_at": event.sent_at.isoformat() if event.sent_at else None,
            "attachments": [[a.name, a.size, a.media_type] for a in event.attachments],
        },
        ensure_ascii=False,
    )


def event_from_json(text: str) -> Event:
    data = json.loads(text)
    platform, channel_id, private, thread_id, name, place = data["conversation"]
    return Event(
        Person(*data["person"]),
        Conversation(platform, channel_id, bool(private), thread_id, name, place),
        data["text"],
        Kind(data["kind"]),
        data["message_id"],
        datetime.fromisoformat(data["sent_at"]) if data["sent_at"] else None,
        tuple(Attachment(n, int(s), t) for n, s, t in data["attachments"]),
    )
