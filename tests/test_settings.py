"""Settings: one place, validated at start, errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import Settings, env_names, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_exactly_the_settings():
    text = (ROOT / ".env.example").read_text()
    listed = re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M)
    assert sorted(listed) == sorted(env_names())


def test_env_example_values_are_valid_defaults():
    settings = load_settings({}, dotenv_path=ROOT / ".env.example")
    assert settings.model == "gpt-4o-mini" and settings.embedder == "wordllama"


def test_stable_names_are_present():
    for name in [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "MEMBOT_MODEL",
        "MEMBOT_DB",
        "MEMBOT_CONTEXT_WINDOW",
        "MEMBOT_EMBEDDER",
        "MEMBOT_TIMEZONE",
        "DISCORD_TOKEN",
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_API_URL",
        "MEMBOT_HTTP_HOST",
        "MEMBOT_HTTP_PORT",
    ]:
        assert name in env_names()


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path):
    (tmp_path / ".env").write_text("MEMBOT_MODEL=from-file\nMEMBOT_CONTEXT_WINDOW=9000\n")
    settings = load_settings({"MEMBOT_MODEL": "from-env"}, dotenv_path=tmp_path / ".env")
    assert settings.model == "from-env" and settings.context_window == 9000


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MEMBOT_CONTEXT_WINDOW": "lots"}, "MEMBOT_CONTEXT_WINDOW"),
        ({"MEMBOT_CONTEXT_WINDOW": "500"}, "MEMBOT_CONTEXT_WINDOW"),
        ({"MEMBOT_TIMEZONE": "Mars/Olympus"}, "MEMBOT_TIMEZONE"),
        ({"MEMBOT_EMBEDDER": "magic"}, "MEMBOT_EMBEDDER"),
        ({"MEMBOT_LOG_CONTENT": "perhaps"}, "MEMBOT_LOG_CONTENT"),
        ({"OPENAI_BASE_URL": "localhost:11434"}, "OPENAI_BASE_URL"),
        ({"MEMBOT_LLM_TIMEOUT": "300"}, "MEMBOT_LLM_TOTAL_TIMEOUT.*at least 300"),
        ({"MEMBOT_DB_LOCK_WAIT": "-1"}, "MEMBOT_DB_LOCK_WAIT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str):
    with pytest.raises(ConfigError, match=names):
        load_settings(env, dotenv_path=None)


def test_missing_key_for_openai_says_what_to_set():
    settings = load_settings({}, dotenv_path=None)
    with pytest.raises(ConfigError, match=r"OPENAI_API_KEY is not set.*OPENAI_BASE_URL"):
        settings.llm_api_key()
    local = load_settings({"OPENAI_BASE_URL": "http://localhost:11434/v1"}, dotenv_path=None)
    assert local.llm_api_key() == "not-needed"


def test_secrets_never_appear_in_repr():
    settings = Settings(
        openai_api_key="sk-supersecret", discord_token="disc-secret", slack_bot_token="xoxb-secret"
    )
    text = repr(settings) + str(settings)
    assert "supersecret" not in text and "disc-secret" not in text and "xoxb-secret" not in text


def test_personas_and_humans_come_from_their_folders_first_then_the_built_in_ones(tmp_path: Path):
    from bot.reception import PERSONA

    assert load_settings({}, dotenv_path=None).starting_blocks() == (PERSONA, None)
    assert (ROOT / "bot" / "data" / "personas" / "membot.txt").read_text().strip() == PERSONA
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "sam.txt").write_text("I am Sam, a ship's cook.\n")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "chad.txt").write_text("First name: Chad\n")
    settings = load_settings(
        {
            "MEMBOT_PERSONA": "sam",
            "MEMBOT_PERSONAS_DIR": str(tmp_path / "p"),
            "MEMBOT_HUMAN": "chad",
            "MEMBOT_HUMANS_DIR": str(tmp_path / "h"),
        },
        dotenv_path=None,
    )
    assert settings.starting_blocks() == ("I am Sam, a ship's cook.", "First name: Chad")
    built_in = load_settings(
        {"MEMBOT_PERSONAS_DIR": str(tmp_path / "p"), "MEMBOT_HUMAN": "basic"}, dotenv_path=None
    )
    assert built_in.starting_blocks()[0] == PERSONA and built_in.starting_blocks()[1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MEMBOT_PERSONA": "nobody"},
            r"MEMBOT_PERSONA='nobody' is not a known persona; available: .*membot",
        ),
        ({"MEMBOT_HUMAN": "nobody"}, r"MEMBOT_HUMAN='nobody' is not a known human; available: basic"),
        (
            {"MEMBOT_PERSONAS_DIR": "/no/such/folder"},
            r"MEMBOT_PERSONAS_DIR='/no/such/folder' is not a folder",
        ),
        ({"MEMBOT_BLOCK_LIMIT": "100", "MEMBOT_PERSONA": "long"}, r"is 150 characters.*MEMBOT_BLOCK_LIMIT"),
    ],
)
def test_an_unknown_or_too_long_persona_is_refused_with_the_fix(
    env: dict[str, str], message: str, tmp_path: Path
):
    (tmp_path / "long.txt").write_text("x" * 150)
    with pytest.raises(ConfigError, match=message):
        load_settings({"MEMBOT_PERSONAS_DIR": str(tmp_path), **env}, dotenv_path=None)
