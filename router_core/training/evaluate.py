"""Offline evaluation: sweep lambda, pick arms, read off realised quality and cost.

For each lambda of the grid a router picks one arm per query; the curve point is the mean
realised cost and quality of the picked arms (realised = the dataset's outcome for that arm).

Routers:
- `r2`: the checkpoint's arg-max of `(1-lambda)*q - lambda*cost` over all (model, policy) arms;
- `point`: the same predictions restricted to one policy (the reactive router, which ignores
  that quality depends on output length);
- `oracle`: the arg-max over realised quality and cost, per query;
- `best-single`: every arm on its own (one point each);
- `random`: each query to an arm drawn uniformly from the k cheapest arms, k = 1..A, in
  expectation (so it is deterministic).

The lambda grid is `kappa/(1+kappa)` with `kappa = lambda/(1-lambda)` log-spaced from
`1e-3/C_hi` to `1e3/C_lo` (where a unit of cost starts to weigh against quality for these
prices), plus 0, the paper's default 0.99999 and 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from .metrics import audc, peak, qnc

F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
PAPER_LAMBDA = 0.99999
ROUTERS = ("r2", "point", "oracle", "random", "best-single")


@dataclass
class Curve:
    cost: F64
    quality: F64
    lambdas: F64 | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cost": self.cost.tolist(), "quality": self.quality.tolist()}
        if self.lambdas is not None:
            out["lambda"] = self.lambdas.tolist()
        return out


@dataclass
class Arms:
    """Realised outcomes of the evaluated queries, arms flattened: `[N, A]`."""

    labels: list[str]
    quality: F64
    cost: F64

    @cached_property
    def mean_cost(self) -> F64:
        return np.asarray(self.cost.mean(axis=0), dtype=np.float64)

    @cached_property
    def mean_quality(self) -> F64:
        return np.asarray(self.quality.mean(axis=0), dtype=np.float64)

    @property
    def best(self) -> int:
        """The best single arm: highest mean quality, then the cheaper."""
        return int(np.lexsort((self.mean_cost, -self.mean_quality))[0])


@dataclass
class RouterResult:
    audc: float
    qnc: float
    peak: float
    curve: Curve

    def metrics(self) -> dict[str, float]:
        return {"audc": self.audc, "qnc": self.qnc, "peak": self.peak}


@dataclass
class EvalReport:
    routers: dict[str, RouterResult]
    arms: Arms
    c_lo: float
    c_hi: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        best = self.arms.best
        return {
            "routers": {k: _finite(r.metrics()) for k, r in self.routers.items()},
            "curves": {k: r.curve.to_json() for k, r in self.routers.items()},
            "arms": [{"arm": a, "cost": float(c), "quality": float(q)} for a, c, q in
                     zip(self.arms.labels, self.arms.mean_cost, self.arms.mean_quality,
                         strict=True)],
            "best_single_arm": self.arms.labels[best],
            "cost_range": [self.c_lo, self.c_hi],
            **self.info,
        }


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    # JSON has no infinity: a QNC that is never reached is written as null.
    return {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}


def lambda_grid(c_lo: float, c_hi: float, points: int = 240) -> F64:
    lo = np.log10(1e-3 / max(c_hi, 1e-12))
    hi = np.log10(1e3 / max(c_lo, 1e-12))
    kappa = np.logspace(lo, hi, points)
    grid = np.concatenate([[0.0], kappa / (1.0 + kappa), [PAPER_LAMBDA, 1.0]])
    return np.unique(grid)


def choices(pred_q: F64, pred_c: F64, lambdas: F64, allowed: npt.NDArray[np.bool_] | None = None,
            chunk: int = 16) -> IntArray:
    """Arg-max arm `[L, N]` of `(1-lambda)*pred_q - lambda*pred_c` (`[N, A]`) per lambda."""
    out = np.empty((len(lambdas), pred_q.shape[0]), dtype=np.intp)
    for s in range(0, len(lambdas), chunk):
        lam = lambdas[s: s + chunk, None, None]
        util = (1.0 - lam) * pred_q[None] - lam * pred_c[None]
        util = np.where(np.isnan(util), -np.inf, util)  # NaN: an arm without a head
        if allowed is not None:
            util = np.where(allowed[None, None, :], util, -np.inf)
        out[s: s + chunk] = np.argmax(util, axis=2)
    return out


def realised(idx: IntArray, arms: Arms) -> Curve:
    rows = np.arange(idx.shape[1])[None, :]
    return Curve(arms.cost[rows, idx].mean(axis=1), arms.quality[rows, idx].mean(axis=1))


def random_curve(arms: Arms) -> Curve:
    order = np.argsort(arms.mean_cost, kind="stable")
    k = np.arange(1, len(order) + 1)
    return Curve(np.cumsum(arms.mean_cost[order]) / k, np.cumsum(arms.mean_quality[order]) / k)


def summarise(curves: dict[str, Curve], arms: Arms) -> tuple[dict[str, RouterResult], float,
                                                               float]:
    costs = arms.mean_cost
    c_lo, c_hi = float(costs.min()), float(costs.max())
    best = arms.best
    target_q, target_c = float(arms.mean_quality[best]), float(costs[best])
    results = {
        name: RouterResult(audc(c.cost, c.quality, c_lo, c_hi),
                           qnc(c.cost, c.quality, target_q, target_c), peak(c.quality), c)
        for name, c in curves.items()
    }
    return results, c_lo, c_hi


def evaluate_predictions(pred_q: F64, pred_c: F64, arms: Arms, point_arms: Sequence[int],
                         lambdas: F64 | None = None) -> EvalReport:
    """All routers' curves and metrics; predictions and outcomes are `[N, A]` over the data's
    arms, and `point_arms` are the arm indices the point router may pick."""
    if lambdas is None:
        lambdas = lambda_grid(float(arms.mean_cost.min()), float(arms.mean_cost.max()))
    point_mask = np.zeros(pred_q.shape[1], dtype=bool)
    point_mask[list(point_arms)] = True
    curves = {
        "r2": realised(choices(pred_q, pred_c, lambdas), arms),
        "point": realised(choices(pred_q, pred_c, lambdas, point_mask), arms),
        "oracle": realised(choices(arms.quality, arms.cost, lambdas), arms),
        "random": random_curve(arms),
        "best-single": Curve(arms.mean_cost, arms.mean_quality),
    }
    for name in ("r2", "point", "oracle"):
        curves[name].lambdas = lambdas
    results, c_lo, c_hi = summarise(curves, arms)
    return EvalReport(results, arms, c_lo, c_hi)


def r2_audc(pred_q: F64, pred_c: F64, arms: Arms,
            allowed: npt.NDArray[np.bool_] | None = None) -> float:
    """The r2 router's AUDC alone (what validation compares variants by); with `allowed`, the
    router restricted to those arms (the point router of one policy), on the same cost range."""
    lambdas = lambda_grid(float(arms.mean_cost.min()), float(arms.mean_cost.max()))
    curve = realised(choices(pred_q, pred_c, lambdas, allowed), arms)
    return audc(curve.cost, curve.quality, float(arms.mean_cost.min()),
                float(arms.mean_cost.max()))
