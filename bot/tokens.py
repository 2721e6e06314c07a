"""Token counting that works offline: OpenAI's o200k_base encoding, shipped with membot.

`bot/data/o200k_base.tiktoken` is the encoding file tiktoken would download (MIT licence, as
tiktoken); its sha256 is checked on load. Messages are counted the way OpenAI bills chat
completions: a few tokens of framing per message plus the text of every field, and the tool
schemas as JSON. Other model families tokenise differently; `Budget` keeps a margin for that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken.load import load_tiktoken_bpe

DATA = Path(__file__).parent / "data" / "o200k_base.tiktoken"
SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
PER_MESSAGE = 4
PER_REQUEST = 3
PER_TOOL_CALL = 4


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    ranks = load_tiktoken_bpe(str(DATA), expected_hash=SHA256)
    return tiktoken.Encoding(
        name="o200k_base",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    )


def count_text(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def count_message(message: dict[str, Any]) -> int:
    total = PER_MESSAGE
    for key, value in message.items():
        if key == "tool_calls":
            for call in value or []:
                function = call.get("function", {})
                total += PER_TOOL_CALL + count_text(function.get("name", ""))
                total += count_text(function.get("arguments", "")) + count_text(call.get("id", ""))
        elif isinstance(value, str):
            total += count_text(value)
    return total


def count_tools(tools: Iterable[dict[str, Any]]) -> int:
    return sum(count_text(json.dumps(tool)) for tool in tools)


def truncate(text: str, max_tokens: int) -> str:
    """`text` cut to at most `max_tokens` tokens (whole tokens, the start kept)."""
    tokens = encoding().encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return encoding().decode(tokens[:max_tokens])
