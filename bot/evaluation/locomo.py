"""The LoCoMo benchmark's file format (Maharana et al., ACL 2024) and the locomo-audit corrections.

The data is licensed for non-commercial use only, so membot never ships it: `membot eval locomo`
reads a copy the user downloaded (see README). A file is a list of samples, each with a
conversation (`speaker_a`, `speaker_b`, `session_<n>_date_time`, `session_<n>` = turns with
`speaker`, `dia_id` "D<session>:<turn>", `text`, optional `blip_caption`) and `qa` items
(`question`, `answer`, `evidence` = dia ids, `category` 1-5).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.errors import MembotError

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
DIA_ID = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)", re.IGNORECASE)
SESSION_KEY = re.compile(r"session_(\d+)$")


class DataError(MembotError):
    """The benchmark file is missing or not in the LoCoMo format."""


@dataclass(frozen=True)
class Turn:
    dia_id: str
    session: int
    speaker: str
    text: str  # the turn's text, with its image caption appended as "[image: ...]"
    at: datetime  # the session's date-time plus one second per turn, so order is kept


@dataclass(frozen=True)
class Question:
    number: int  # 0-based index in the sample's qa list
    text: str
    answer: str
    category: int
    evidence: tuple[str, ...]  # normalised dia ids

    @property
    def sessions(self) -> set[int]:
        return {session_of(dia_id) for dia_id in self.evidence}


@dataclass
class Conversation:
    index: int  # 0-based position in the file
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def normalise_ids(value: Any) -> list[str]:
    """Evidence ids in one form: "D:11:26" -> "D11:26", "D30:05" -> "D30:5", "D8:6; D9:17" -> two ids."""
    items = value if isinstance(value, list) else [value]
    found: list[str] = []
    for item in items:
        for session, turn in DIA_ID.findall(str(item)):
            dia_id = f"D{int(session)}:{int(turn)}"
            if dia_id not in found:
                found.append(dia_id)
    return found


def session_of(dia_id: str) -> int:
    return int(dia_id[1:].split(":")[0])


def parse_when(text: str) -> datetime:
    """A session's date-time as LoCoMo writes it: "1:56 pm on 8 May, 2023"."""
    cleaned = re.sub(r"\s+", " ", text.strip())
    for pattern in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%I:%M %p on %B %d, %Y"):
        try:
            return datetime.strptime(cleaned, pattern)
        except ValueError:
            continue
    raise DataError(f"cannot read the session date-time {text!r} (expected like '1:56 pm on 8 May, 2023')")


def _turns(conversation: dict[str, Any]) -> list[Turn]:
    sessions = sorted(int(match.group(1)) for key in conversation if (match := SESSION_KEY.match(key)))
    turns: list[Turn] = []
    for number in sessions:
        started = parse_when(str(conversation.get(f"session_{number}_date_time", "")))
        for offset, raw in enumerate(conversation[f"session_{number}"]):
            ids = normalise_ids(raw.get("dia_id", ""))
            if not ids:
                raise DataError(f"session {number} has a turn without a dia_id: {raw!r:.80}")
            text = str(raw.get("text", ""))
            if raw.get("blip_caption"):
                text = f"{text} [image: {raw['blip_caption']}]"
            turns.append(Turn(ids[0], number, str(raw["speaker"]), text, started + timedelta(seconds=offset)))
    return turns


def _corrections(audit: list[dict[str, Any]] | None) -> dict[str, list[str]]:
    fixes: dict[str, list[str]] = {}
    for entry in audit or []:
        if entry.get("error_type") == "WRONG_CITATION" and entry.get("correct_evidence"):
            fixes[str(entry["question_id"])] = normalise_ids(entry["correct_evidence"])
    return fixes


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from None


def load(path: Path, audit_path: Path | None = None) -> list[Conversation]:
    """The conversations and questions of a LoCoMo file, with audit evidence fixes applied."""
    data = _read_json(path, "LoCoMo")
    fixes = _corrections(_read_json(audit_path, "audit") if audit_path else None)
    if not isinstance(data, list):
        raise DataError(f"{path} is not a LoCoMo file: expected a list of samples")
    conversations = []
    for index, sample in enumerate(data):
        try:
            raw = sample["conversation"]
            conversation = Conversation(
                index, str(sample.get("sample_id", index)), str(raw["speaker_a"]), str(raw["speaker_b"])
            )
            conversation.turns = _turns(raw)
            for number, qa in enumerate(sample.get("qa", [])):
                evidence = fixes.get(f"locomo_{index}_qa{number}") or normalise_ids(qa.get("evidence", []))
                answer = qa.get("answer", qa.get("adversarial_answer", ""))
                conversation.questions.append(
                    Question(number, str(qa["question"]), str(answer), int(qa["category"]), tuple(evidence))
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: sample {index} is not in the LoCoMo format (missing {exc})") from None
        conversations.append(conversation)
    return conversations
