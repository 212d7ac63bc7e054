"""AUDC / QNC / peak, the lambda grid and the baseline routers, on hand-made curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import require_shared

from router_core.training import (
    Arms,
    audc,
    envelope_at,
    evaluate_predictions,
    lambda_grid,
    load_outcomes,
    pareto_envelope,
    peak,
    qnc,
)


def test_pareto_envelope_drops_dominated_points() -> None:
    c, q = pareto_envelope([3.0, 1.0, 2.0, 2.5, 2.0], [0.9, 0.5, 0.4, 0.95, 0.7])
    assert c.tolist() == [1.0, 2.0, 2.5]
    assert q.tolist() == [0.5, 0.7, 0.95]


def test_envelope_is_zero_left_flat_right_linear_between() -> None:
    y = envelope_at([1.0, 3.0], [0.5, 0.9], [0.5, 1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(y, [0.0, 0.5, 0.7, 0.9, 0.9])


def test_audc_of_simple_shapes() -> None:
    # A single point at C_lo: the envelope is flat at its quality over the whole range.
    assert audc([1.0], [0.6], 1.0, 3.0) == pytest.approx(0.6)
    # A point in the middle of the range: 0 on the left half, q on the right half.
    assert audc([2.0], [0.8], 1.0, 3.0) == pytest.approx(0.4, abs=1e-3)
    # A line from (1, 0.5) to (3, 0.9): mean 0.7.
    assert audc([1.0, 3.0], [0.5, 0.9], 1.0, 3.0) == pytest.approx(0.7, abs=1e-6)
    # Points outside the range to the right count only through the flat part.
    assert audc([1.0, 5.0], [0.5, 0.9], 1.0, 3.0) == pytest.approx(0.6, abs=1e-6)


def test_qnc() -> None:
    assert qnc([1.0, 3.0], [0.5, 0.9], 0.7, 4.0) == pytest.approx(0.5)  # reached at cost 2
    assert qnc([1.0], [0.95], 0.9, 4.0) == pytest.approx(0.25)
    assert math.isinf(qnc([1.0, 3.0], [0.5, 0.6], 0.7, 4.0))


def test_peak() -> None:
    assert peak([0.1, 0.7, 0.3]) == 0.7


def test_lambda_grid_is_dense_where_cost_matters() -> None:
    grid = lambda_grid(1e-3, 4e-2)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and 0.99999 in grid
    assert np.all(np.diff(grid) > 0)
    kappa = grid[1:-1] / (1 - grid[1:-1])
    assert kappa.min() == pytest.approx(1e-3 / 4e-2) and kappa.max() == pytest.approx(1e3 / 1e-3)


def two_arm_world() -> Arms:
    # Arm 0 cheap and right on even queries; arm 1 dear and always right.
    n = 10
    quality = np.stack([np.arange(n) % 2 == 0, np.ones(n, bool)], axis=1).astype(float)
    cost = np.tile([1.0, 10.0], (n, 1))
    return Arms(["cheap", "dear"], quality, cost)


def test_routers_on_a_known_world() -> None:
    arms = two_arm_world()
    # A perfect predictor is the oracle; a constant one is the point router's best case.
    report = evaluate_predictions(arms.quality, arms.cost, arms, point_arms=[1])
    r = report.routers
    assert report.c_lo == 1.0 and report.c_hi == 10.0
    assert r["oracle"].peak == 1.0 and r["r2"].audc == pytest.approx(r["oracle"].audc)
    # The oracle reaches quality 1 at cost 5.5 (cheap where it is right): QNC 0.55.
    assert r["oracle"].qnc == pytest.approx(0.55)
    assert r["best-single"].qnc == pytest.approx(1.0)
    assert r["point"].peak == 1.0 and r["point"].audc == pytest.approx(0.0, abs=1e-3)
    assert r["random"].curve.cost.tolist() == [1.0, 5.5]
    assert r["oracle"].audc >= r["best-single"].audc >= r["random"].audc
    out = report.to_json()
    assert set(out["routers"]) == {"r2", "point", "oracle", "random", "best-single"}
    assert out["best_single_arm"] == "dear"


def test_oracle_audc_on_mcqa_concise_cot_matches_the_reference() -> None:
    data = load_outcomes([require_shared("data", "mcqa_concise_cot.jsonl.gz")])
    test = data.subset(data.split_mask("test"))
    n = test.n_queries
    arms = Arms(test.arm_labels(), test.score.reshape(n, -1), test.cost.reshape(n, -1))
    report = evaluate_predictions(arms.quality, arms.cost, arms, point_arms=[2, 6])
    assert report.routers["oracle"].audc == pytest.approx(0.857, abs=1e-3)
    assert arms.labels[arms.best] == "gpt-4@verbose_cot"
