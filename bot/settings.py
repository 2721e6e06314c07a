"""Settings: read once at start from the environment and `.env`, validated eagerly, then frozen.

Nothing else in membot reads `os.environ`. Each field names its variable in `metadata["env"]`;
`.env.example` lists the same variables (a test holds them equal).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from bot.errors import ConfigError

OPENAI_URL = "https://api.openai.com/v1"


def _env(name: str, doc: str, *, secret: bool = False) -> dict[str, Any]:
    return {"env": name, "doc": doc, "secret": secret}


def _default_db() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "membot" / "membot.db")


@dataclass(frozen=True)
class Settings:
    openai_api_key: str = field(
        default="", repr=False, metadata=_env("OPENAI_API_KEY", "API key of the LLM endpoint", secret=True)
    )
    openai_base_url: str = field(
        default=OPENAI_URL, metadata=_env("OPENAI_BASE_URL", "OpenAI-compatible endpoint (Ollama, vLLM, ...)")
    )
    model: str = field(default="gpt-4o-mini", metadata=_env("MEMBOT_MODEL", "chat model name"))
    db: str = field(
        default_factory=_default_db,
        repr=False,
        metadata=_env("MEMBOT_DB", "path of the SQLite file, or a postgresql:// URL"),
    )
    context_window: int = field(
        default=16000, metadata=_env("MEMBOT_CONTEXT_WINDOW", "tokens the model may see per call")
    )
    embedder: str = field(
        default="wordllama",
        metadata=_env("MEMBOT_EMBEDDER", "wordllama (offline) or openai:MODEL (uses /v1/embeddings)"),
    )
    embedding_base_url: str = field(
        default="",
        metadata=_env(
            "MEMBOT_EMBEDDING_BASE_URL", "endpoint for openai:MODEL embeddings, if not OPENAI_BASE_URL"
        ),
    )
    timezone: str = field(default="UTC", metadata=_env("MEMBOT_TIMEZONE", "IANA zone for new users"))
    max_steps: int = field(default=10, metadata=_env("MEMBOT_MAX_STEPS", "LLM calls per event at most"))
    block_limit: int = field(
        default=2000, metadata=_env("MEMBOT_BLOCK_LIMIT", "characters per core memory block")
    )
    persona: str = field(
        default="membot",
        metadata=_env("MEMBOT_PERSONA", "persona of new agents: NAME of a NAME.txt in the personas folders"),
    )
    human: str = field(
        default="",
        metadata=_env("MEMBOT_HUMAN", "human block of new agents: NAME of a NAME.txt in the humans folders"),
    )
    personas_dir: str = field(
        default="", metadata=_env("MEMBOT_PERSONAS_DIR", "folder of persona .txt files (default: ./personas)")
    )
    humans_dir: str = field(
        default="", metadata=_env("MEMBOT_HUMANS_DIR", "folder of human .txt files (default: ./humans)")
    )
    llm_timeout: float = field(
        default=60.0,
        metadata=_env("MEMBOT_LLM_TIMEOUT", "seconds per LLM attempt (each retry gets as long again)"),
    )
    llm_retries: int = field(
        default=3, metadata=_env("MEMBOT_LLM_RETRIES", "retries on 429/5xx/connection errors")
    )
    turn_deadline: float = field(
        default=300.0,
        metadata=_env("MEMBOT_TURN_DEADLINE", "seconds one turn may take in all before it is stopped"),
    )
    replay_hours: float = field(
        default=24.0,
        metadata=_env(
            "MEMBOT_REPLAY_HOURS",
            "at start, answer stored but unanswered messages at most this many hours old",
        ),
    )
    llm_total_timeout: float = field(
        default=120.0,
        metadata=_env(
            "MEMBOT_LLM_TOTAL_TIMEOUT",
            "seconds one LLM call may take in all, retries and their back-off included",
        ),
    )
    db_lock_wait: float = field(
        default=120.0,
        metadata=_env(
            "MEMBOT_DB_LOCK_WAIT",
            "seconds a database call waits for another process's lock before the message is refused",
        ),
    )
    log_level: str = field(default="INFO", metadata=_env("MEMBOT_LOG_LEVEL", "DEBUG, INFO, WARNING"))
    log_content: bool = field(
        default=False, metadata=_env("MEMBOT_LOG_CONTENT", "log message text and memory (true/false)")
    )
    discord_token: str = field(
        default="", repr=False, metadata=_env("DISCORD_TOKEN", "Discord bot token", secret=True)
    )
    slack_bot_token: str = field(
        default="", repr=False, metadata=_env("SLACK_BOT_TOKEN", "Slack bot token (xoxb-)", secret=True)
    )
    slack_app_token: str = field(
        default="",
        repr=False,
        metadata=_env("SLACK_APP_TOKEN", "Slack app token for Socket Mode (xapp-)", secret=True),
    )
    slack_signing_secret: str = field(
        default="",
        repr=False,
        metadata=_env("SLACK_SIGNING_SECRET", "Slack signing secret (HTTP mode)", secret=True),
    )
    slack_api_url: str = field(
        default="https://slack.com/api/", metadata=_env("SLACK_API_URL", "Slack Web API base URL")
    )
    http_host: str = field(
        default="127.0.0.1", metadata=_env("MEMBOT_HTTP_HOST", "address of the HTTP listener")
    )
    http_port: int = field(default=3000, metadata=_env("MEMBOT_HTTP_PORT", "port of the HTTP listener"))
    discord_api_url: str = field(
        default="https://discord.com/api/v10",
        metadata=_env("DISCORD_API_URL", "Discord REST base URL; its GET /gateway also gives the gateway"),
    )
    discord_channels: str = field(
        default="",
        metadata=_env(
            "MEMBOT_DISCORD_CHANNELS", "Discord channel ids (comma-separated) where every message is answered"
        ),
    )
    discord_guild: str = field(
        default="",
        metadata=_env(
            "MEMBOT_DISCORD_GUILD", "sync slash commands to this guild id only (development); empty: global"
        ),
    )
    discord_shards: str = field(
        default="",
        metadata=_env(
            "MEMBOT_DISCORD_SHARDS",
            "empty: one connection; auto or a count: all shards here; FIRST-LAST/COUNT: only those",
        ),
    )
    attachment_max_bytes: int = field(
        default=20_000,
        metadata=_env(
            "MEMBOT_ATTACHMENT_MAX_BYTES", "largest text file (.txt, .md) read from a chat message"
        ),
    )
    heartbeat_minutes: float = field(
        default=240.0,
        metadata=_env(
            "MEMBOT_HEARTBEAT_MINUTES", "minutes between an agent's heartbeats (fractions allowed; 0: off)"
        ),
    )
    quiet_hours: str = field(
        default="22-08",
        metadata=_env(
            "MEMBOT_QUIET_HOURS", "no unprompted message in these local hours (22-08, 9-17; empty: none)"
        ),
    )
    max_unprompted_per_day: int = field(
        default=1,
        metadata=_env("MEMBOT_MAX_UNPROMPTED_PER_DAY", "unprompted messages a person gets a day at most"),
    )
    active_skip_minutes: float = field(
        default=30.0,
        metadata=_env("MEMBOT_ACTIVE_SKIP_MINUTES", "skip a heartbeat if the person spoke this recently"),
    )
    heartbeat_idle_days: float = field(
        default=30.0,
        metadata=_env(
            "MEMBOT_HEARTBEAT_IDLE_DAYS", "stop heartbeats for people silent this many days (0: never)"
        ),
    )
    reminder_grace_hours: float = field(
        default=24.0,
        metadata=_env(
            "MEMBOT_REMINDER_GRACE_HOURS",
            "a reminder that came due while membot was down is still sent this late",
        ),
    )
    shutdown_grace: float = field(
        default=30.0,
        metadata=_env("MEMBOT_SHUTDOWN_GRACE", "seconds running turns get to finish on SIGINT/SIGTERM"),
    )

    @property
    def quiet_range(self) -> tuple[int, int] | None:
        """MEMBOT_QUIET_HOURS as (start, end) local hours, end exclusive; None when unset."""
        return parse_quiet_hours(self.quiet_hours)

    @property
    def discord_channel_ids(self) -> frozenset[str]:
        return frozenset(part.strip() for part in self.discord_channels.split(",") if part.strip())

    @property
    def discord_shard_plan(self) -> DiscordShards | None:
        """MEMBOT_DISCORD_SHARDS parsed; None: one plain gateway connection."""
        return parse_discord_shards(self.discord_shards)

    @property
    def uses_postgres(self) -> bool:
        """MEMBOT_DB is a PostgreSQL URL (it may hold a password: never log it as it is)."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def uses_openai_cloud(self) -> bool:
        return self.openai_base_url.rstrip("/") == OPENAI_URL

    def starting_blocks(self) -> tuple[str, str | None]:
        """The persona text and the human text (None: MEMBOT_HUMAN unset) new agents start with."""
        from bot.personas import starting_blocks

        return starting_blocks(self.persona, self.human, self.personas_dir, self.humans_dir, self.block_limit)

    def llm_api_key(self) -> str:
        """The key to send; local servers need none, OpenAI's does."""
        if self.openai_api_key:
            return self.openai_api_key
        if self.uses_openai_cloud:
            raise ConfigError(
                "OPENAI_API_KEY is not set: put it in .env (see .env.example), or set OPENAI_BASE_URL "
                "to a local OpenAI-compatible server such as http://localhost:11434/v1 (Ollama)."
            )
        return "not-needed"


