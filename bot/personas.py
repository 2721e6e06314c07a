"""Persona and human texts, as in MemGPT's CLI: `NAME.txt` files in a `personas/` and a `humans/`
folder. A new agent's `persona` block starts as the text of MEMBOT_PERSONA, its `human` block as
that of MEMBOT_HUMAN (if set; else just the person's name). Looked up first in MEMBOT_PERSONAS_DIR
(MEMBOT_HUMANS_DIR), else in `personas/` (`humans/`) of the current directory if there is one, then
among those shipped in bot/data. Read and checked once at start: a name not found, or a text
longer than a core memory block, stops membot with what to fix. Existing agents keep their blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError

BUILT_IN = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Kind:
    folder: str  # personas, humans
    name_var: str  # MEMBOT_PERSONA
    dir_var: str  # MEMBOT_PERSONAS_DIR


PERSONAS = Kind("personas", "MEMBOT_PERSONA", "MEMBOT_PERSONAS_DIR")
HUMANS = Kind("humans", "MEMBOT_HUMAN", "MEMBOT_HUMANS_DIR")


def folders(kind: Kind, configured: str) -> list[Path]:
    """Where `kind` texts are looked up, first match wins."""
    if configured.strip():
        own = Path(configured.strip()).expanduser()
        if not own.is_dir():
            raise ConfigError(
                f"{kind.dir_var}={configured!r} is not a folder; create it or unset {kind.dir_var}."
            )
        found = [own]
    else:
        found = [Path(kind.folder)] if Path(kind.folder).is_dir() else []
    return [*found, BUILT_IN / kind.folder]


def available(kind: Kind, configured: str) -> dict[str, Path]:
    """name -> file of every text of this kind (an earlier folder hides a later one's same name)."""
    names: dict[str, Path] = {}
    for folder in folders(kind, configured):
        for path in sorted(folder.glob("*.txt")):
            names.setdefault(path.stem, path)
    return names


def text(kind: Kind, name: str, configured: str, limit: int) -> str:
    """The text called `name`, checked to fit a block of `limit` characters."""
    known = available(kind, configured)
    path = known.get(name.strip())
    if path is None:
        where = ", ".join(str(f) for f in folders(kind, configured))
        raise ConfigError(
            f"{kind.name_var}={name!r} is not a known {kind.folder[:-1]}; available: {', '.join(known) or 'none'} "
            f"(NAME.txt files in {where}). Set {kind.name_var} to one of them, or add {name}.txt to "
            f"{kind.folder}/ or {kind.dir_var}."
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind.name_var}={name!r}: cannot read {path}: {exc}") from None
    if len(value) > limit:
        raise ConfigError(
            f"{kind.name_var}={name!r} ({path}) is {len(value)} characters, longer than a core memory "
            f"block ({limit}, MEMBOT_BLOCK_LIMIT); shorten the file or raise MEMBOT_BLOCK_LIMIT."
        )
    return value


def starting_blocks(
    persona: str, human: str, personas_dir: str, humans_dir: str, limit: int
) -> tuple[str, str | None]:
    """(persona text, human text or None: MEMBOT_HUMAN not set)."""
    chosen = text(PERSONAS, persona, personas_dir, limit)
    told = text(HUMANS, human, humans_dir, limit) if human.strip() else None
    return chosen, told
