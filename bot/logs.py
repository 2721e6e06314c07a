"""Logging for the `membot` command: one stderr handler whose filter keeps secrets out of it.

`setup(settings, quiet)` configures the root logger. Its handler carries a `SecretFilter` that
rewrites every record, whatever logger it comes from, before it is formatted: each configured
secret (every Settings field marked `secret=True`) and anything shaped like a credential
(`Bearer …`, `sk-…`, Slack's `xox?-…` and `xapp-…`) is masked in the message, its arguments and
its traceback. The HTTP stack under the openai client (httpx and httpcore, and their `httpx2`
and `httpcore2` twins) logs a line per connection event; those loggers are held at WARNING
unless MEMBOT_LOG_LEVEL=DEBUG. The `openai` logger's DEBUG lines carry request bodies (people's
text), so it also needs MEMBOT_LOG_CONTENT=true to go below WARNING.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import fields
from typing import TextIO

from bot.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WIRE_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
BODY_LOGGERS = ("openai",)
MIN_SECRET = 4  # shorter values would mask ordinary words

CREDENTIAL = re.compile(
    r"(?P<bearer>\bBearer\s+)[^\s\"',;\[]+"
    r"|\bsk-[A-Za-z0-9_\-]{8,}"
    r"|\bxox[abposr]-[A-Za-z0-9\-]{6,}"
    r"|\bxapp-[A-Za-z0-9\-]{6,}",
    re.IGNORECASE,
)


def secrets_of(settings: Settings) -> dict[str, str]:
    """The configured secrets, by variable name (only those set)."""
    found: dict[str, str] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and isinstance(value, str) and len(value) >= MIN_SECRET:
            found[f.metadata["env"]] = value
    return found


class SecretFilter(logging.Filter):
    """Masks secrets in every record it sees; never drops one."""

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        # longest first, so a secret that contains another is masked whole
        self.secrets = sorted(secrets.items(), key=lambda item: -len(item[1]))

    def mask(self, text: str) -> str:
        for name, value in self.secrets:
            if value in text:
                text = text.replace(value, f"[{name}]")
        return CREDENTIAL.sub(lambda m: (m.group("bearer") or "") + "[secret]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: mask what is there rather than lose the line
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class MembotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler `setup` installs (one at a time)."""


def setup(settings: Settings, quiet: bool = False, stream: TextIO | None = None) -> logging.Handler:
    """Send log records to stderr (or `stream`) through a SecretFilter; `quiet`: WARNING and up."""
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    if quiet:
        level = max(level, logging.WARNING)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, MembotHandler)]:
        root.removeHandler(old)
    handler = MembotHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(SecretFilter(secrets_of(settings)))
    root.addHandler(handler)
    root.setLevel(level)
    debug = level <= logging.DEBUG
    quieter = max(level, logging.WARNING)
    _set_level(WIRE_LOGGERS, level if debug else quieter)
    _set_level(BODY_LOGGERS, level if debug and settings.log_content else quieter)
    return handler


def _set_level(names: Iterable[str], level: int) -> None:
    for name in names:
        logging.getLogger(name).setLevel(level)