def parse_quiet_hours(text: str) -> tuple[int, int] | None:
    """'22-08' -> (22, 8): from 22:00 to 08:00 local time; 'none' (or '') -> None."""
    text = text.strip()
    if not text or text.lower() in {"none", "off"}:
        return None
    start, sep, end = text.partition("-")
    try:
        hours = (int(start), int(end))
    except ValueError:
        hours = (-1, -1)
    if not sep or not all(0 <= h <= 24 for h in hours) or hours[0] == hours[1]:
        raise ConfigError(
            f"MEMBOT_QUIET_HOURS={text!r} is not a range of whole hours; write START-END such as 22-08 "
            "or 9-17, or none for no quiet hours."
        )
    return hours[0] % 24, hours[1] % 24


@dataclass(frozen=True)
class DiscordShards:
    """The gateway shards this process runs (MEMBOT_DISCORD_SHARDS)."""

    count: int | None = None  # shards in all; None: as many as Discord recommends
    ids: tuple[int, ...] | None = None  # the ones this process runs; None: every one


_SHARDS_FIX = (
    "leave it empty (one connection), or set auto, a shard count such as 4, or this process's "
    "shards of the count as FIRST-LAST/COUNT such as 0-3/8 (or one shard: 3/8)"
)


def parse_discord_shards(text: str) -> DiscordShards | None:
    """'' -> None (one plain connection); 'auto' or '8': every shard in this process; '0-3/8'
    (or '4/8'): shards 0 to 3 (or 4) of 8 here, the others in other processes."""
    raw = "".join(text.split()).lower()
    if not raw:
        return None
    if raw == "auto":
        return DiscordShards()
    shards, slash, count = raw.partition("/")
    first, dash, last = shards.partition("-")
    numbers = [first, last] if dash else [first]
    if not all(n.isdecimal() for n in numbers + ([count] if slash else [])):
        raise ConfigError(f"MEMBOT_DISCORD_SHARDS={raw}: not a shard count or range; {_SHARDS_FIX}.")
    if dash and not slash:
        example = f"{raw}/{max(int(last) + 1, 8)}"
        raise ConfigError(f"MEMBOT_DISCORD_SHARDS={raw}: a range needs the count after it, as in {example}.")
    if not slash:
        if int(first) < 1:
            raise ConfigError(f"MEMBOT_DISCORD_SHARDS={raw}: there must be at least 1 shard; {_SHARDS_FIX}.")
        return DiscordShards(int(first))
    low, high, total = int(first), int(numbers[-1]), int(count)
    if total < 1:
        raise ConfigError(f"MEMBOT_DISCORD_SHARDS={raw}: the count after / must be at least 1, as in 0-3/8.")
    if low > high:
        raise ConfigError(
            f"MEMBOT_DISCORD_SHARDS={raw}: the first shard comes after the last; write FIRST-LAST/COUNT "
            f"with FIRST <= LAST, such as {high}-{low}/{total}."
        )
    if high >= total:
        raise ConfigError(
            f"MEMBOT_DISCORD_SHARDS={raw}: there is no shard {high} of {total} (they are 0 to {total - 1}); "
            "write FIRST-LAST/COUNT with LAST below COUNT, or raise the count."
        )
    return DiscordShards(total, tuple(range(low, high + 1)))


