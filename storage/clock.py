"""Timestamps as stored: ISO 8601 in UTC with microseconds, so text order is time order."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    return to_iso(datetime.now(UTC))


def to_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
