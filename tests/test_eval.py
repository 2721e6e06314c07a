"""`membot eval locomo`: LoCoMo-format files in, recall tables and JSON out; --qa against the fake LLM.

The data here is made up in the LoCoMo format (the real files are licensed non-commercial and never
enter the repository).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.cli import main
from bot.evaluation.locomo import load, normalise_ids
from bot.evaluation.qa import f1
from tests.fake_openai import Answer, FakeOpenAI, last_user_text, say

SESSION_1 = [
    ("Ana", "Hi Ben! I finally booked the flight to Lisbon for my sister's wedding."),
    ("Ben", "That's great! When is it?"),
    ("Ana", "The second weekend of June. I'm nervous about the speech."),
    ("Ben", "You'll be fine, you always are."),
]
SESSION_2 = [
    ("Ben", "I started learning the cello last month."),
    ("Ana", "No way! Is it hard?"),
    ("Ben", "My fingers hurt, but the teacher is patient."),
    ("Ana", "Send me a recording sometime."),
]


def sample() -> dict[str, Any]:
    def turns(session: int, lines: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"speaker": s, "dia_id": f"D{session}:{i + 1}", "text": t} for i, (s, t) in enumerate(lines)]

    conversation: dict[str, Any] = {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": turns(1, SESSION_1),
        "session_2_date_time": "10:00 am on 2 July, 2023",
        "session_2": turns(2, SESSION_2),
    }
    conversation["session_2"][3]["blip_caption"] = "a photo of a cello on a stand"
    qa = [
        {
            "question": "Where is Ana's sister's wedding?",
            "answer": "Lisbon",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {
            "question": "What instrument is Ben learning?",
            "answer": "cello",
            "evidence": ["D:2:01"],
            "category": 4,
        },
        {"question": "When is the wedding?", "answer": "June", "evidence": ["D2:4"], "category": 2},
        {
            "question": "What did Ben say about Lisbon?",
            "adversarial_answer": "nothing",
            "evidence": [],
            "category": 5,
        },
    ]
    return {"sample_id": "conv-x", "conversation": conversation, "qa": qa}


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([sample()]))
    audit = tmp_path / "audit.json"
    fix = {"question_id": "locomo_0_qa2", "error_type": "WRONG_CITATION", "correct_evidence": ["D1:3"]}
    other = {"question_id": "locomo_0_qa0", "error_type": "AMBIGUOUS", "correct_evidence": ["D2:2"]}
    audit.write_text(json.dumps([fix, other]))
    return path, audit


def test_evidence_ids_are_normalised():
    assert normalise_ids("D:11:26") == ["D11:26"]
    assert normalise_ids(["D30:05", "D8:6; D9:17"]) == ["D30:5", "D8:6", "D9:17"]


def test_audit_replaces_only_wrong_citations(data: tuple[Path, Path]):
    [conversation] = load(*data)
    evidence = [q.evidence for q in conversation.questions]
    assert evidence == [("D1:1",), ("D2:1",), ("D1:3",), ()]
    assert conversation.turns[-1].text.endswith("[image: a photo of a cello on a stand]")
    assert conversation.turns[4].at.isoformat() == "2023-07-02T10:00:00"


def test_recall_tables_and_json(data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "report.json"
    path, audit = data
    assert main(["eval", "locomo", str(path), "--audit", str(audit), "--k", "1,3,8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["questions"] == {"1-4": 3, "2": 1, "4": 2}
    assert report["skipped_without_evidence"] == 1
    assert set(report["recall_at_k"]["1-4"]) == {"1", "3", "8"}
    # eight turns and k=8: every evidence turn is in the top 8
    assert report["recall_at_k"]["1-4"]["8"] == 1.0 and report["session_recall_at_k"]["1-4"]["8"] == 1.0
    # the two single-hop questions share words with their evidence: found first
    assert report["recall_at_k"]["4"]["1"] == 1.0
    printed = capsys.readouterr().out
    assert "Evidence recall@k" in printed and "4 single-hop" in printed and "R@8" in printed


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["eval", "locomo", str(tmp_path / "missing.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"conversation": {"speaker_a": "A"}}]))
    assert main(["eval", "locomo", str(broken)]) == 1
    assert "not in the LoCoMo format" in capsys.readouterr().err


def test_f1_follows_the_locomo_normalisation():
    assert f1("The cello.", "cello") == 1.0
    assert f1("in Lisbon, Portugal", "Lisbon") == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert f1("", "Lisbon") == 0.0


def answers(request: dict[str, Any]) -> Answer:
    """The agent answers Lisbon questions right and everything else wrong; the judge checks the gold."""
    if not request.get("tools"):
        text = last_user_text(request)
        gold = text.split("Gold answer: ")[1].split("\n")[0]
        response = text.split("Response: ")[1]
        return Answer(content="CORRECT" if gold.lower() in response.lower() else "WRONG")
    asked = last_user_text(request)
    return say("In Lisbon." if "wedding" in asked and "Where" in asked else "I don't remember.")


def test_qa_asks_the_agent_and_judges(
    data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_server: Any
):
    fake: FakeOpenAI = fake_server(answers)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    out = tmp_path / "qa.json"
    assert main(["eval", "locomo", str(data[0]), "--qa", "--json", str(out)]) == 0
    qa = json.loads(out.read_text())["qa"]
    assert qa["questions"] == {"1-4": 3, "2": 1, "4": 2}  # adversarial left out
    assert qa["judge_accuracy"]["4"] == 0.5 and qa["judge_accuracy"]["2"] == 0.0
    assert qa["f1"]["4"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-3)  # "In Lisbon." vs "Lisbon": F1 2/3
    asked = [last_user_text(r) for r in fake.requests if r.get("tools")]
    assert any("What instrument is Ben learning?" in text for text in asked)
    # each question saw a fresh copy: no earlier question or answer in its context
    later = json.dumps(next(r for r in fake.requests if r.get("tools") and "instrument" in last_user_text(r)))
    assert "Where is Ana" not in later and "In Lisbon." not in later


def test_recall_is_split_by_whether_the_question_names_a_date(tmp_path: Path):
    data = sample()
    data["qa"].append(
        {
            "question": "What did Ben start on 2 July, 2023?",
            "answer": "cello",
            "evidence": ["D2:1"],
            "category": 4,
        }
    )
    path, out = tmp_path / "dated.json", tmp_path / "dated-report.json"
    path.write_text(json.dumps([data]))
    done = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "eval", "locomo", str(path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "MEMBOT_DB": str(tmp_path / "unused.db")},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["questions_by_date"] == {
        "names a date": {"1-4": 1, "4": 1},
        "no date": {"1-4": 3, "2": 1, "4": 2},
    }
    assert report["recall_by_date"]["names a date"]["4"]["1"] == 1.0  # the day's first message is the answer
    assert "questions that name a date" in done.stdout and "questions that name no date" in done.stdout