def env_names() -> list[str]:
    return [f.metadata["env"] for f in fields(Settings)]


def _convert(name: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    if kind in (int, "int"):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {text!r}.") from None
    if kind in (float, "float"):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, not {text!r}.") from None
    if kind in (bool, "bool"):
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{name} must be true or false, not {text!r}.")
    return text


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Build the settings from `.env` (if present) overlaid by the environment."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata["env"]
        if name in values and values[name].strip() != "":
            kwargs[f.name] = _convert(name, values[name], f.type)
    settings = Settings(**kwargs)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.context_window < 2000:
        raise ConfigError(f"MEMBOT_CONTEXT_WINDOW is {s.context_window}; set at least 2000 tokens.")
    if s.max_steps < 1:
        raise ConfigError("MEMBOT_MAX_STEPS must be at least 1.")
    if s.block_limit < 100:
        raise ConfigError("MEMBOT_BLOCK_LIMIT must be at least 100 characters.")
    if s.turn_deadline <= 0 or s.replay_hours < 0:
        raise ConfigError("MEMBOT_TURN_DEADLINE must be positive and MEMBOT_REPLAY_HOURS not negative.")
    if s.llm_timeout <= 0 or s.llm_retries < 0:
        raise ConfigError("MEMBOT_LLM_TIMEOUT must be positive and MEMBOT_LLM_RETRIES not negative.")
    if s.llm_total_timeout < s.llm_timeout:
        raise ConfigError(
            f"MEMBOT_LLM_TOTAL_TIMEOUT ({s.llm_total_timeout:g} s) is shorter than one attempt "
            f"(MEMBOT_LLM_TIMEOUT, {s.llm_timeout:g} s); set it to at least {s.llm_timeout:g}."
        )
    if s.db_lock_wait < 0:
        raise ConfigError("MEMBOT_DB_LOCK_WAIT must be 0 or more seconds (0: do not wait for a lock).")
    if s.heartbeat_minutes < 0 or s.active_skip_minutes < 0 or s.heartbeat_idle_days < 0:
        raise ConfigError(
            "MEMBOT_HEARTBEAT_MINUTES, MEMBOT_ACTIVE_SKIP_MINUTES and MEMBOT_HEARTBEAT_IDLE_DAYS must be 0 or more."
        )
    if s.max_unprompted_per_day < 0 or s.reminder_grace_hours < 0 or s.shutdown_grace < 0:
        raise ConfigError(
            "MEMBOT_MAX_UNPROMPTED_PER_DAY, MEMBOT_REMINDER_GRACE_HOURS and MEMBOT_SHUTDOWN_GRACE must be 0 or more."
        )
    if s.attachment_max_bytes < 0:
        raise ConfigError("MEMBOT_ATTACHMENT_MAX_BYTES must be 0 (read no files) or more.")
    parse_discord_shards(s.discord_shards)
    parse_quiet_hours(s.quiet_hours)
    s.starting_blocks()
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"MEMBOT_TIMEZONE={s.timezone!r} is not a known time zone; use an IANA name like Europe/Paris."
        ) from None
    if not (s.embedder == "wordllama" or s.embedder.startswith("openai:")):
        raise ConfigError(
            f"MEMBOT_EMBEDDER={s.embedder!r} is not known; use 'wordllama' or 'openai:MODEL' "
            "(for example openai:text-embedding-3-small or openai:nomic-embed-text)."
        )
    for name, url in (
        ("OPENAI_BASE_URL", s.openai_base_url),
        ("SLACK_API_URL", s.slack_api_url),
        ("DISCORD_API_URL", s.discord_api_url),
    ):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must start with http:// or https://, not {url!r}.")
