"""`r2 train` writes a trade-off table; `r2 eval` reports `tradeoff_points` (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from router_core import load_checkpoint
from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes

MODELS = ("small", "medium", "large")


def test_train_calibrates_and_eval_reports_tradeoff_points(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_outcomes(tmp_path / "syn.jsonl", synthetic_rows(n_queries=160, models=MODELS,
                                                                 seed=3), synthetic_meta(MODELS))
    out, cache = tmp_path / "ckpt", str(tmp_path / "cache")
    assert main(["train", str(data), "--out", str(out), "--embedder", "hash", "--cache-dir",
                 cache, "--no-progress", "--variant", "ridge", "--folds", "0"]) == 0
    table = load_checkpoint(out).tradeoff
    assert table is not None and "train split" in table.source
    assert all(b >= a for a, b in zip(table.lambda_, table.lambda_[1:], strict=False))
    assert main(["eval", str(data), "--checkpoint", str(out), "--cache-dir", cache,
                 "--no-progress", "--json", str(tmp_path / "e.json"),
                 "--plot", str(tmp_path / "e.png")]) == 0
    assert "r2 at tradeoff 0.5" in capsys.readouterr().out
    points = json.loads((tmp_path / "e.json").read_text())["tradeoff_points"]
    assert [p["tradeoff"] for p in points] == [0, 0.25, 0.5, 0.75, 1]
    costs = [p["predicted_cost"] for p in points]
    assert all(b <= a for a, b in zip(costs, costs[1:], strict=False))
    assert {"lambda", "cost", "quality", "log_cost_position"} <= set(points[0])
    assert (tmp_path / "e.png").stat().st_size > 0
