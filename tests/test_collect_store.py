"""The outcome file survives crashes and reruns; questions get stable ids and splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import require_shared

from gateway.collect import OutcomeStore, load_questions, parse_question, split_of, write_meta
from gateway.collect.store import policy_spec
from router_core import budget_policy
from router_core.training.errors import DataError
from router_core.training.readers import read_rows


def _row(qid: str, policy: int | str = 10) -> dict[str, object]:
    return {"query_id": qid, "prompt": f"p {qid}", "model": "m", "policy": policy,
            "score": 1.0, "input_tokens": 3, "output_tokens": 4, "split": "train"}


def test_rows_written_are_known_as_done_after_reopening(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    store = OutcomeStore.open(out)
    store.append(_row("q1"))
    store.append(_row("q2", "unlimited"))
    store.close()
    again = OutcomeStore.open(out)
    assert again.done == {("q1", "m", "10"), ("q2", "m", "unlimited")}
    again.close()


def test_a_torn_last_line_is_cut_and_the_file_stays_readable(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    lines = [json.dumps(_row("q1")), json.dumps(_row("q2"))]
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1][:25])
    store = OutcomeStore.open(out)
    assert store.done == {("q1", "m", "10"), ("q2", "m", "10")}
    assert store.repaired_bytes == 25
    store.append(_row("q3"))
    store.close()
    assert [r["query_id"] for _, r in read_rows(out)] == ["q1", "q2", "q3"]


def test_a_complete_last_row_without_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps(_row("q1")))
    store = OutcomeStore.open(out)
    store.append(_row("q2"))
    store.close()
    assert [r["query_id"] for _, r in read_rows(out)] == ["q1", "q2"]


def test_a_broken_line_in_the_middle_is_an_error_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text(json.dumps(_row("q1")) + "\n{not json\n" + json.dumps(_row("q2")) + "\n")
    with pytest.raises(DataError, match="row 2"):
        OutcomeStore.open(out)


def test_the_output_must_be_plain_jsonl(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\.jsonl"):
        OutcomeStore.open(tmp_path / "o.jsonl.gz")


def test_meta_refuses_changed_prices_or_policy_instructions(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    spec = {"10": policy_spec(budget_policy(10, "Use {budget} tokens."))}
    meta = write_meta(out, {"m": (1.0, 2.0)}, spec, ["q.jsonl"], {})
    assert json.loads(meta.read_text())["prices_usd"]["m"] == {
        "input_per_million": 1.0, "output_per_million": 2.0}
    assert json.loads(meta.read_text())["collect"]["policies"]["10"] == {
        "instruction": "Use 10 tokens.", "max_tokens": 10, "kind": "budget",
        "template": "Use {budget} tokens.", "placement": "system", "cap_rule": "budget",
        "cap_slack": 0}
    write_meta(out, {"m": (1.0, 2.0), "n": (3.0, 4.0)}, spec, ["q.jsonl"], {})
    with pytest.raises(DataError, match="prices"):
        write_meta(out, {"m": (1.5, 2.0)}, spec, ["q.jsonl"], {})
    other = {"10": policy_spec(budget_policy(10, "At most {budget} tokens!"))}
    with pytest.raises(DataError, match="policy '10'"):
        write_meta(out, {"m": (1.0, 2.0)}, other, ["q.jsonl"], {})


def test_multiple_choice_questions_get_the_shared_datasets_id_and_prompt() -> None:
    q = parse_question({"source": "arc/arc-easy-test", "source_id": 14, "topic": "Science",
                        "context": "", "question": "Which harms a habitat?",
                        "choices": {"A": "trees", "B": "pollution"}, "answer": "B"}, "arc")
    assert q.query_id == "mcqa/arc/arc-easy-test/14"
    assert q.prompt == ("Topic: Science\nQuestion: Which harms a habitat?\nChoices:\n"
                        "  A: trees\n  B: pollution")
    assert q.is_multiple_choice and q.answer == "B"


def test_plain_prompts_are_open_ended_with_an_optional_reference() -> None:
    q = parse_question({"prompt": "Capital of France?", "reference": "Paris"}, "geo")
    assert not q.is_multiple_choice
    assert q.reference == "Paris"
    assert q.query_id == parse_question({"prompt": "Capital of France?"}, "other").query_id


def test_split_is_deterministic_and_about_seventy_thirty() -> None:
    files = sorted(require_shared("data", "questions").glob("*.jsonl"))
    questions = load_questions(files)
    assert [q.split for q in questions] == [split_of(q.query_id) for q in questions]
    share = sum(q.split == "test" for q in questions) / len(questions)
    assert 0.22 < share < 0.38


def test_bad_questions_are_errors_naming_file_row_and_field(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "x", "choices": {"A": "1"}, "answer": "C"}) + "\n")
    with pytest.raises(DataError, match="row 1, field answer"):
        load_questions([path])
    path.write_text(json.dumps({"prompt": "x", "query_id": "a"}) + "\n"
                    + json.dumps({"prompt": "y", "query_id": "a"}) + "\n")
    with pytest.raises(DataError, match="duplicate query_id"):
        load_questions([path])


def test_the_package_exports_a_sorted_all() -> None:
    import gateway.collect as package

    assert package.__all__ == sorted(package.__all__)
    assert all(hasattr(package, name) for name in package.__all__)
