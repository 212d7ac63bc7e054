"""Outcome data loading: formats, validation errors naming row and field, missing arms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import require_shared

from router_core import DEFAULT_BUDGET_INSTRUCTION, R2Error
from router_core.training import (
    DataError,
    build_policies,
    load_outcomes,
    load_policy_file,
    missing_instructions,
)
from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes


def rows() -> list[dict[str, Any]]:
    return synthetic_rows(n_queries=12, seed=1)


def write(tmp_path: Path, data: list[dict[str, Any]], name: str = "d.jsonl",
          meta: dict[str, Any] | None = None) -> Path:
    return write_outcomes(tmp_path / name, data, synthetic_meta() if meta is None else meta)


def error_of(tmp_path: Path, data: list[dict[str, Any]], **kw: Any) -> DataError:
    with pytest.raises(DataError) as info:
        load_outcomes([write(tmp_path, data, **kw)])
    return info.value


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.csv", "d.parquet"])
def test_formats_load_to_the_same_arrays(tmp_path: Path, name: str) -> None:
    ref = load_outcomes([write(tmp_path, rows(), "ref.jsonl")])
    got = load_outcomes([write(tmp_path, rows(), name)])
    assert got.models == ("large", "small")
    assert got.policies == (32, 256, "unlimited")
    assert got.query_ids == ref.query_ids
    np.testing.assert_allclose(got.score, ref.score)
    np.testing.assert_allclose(got.cost, ref.cost)
    assert got.score.shape == (12, 2, 3)


def test_cost_from_list_prices(tmp_path: Path) -> None:
    data = load_outcomes([write(tmp_path, rows())])
    i, j = data.models.index("large"), 0
    expected = data.input_tokens[0, i, j] * 3.0 / 1e6 + data.output_tokens[0, i, j] * 15.0 / 1e6
    assert data.cost[0, i, j] == pytest.approx(expected)
    assert data.price_source["large"] == "list"


@pytest.mark.parametrize("field", ["query_id", "prompt", "model", "policy", "score",
                                   "input_tokens", "output_tokens", "split"])
def test_missing_field_names_row_and_field(tmp_path: Path, field: str) -> None:
    data = rows()
    del data[4][field]
    err = error_of(tmp_path, data)
    assert "row 5" in str(err) and f"field {field}" in str(err)
    assert isinstance(err, R2Error) and err.row == 5 and err.field == field


@pytest.mark.parametrize("value", [1.5, -0.1, "high"])
def test_bad_score_is_an_error(tmp_path: Path, value: Any) -> None:
    data = rows()
    data[2]["score"] = value
    err = error_of(tmp_path, data)
    assert err.row == 3 and err.field == "score"


def test_negative_tokens_and_unknown_split(tmp_path: Path) -> None:
    data = rows()
    data[1]["output_tokens"] = -3
    assert error_of(tmp_path, data).field == "output_tokens"
    data = rows()
    data[1]["split"] = "dev"
    assert error_of(tmp_path, data).field == "split"


def test_duplicate_row_names_both_rows(tmp_path: Path) -> None:
    data = rows()
    data.append(dict(data[3]))
    err = error_of(tmp_path, data)
    assert "duplicate" in str(err) and f"row {len(data)}" in str(err) and "row 4 " in str(err)


def test_query_with_two_prompts_is_an_error(tmp_path: Path) -> None:
    data = rows()
    data[1]["prompt"] = "something else"
    err = error_of(tmp_path, data)
    assert err.row == 2 and err.field == "prompt"


def test_model_without_price_or_cost_is_an_error(tmp_path: Path) -> None:
    meta = synthetic_meta()
    del meta["prices_usd"]["large"]
    data = rows()
    first_large = next(i for i, r in enumerate(data) if r["model"] == "large")
    err = error_of(tmp_path, data, meta=meta)
    assert err.row == first_large + 1 and err.field == "cost_usd" and "large" in str(err)


def test_recorded_costs_give_fitted_prices(tmp_path: Path) -> None:
    data = rows()
    for r in data:
        r["cost_usd"] = r["input_tokens"] * 2e-6 + r["output_tokens"] * 8e-6
    out = load_outcomes([write(tmp_path, data, meta={"prices_usd": {}})])
    assert out.prices["large"].input_per_million == pytest.approx(2.0, rel=1e-6)
    assert out.prices["large"].output_per_million == pytest.approx(8.0, rel=1e-6)
    assert out.price_source["large"].startswith("fitted")
    first = data[0]  # the first query's first row: model "small" (index 1), budget 32
    assert out.cost[0, out.models.index(first["model"]), 0] == pytest.approx(first["cost_usd"])


def test_missing_arms_and_null_scores_are_counted(tmp_path: Path) -> None:
    data = rows()
    dropped = data.pop(7)
    data[0]["score"] = None
    out = load_outcomes([write(tmp_path, data)])
    assert out.unscored_rows == 1
    assert int((~out.complete).sum()) == 2
    assert dropped["query_id"] in {q for q, ok in zip(out.query_ids, out.complete, strict=True)
                                   if not ok}


def test_a_model_without_a_policy_is_a_hole_not_an_error(tmp_path: Path) -> None:
    data = [r for r in rows() if not (r["model"] == "small" and r["policy"] == 32)]
    out = load_outcomes([write(tmp_path, data)])
    assert out.present.tolist() == [[True, True, True], [False, True, True]]
    assert out.complete.all()  # a cell never run is no arm: every query has every arm
    assert out.arm_labels() == ["large@32", "large@256", "large@unlimited", "small@256",
                                "small@unlimited"]


def test_models_and_policies_restrict_the_load(tmp_path: Path) -> None:
    path = write(tmp_path, rows())
    out = load_outcomes([path], models=["small"], policies=["32", "unlimited"])
    assert out.models == ("small",) and out.policies == (32, "unlimited")
    with pytest.raises(DataError) as info:
        load_outcomes([path], models=["small", "medium"])
    assert "'medium'" in str(info.value) and "choose from large, small" in str(info.value)
    with pytest.raises(DataError, match="--policies"):
        load_outcomes([path], policies=["verbose"])


def test_errors_name_the_fix(tmp_path: Path) -> None:
    data = rows()
    data[3]["score"] = 1.5
    err = error_of(tmp_path, data)
    assert err.row == 4 and err.field == "score" and err.fix and "fix:" in str(err)


def test_invalid_json_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rows()[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="row 2"):
        load_outcomes([path])
    with pytest.raises(DataError, match="unknown data format"):
        load_outcomes([tmp_path / "data.txt"])


def test_policy_order_and_split_masks(tmp_path: Path) -> None:
    data = load_outcomes([write(tmp_path, rows())])
    train, test = data.split_mask("train"), data.split_mask("test")
    assert (train ^ test).all()
    sub = data.subset(test)
    assert sub.n_queries == int(test.sum()) and sub.models == data.models
    assert np.all(data.token_targets()[:, :, 0] <= 32)


def test_policies_file(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n  concise_cot:\n    instruction: Be brief.\n    max_tokens: 300\n")
    pfile = load_policy_file(path)
    pols = build_policies([100, "concise_cot", "answer_only", "unlimited"], pfile)
    assert pols[0].budget == 100 and pols[0].cap == 100 and pols[0].kind == "budget"
    assert pols[0].instruction == DEFAULT_BUDGET_INSTRUCTION and pols[0].cost_tokens == "predicted"
    assert pols[1].instruction == "Be brief." and pols[1].max_tokens == 300
    assert pols[3].is_unlimited and pols[3].instruction is None
    assert missing_instructions(pols) == ["answer_only"]


@pytest.mark.parametrize("text,field", [
    ("policies:\n  cot:\n    instruction: x\n    temperature: 1\n", "policies.cot.temperature"),
    ("policies:\n  cot:\n    max_tokens: -5\n", "policies.cot.max_tokens"),
    ("budget_instruction: ''\n", "budget_instruction"),
    ("extra: 1\n", "extra"),
])
def test_policies_file_errors_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_policy_file(path)
    assert info.value.field == field


def test_real_datasets_load() -> None:
    cot_file = require_shared("data", "mcqa_concise_cot.jsonl.gz")
    rb_file = require_shared("data", "routerbench_subset.jsonl.gz")
    cot = load_outcomes([cot_file])
    assert cot.score.shape == (1000, 2, 4) and cot.complete.all()
    assert cot.policies == ("answer_only", "concise_cot", "cot", "verbose_cot")
    rb = load_outcomes([rb_file])
    assert rb.score.shape == (3164, 11, 1)
    assert rb.unscored_rows == 104 and int((~rb.complete).sum()) == 14
    assert all(s.startswith("fitted") for s in rb.price_source.values())
    # Same query, model and policy in two files is a duplicate, named as such.
    with pytest.raises(DataError, match="duplicate"):
        load_outcomes([cot_file, cot_file])
