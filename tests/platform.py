"""A stand-in for a chat platform: records what the core's sender hands it, can fail on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.events import Conversation, DeliveryError, Event, Kind, Outgoing, Person


@dataclass
class RecordingPlatform:
    """Implements `bot.events.Sender` the way an adapter would, against an imaginary platform."""

    sent: list[Outgoing] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    signals: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0  # this many sends fail (transiently) before the platform takes them
    refuse: bool = False  # every send fails permanently (the person closed their DMs)

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.sent]

    async def send(self, message: Outgoing) -> None:
        if self.refuse:
            raise DeliveryError("Cannot send messages to this user (50007)", permanent=True)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise DeliveryError("503 Service Unavailable")
        self.sent.append(message)
        self.times.append(time.monotonic())

    async def turn_started(self, conversation: Conversation) -> None:
        self.signals.append(("started", conversation.channel_id))

    async def turn_ended(self, conversation: Conversation) -> None:
        self.signals.append(("ended", conversation.channel_id))


CHANNEL = Conversation("chat", "C-general", private=False, name="#general", place="Acme")


def dm(user: str, text: str, message_id: str = "", kind: Kind = Kind.MESSAGE) -> Event:
    person = Person("chat", user, user.title())
    return Event(person, Conversation("chat", f"D-{user}", private=True, name="a DM"), text, kind, message_id)


def public(user: str, text: str, message_id: str = "") -> Event:
    return Event(Person("chat", user, user.title()), CHANNEL, text, Kind.MESSAGE, message_id)


async def eventually(condition: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait until `condition()` is true (a background task reached a point), at most `seconds`."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {seconds} s")
