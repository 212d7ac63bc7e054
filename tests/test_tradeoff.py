"""The calibrated trade-off table (router_core/tradeoff.py) and its place in the manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from tradeoff_helpers import PROMPTS, varied_checkpoint

from router_core import (
    CheckpointError,
    HashEmbedder,
    InvalidInputError,
    Scorer,
    load_checkpoint,
    save_checkpoint,
)
from router_core.tradeoff import (
    Knob,
    TradeoffTable,
    calibrate,
    lambda_for_usd_per_quality,
    resolve_lambda,
    table_from_curve,
    tradeoff_points,
)


def _calibrated(tmp_path: Path) -> tuple[Scorer, np.ndarray, np.ndarray, TradeoffTable]:
    ckpt = load_checkpoint(varied_checkpoint(tmp_path / "ck"))
    emb = HashEmbedder(64).embed(PROMPTS).astype(np.float64)
    tokens = np.array([len(p.split()) for p in PROMPTS], dtype=np.float64)
    scorer = Scorer(ckpt)
    return scorer, emb, tokens, calibrate(scorer, emb, tokens, source="test")


def _mean_cost(scorer: Scorer, emb: np.ndarray, tokens: np.ndarray, lam: float) -> float:
    idx, scores, _ = scorer.pick(emb, tokens, lam)
    n = emb.shape[0]
    return float(scores.cost.reshape(n, -1)[np.arange(n), idx].mean())


def test_table_is_monotone_and_spans_best_quality_to_cheapest(tmp_path: Path) -> None:
    scorer, emb, tokens, table = _calibrated(tmp_path)
    assert table.tradeoff[0] == 0.0 and table.tradeoff[-1] == 1.0
    assert all(b >= a for a, b in zip(table.lambda_, table.lambda_[1:], strict=False))
    assert table.lambda_for(0.0) == 0.0
    ts = np.linspace(0, 1, 101)
    lams = [table.lambda_for(float(t)) for t in ts]
    assert all(b >= a for a, b in zip(lams, lams[1:], strict=False))
    costs = [_mean_cost(scorer, emb, tokens, lam) for lam in lams]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(costs, costs[1:], strict=False))
    # t=1 reaches the cheapest mean cost of all, t=0 the quality-only decisions.
    assert costs[-1] == pytest.approx(_mean_cost(scorer, emb, tokens, 1.0))
    assert costs[0] == pytest.approx(_mean_cost(scorer, emb, tokens, 0.0))
    assert costs[0] / costs[-1] > 10


def test_half_lands_near_the_geometric_middle(tmp_path: Path) -> None:
    scorer, emb, tokens, table = _calibrated(tmp_path)
    hi, lo = (math.log(_mean_cost(scorer, emb, tokens, table.lambda_for(t))) for t in (0, 1))
    mid = math.log(_mean_cost(scorer, emb, tokens, table.lambda_for(0.5)))
    assert 1 / 3 <= (hi - mid) / (hi - lo) <= 2 / 3


def test_plateaus_take_the_smallest_lambda() -> None:
    lambdas = np.array([0.0, 0.5, 0.9, 0.99, 1.0])
    cost = np.array([1.0, 1.0, 0.1, 0.1, 0.01])
    table = table_from_curve(lambdas, cost, queries=3)
    assert table.lambda_for(0.5) == pytest.approx(0.9)  # exp(mid) = 0.1 is reached first at 0.9
    assert table.lambda_for(1.0) == pytest.approx(1.0)
    flat = table_from_curve(lambdas, np.full(5, 0.2), queries=3)
    assert flat.lambda_for(1.0) == 0.0 and flat.log_cost_span == 0.0


def test_usd_per_quality_and_knob_validation() -> None:
    assert lambda_for_usd_per_quality(1.0) == 0.5
    assert lambda_for_usd_per_quality(0.01) == pytest.approx(1 / 1.01)
    assert resolve_lambda(Knob("usd_per_quality", 3.0), None) == 0.25
    for kind, bad in [("tradeoff", math.nan), ("tradeoff", -0.1), ("tradeoff", 1.5),
                      ("usd_per_quality", 0.0), ("usd_per_quality", -1.0),
                      ("usd_per_quality", math.inf), ("lambda", math.nan)]:
        with pytest.raises(InvalidInputError):
            Knob(kind, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="r2 calibrate"):
        resolve_lambda(Knob("tradeoff", 0.5), None)


def test_manifest_round_trip_and_validation(tmp_path: Path) -> None:
    _, _, _, table = _calibrated(tmp_path)
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.tradeoff is None  # older manifests (no field) still load
    ckpt.tradeoff = table
    out = save_checkpoint(ckpt, tmp_path / "with")
    again = load_checkpoint(out)
    assert again.tradeoff == table
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["tradeoff"]["version"] == 1
    for broken in ({**raw["tradeoff"], "lambda": list(reversed(raw["tradeoff"]["lambda"]))},
                   {**raw["tradeoff"], "tradeoff": [0.0, 0.5]},
                   {**raw["tradeoff"], "version": 9}, "nope"):
        (out / "manifest.json").write_text(json.dumps({**raw, "tradeoff": broken}))
        with pytest.raises(CheckpointError, match="tradeoff"):
            load_checkpoint(out)


def test_tradeoff_points_on_evaluation_queries(tmp_path: Path) -> None:
    scorer, emb, tokens, table = _calibrated(tmp_path)
    s = scorer.predict(emb, tokens)
    n = emb.shape[0]
    q, c = s.quality.reshape(n, -1), s.cost.reshape(n, -1)
    points = tradeoff_points(table, q, c, q, c)
    assert [p["tradeoff"] for p in points] == [0.0, 0.25, 0.5, 0.75, 1.0]
    costs = [p["predicted_cost"] for p in points]
    assert all(b <= a for a, b in zip(costs, costs[1:], strict=False))
    assert points[0]["log_cost_position"] == 0.0 and points[-1]["log_cost_position"] == 1.0


def test_shipped_checkpoints_are_calibrated() -> None:
    """Every checkpoint in checkpoints/ carries a monotone table (docs/routing.md has the
    commands that write them)."""
    root = Path(__file__).resolve().parents[1] / "checkpoints"
    dirs = [d for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()]
    assert dirs
    for d in dirs:
        table = load_checkpoint(d).tradeoff
        assert table is not None, f"{d.name}: run r2 calibrate (docs/routing.md)"
        assert table.lambda_for(0) == 0.0 and table.log_cost_span > 1.0
