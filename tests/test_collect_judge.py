"""Open-ended questions are scored by the configured judge deployment's 0-1 reply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standin import Behaviour, StandIn

from gateway.collect import RunOptions, collect, parse_judge_score, render_judge_prompt
from gateway.config import parse_settings

FAST = RunOptions(progress=False, backoff_s=0.001)


@pytest.mark.parametrize("reply, score", [
    ("Score: 0.8", 0.8),
    ("score = 1", 1.0),
    ("**Score:** 7/10", 0.7),
    ("The answer misses the point.\nScore: 0", 0.0),
    ("0.5", 0.5),
    ("80%", 0.8),
    ("Score: 0.2. On reflection, Score: 0.4", 0.4),
])
def test_judge_replies_with_a_score_are_parsed(reply: str, score: float) -> None:
    assert parse_judge_score(reply) == pytest.approx(score)


@pytest.mark.parametrize("reply", [
    "", "Looks right to me.", "Score: 7", "Score: <number between 0 and 1>", "I give it 3/5",
])
def test_judge_replies_without_a_0_to_1_score_give_none(reply: str) -> None:
    assert parse_judge_score(reply) is None


def test_the_judge_prompt_shows_the_reference_only_when_there_is_one() -> None:
    with_ref = render_judge_prompt("Capital of France?", "Paris.", "Paris")
    assert "Reference answer:\nParis" in with_ref and "Answer to grade:\nParis." in with_ref
    assert "Reference" not in render_judge_prompt("Capital of France?", "Paris.", None)
    custom = render_judge_prompt("Q {answer}", "A", "R", "{question}|{answer}|{reference}")
    assert custom == "Q {answer}|A|R"


def _setup(tmp_path: Path, standin: StandIn, judge_text: str) -> tuple[Any, Path]:
    standin.behaviours["up-answerer"] = Behaviour(text="It is Paris.")
    standin.behaviours["up-judge"] = Behaviour(text=judge_text)
    raw = {"checkpoint": "unused", "judge": {"deployment": "judge", "max_tokens": 12},
           "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": standin.base_url,
                            "input_price_per_million": 1.0, "output_price_per_million": 1.0,
                            "timeout_s": 5.0} for n in ("answerer", "judge")]}
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"prompt": "Capital of France?", "reference": "Paris",
                                     "query_id": "geo/1"}) + "\n")
    return parse_settings(raw), questions


def test_open_ended_answers_get_the_judges_score(tmp_path: Path, standin: StandIn) -> None:
    settings, questions = _setup(tmp_path, standin, "Correct. Score: 0.75")
    out = tmp_path / "o.jsonl"
    result = collect(settings, [questions], out, "20", options=FAST)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["model"] == "answerer" and row["score"] == 0.75 and "extracted" not in row
    judge_body = next(r["body"] for r in standin.received if r["body"]["model"] == "up-judge")
    prompt = judge_body["messages"][0]["content"]
    assert "Capital of France?" in prompt and "Paris" in prompt and "It is Paris." in prompt
    assert judge_body["max_tokens"] == 12 and judge_body["temperature"] == 0
    assert result.report.judge_usd > 0
    assert result.report.spent_usd > result.report.judge_usd


def test_an_unparseable_judge_reply_writes_no_row(tmp_path: Path, standin: StandIn) -> None:
    settings, questions = _setup(tmp_path, standin, "Looks fine to me!")
    out = tmp_path / "o.jsonl"
    result = collect(settings, [questions], out, "20", options=FAST)
    assert out.read_text() == ""
    assert result.report.failures == {"judge judge: reply had no 0-1 score": 1}
    assert not result.report.complete
