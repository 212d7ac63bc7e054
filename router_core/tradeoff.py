"""The calibrated cost-quality knob: `tradeoff` in [0, 1] mapped to the raw `lambda` per checkpoint.

The release's utility `(1-lambda)*quality - lambda*cost_usd` compares quality in [0, 1] with
costs of 1e-5..1e-2 USD, so all the action sits in a sliver of lambda just below 1. A
`TradeoffTable` fixes that per checkpoint: `tradeoff` 0 is the best predicted quality (lambda 0),
1 the cheapest, and in between the mean predicted cost of the arg-max decisions on the
calibration queries moves evenly in log space (0.5 = the geometric middle of the cost range).

How the table is built (`calibrate`): the scorer predicts quality and cost `[N, A]` once; the
arg-max is taken for a grid of lambdas that is even in `log(kappa)`, `kappa = lambda/(1-lambda)`
(the utility's arg-max only depends on `kappa`, and `log(1-lambda) ~ -log(kappa)` near 1, where
most of the action is); the mean chosen cost `C(lambda)` is made non-increasing (ties and
plateaus: the smallest lambda of a plateau wins, keeping the best quality at that cost); for
each knot `t` the target `log C = (1-t) log C_max + t log C_min` is bracketed by two grid
lambdas and interpolated in `log(1-lambda)`. `lambda_for` interpolates between knots in the same
space, so the map is continuous and non-decreasing.

The other knob, `usd_per_quality` (W USD per request for +1.0 of quality, utility `q - cost/W`),
is `lambda = 1/(1+W)` on every checkpoint. `Knob` names which of the three a value is.

Pure: numpy only; the scorer is passed in (anything with `predict(emb, tokens) -> Scores`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ._errors import InvalidInputError

F64 = npt.NDArray[np.float64]
KnobKind = Literal["lambda", "tradeoff", "usd_per_quality"]
TABLE_VERSION = 1
#: Knots of a computed table: t = 0, 0.05, ..., 1.
KNOTS = 21
#: Grid density of the lambda sweep, points per decade of kappa.
GRID_PER_DECADE = 40
CALIBRATE_HINT = ("this checkpoint has no trade-off table: run `r2 calibrate QUERIES "
                  "--checkpoint DIR` (or send x-r2-lambda / x-r2-usd-per-quality)")
_TINY = 1e-300


class _Scores(Protocol):
    quality: F64
    cost: F64


class _Predictor(Protocol):
    def predict(self, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike) -> Any: ...


@dataclass(frozen=True)
class Knob:
    """One cost-quality setting as the caller gave it: raw lambda, calibrated trade-off, or
    USD per unit of quality."""

    kind: KnobKind
    value: float

    def __post_init__(self) -> None:
        check_knob(self.kind, self.value)


def check_knob(kind: KnobKind, value: float) -> float:
    """The value if it is valid for `kind`; else `InvalidInputError` with `param=kind`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if kind == "usd_per_quality":
        if not math.isfinite(v) or v <= 0:
            raise InvalidInputError("usd_per_quality must be a finite number > 0",
                                    param="usd_per_quality")
        return v
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InvalidInputError(f"{kind} must be a number in [0, 1]", param=kind)
    return v


def lambda_for_usd_per_quality(w: float) -> float:
    """Utility `q - cost/W` is `(1-lambda) q - lambda cost` scaled, with `lambda = 1/(1+W)`."""
    return 1.0 / (1.0 + check_knob("usd_per_quality", w))


@dataclass(frozen=True)
class TradeoffTable:
    """Monotone knots `tradeoff -> lambda`, with the mean predicted cost at each knot on the
    calibration queries (USD per request) and where those queries came from."""

    tradeoff: tuple[float, ...]
    lambda_: tuple[float, ...]
    mean_cost_usd: tuple[float, ...]
    queries: int
    source: str = ""

    def __post_init__(self) -> None:
        t, lam, c = (np.asarray(x, dtype=np.float64)
                     for x in (self.tradeoff, self.lambda_, self.mean_cost_usd))
        if not (len(t) == len(lam) == len(c) >= 2):
            raise ValueError("tradeoff, lambda and mean_cost_usd need the same length >= 2")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(lam)) and np.all(np.isfinite(c))):
            raise ValueError("table values must be finite")
        if t[0] != 0.0 or t[-1] != 1.0 or np.any(np.diff(t) <= 0):
            raise ValueError("tradeoff knots must increase strictly from 0 to 1")
        if np.any(lam < 0) or np.any(lam > 1) or np.any(np.diff(lam) < 0):
            raise ValueError("lambda must be non-decreasing within [0, 1]")
        if np.any(c < 0):
            raise ValueError("mean_cost_usd must be >= 0")
        if self.queries < 1:
            raise ValueError("queries must be >= 1")

    def lambda_for(self, tradeoff: float) -> float:
        """The effective lambda of a trade-off in [0, 1] (interpolated in `log(1-lambda)`)."""
        t = check_knob("tradeoff", tradeoff)
        lam = 1.0 - math.exp(float(np.interp(t, self._knots, self._log_one_minus_lambda)))
        return min(max(lam, self.lambda_[0]), self.lambda_[-1])

    def cost_at(self, tradeoff: float) -> float:
        """Mean predicted cost per request at `tradeoff` on the calibration queries (log-linear
        between knots)."""
        t = check_knob("tradeoff", tradeoff)
        return math.exp(float(np.interp(t, self._knots, self._log_cost)))

    # Derived once per table (`lambda_for` runs on every request that sends no raw lambda).
    @cached_property
    def _knots(self) -> F64:
        return np.asarray(self.tradeoff, dtype=np.float64)

    @cached_property
    def _log_one_minus_lambda(self) -> F64:
        return np.log(np.maximum(1.0 - np.asarray(self.lambda_, dtype=np.float64), _TINY))

    @cached_property
    def _log_cost(self) -> F64:
        return np.log(np.maximum(np.asarray(self.mean_cost_usd, dtype=np.float64), _TINY))

    @property
    def log_cost_span(self) -> float:
        """`log(C(0)/C(1))`: how many e-folds of mean cost the knob spans (0 if flat)."""
        hi, lo = self.mean_cost_usd[0], self.mean_cost_usd[-1]
        return math.log(max(hi, _TINY) / max(lo, _TINY))

    def to_json(self) -> dict[str, Any]:
        return {"version": TABLE_VERSION, "tradeoff": list(self.tradeoff),
                "lambda": list(self.lambda_), "mean_cost_usd": list(self.mean_cost_usd),
                "queries": self.queries, "source": self.source}

    @classmethod
    def from_json(cls, raw: Any) -> TradeoffTable:
        """Parse a manifest's `tradeoff` object; `ValueError` says what is wrong."""
        if not isinstance(raw, Mapping):
            raise ValueError("must be an object")
        if raw.get("version") != TABLE_VERSION:
            raise ValueError(f"unsupported version {raw.get('version')!r}")
        lists = []
        for key in ("tradeoff", "lambda", "mean_cost_usd"):
            value = raw.get(key)
            if not isinstance(value, list) or not all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in value):
                raise ValueError(f"{key} must be a list of numbers")
            lists.append(tuple(float(x) for x in value))
        queries = raw.get("queries")
        if not isinstance(queries, int) or isinstance(queries, bool):
            raise ValueError("queries must be an integer")
        source = raw.get("source", "")
        return cls(lists[0], lists[1], lists[2], queries, str(source))


def resolve_lambda(knob: Knob, table: TradeoffTable | None) -> float:
    """The effective lambda of any knob; a trade-off needs the checkpoint's table."""
    if knob.kind == "lambda":
        return knob.value
    if knob.kind == "usd_per_quality":
        return lambda_for_usd_per_quality(knob.value)
    if table is None:
        raise InvalidInputError(CALIBRATE_HINT, param="tradeoff")
    return table.lambda_for(knob.value)


# -- calibration --------------------------------------------------------------------------------
def lambda_grid(cost: F64, per_decade: int = GRID_PER_DECADE) -> F64:
    """0, then `kappa/(1+kappa)` log-spaced over every kappa at which a decision can change,
    then 1. A decision flips where `kappa = dq/dc`; with `dq` in [1e-6, 1] and `dc` at most
    the largest cost and at least ~1e-6 of the smallest positive one, this range covers it."""
    positive = cost[cost > 0]
    c_hi = float(positive.max()) if positive.size else 1.0
    c_lo = float(positive.min()) if positive.size else 1.0
    lo, hi = math.log10(1e-6 / c_hi), math.log10(1e6 / c_lo)
    kappa = np.logspace(lo, hi, max(2, int(math.ceil((hi - lo) * per_decade)) + 1))
    return np.concatenate([[0.0], kappa / (1.0 + kappa), [1.0]])


def mean_chosen_cost(quality: F64, cost: F64, lambdas: F64, chunk: int = 32) -> F64:
    """Mean cost `[L]` of the arg-max of `(1-lambda) q - lambda c` over arms (`[N, A]`), ties
    to the first arm, exactly as the scorer decides."""
    rows = np.arange(quality.shape[0])
    out = np.empty(len(lambdas))
    for s in range(0, len(lambdas), chunk):
        lam = lambdas[s: s + chunk, None, None]
        idx = np.argmax((1.0 - lam) * quality[None] - lam * cost[None], axis=2)
        out[s: s + chunk] = cost[rows[None, :], idx].mean(axis=1)
    return out


def table_from_curve(lambdas: F64, mean_cost: F64, queries: int, source: str = "",
                     knots: int = KNOTS) -> TradeoffTable:
    """The monotone table from a sweep: `mean_cost[i]` is the mean chosen cost at `lambdas[i]`
    (`lambdas` increasing from 0)."""
    lam = np.asarray(lambdas, dtype=np.float64)
    # Per query the chosen cost cannot grow with lambda; the mean can only by float noise.
    cost = np.minimum.accumulate(np.maximum(np.asarray(mean_cost, dtype=np.float64), _TINY))
    logc = np.log(cost)
    ts = np.linspace(0.0, 1.0, knots)
    targets = (1.0 - ts) * logc[0] + ts * logc[-1]
    u = np.log(np.maximum(1.0 - lam, _TINY))
    out_lam, out_cost = [], []
    eps = 1e-12 * max(1.0, abs(float(logc[0])))
    for target in targets:
        # First grid point at or below the target: the smallest lambda of a plateau.
        b = int(np.argmax(logc <= target + eps))
        if b == 0 or logc[b] >= target - eps:
            chosen = float(lam[b])
        else:
            a = b - 1
            frac = (logc[a] - target) / (logc[a] - logc[b])
            chosen = 1.0 - math.exp(float(u[a] + frac * (u[b] - u[a])))
        out_lam.append(min(max(chosen, 0.0), 1.0))
        out_cost.append(math.exp(float(target)))
    monotone = np.maximum.accumulate(np.asarray(out_lam))
    out_cost[0], out_cost[-1] = float(cost[0]), float(cost[-1])
    return TradeoffTable(tuple(ts.tolist()), tuple(monotone.tolist()), tuple(out_cost), queries,
                         source)


def calibrate(scorer: _Predictor, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike,
              source: str = "", knots: int = KNOTS) -> TradeoffTable:
    """The trade-off table of a scorer on calibration queries (embeddings `[N, D]` and their
    input token counts), over every arm of the checkpoint."""
    scores: _Scores = scorer.predict(embeddings, input_tokens)
    n = scores.quality.shape[0]
    if n < 1:
        raise InvalidInputError("calibration needs at least one query", param="queries")
    q = np.asarray(scores.quality, dtype=np.float64).reshape(n, -1)
    c = np.asarray(scores.cost, dtype=np.float64).reshape(n, -1)
    lambdas = lambda_grid(c)
    return table_from_curve(lambdas, mean_chosen_cost(q, c, lambdas), n, source, knots)


# -- evaluation ---------------------------------------------------------------------------------
EVAL_TRADEOFFS = (0.0, 0.25, 0.5, 0.75, 1.0)


def tradeoff_points(table: TradeoffTable, pred_q: F64, pred_c: F64, real_q: F64, real_c: F64,
                    tradeoffs: Sequence[float] = EVAL_TRADEOFFS) -> list[dict[str, float]]:
    """At each trade-off: the lambda, and the mean predicted cost, realised cost and realised
    quality of the arg-max decisions over `[N, A]` predictions/outcomes of evaluation queries;
    `log_cost_position` is where the predicted mean cost sits between the t=0 (0.0) and t=1
    (1.0) points in log space."""
    rows = np.arange(pred_q.shape[0])
    points = []
    for t in tradeoffs:
        lam = table.lambda_for(t)
        idx = np.argmax((1.0 - lam) * pred_q - lam * pred_c, axis=1)
        points.append({"tradeoff": float(t), "lambda": lam,
                       "predicted_cost": float(pred_c[rows, idx].mean()),
                       "cost": float(real_c[rows, idx].mean()),
                       "quality": float(real_q[rows, idx].mean())})
    hi = math.log(max(points[0]["predicted_cost"], _TINY))
    lo = math.log(max(points[-1]["predicted_cost"], _TINY))
    for p in points:
        here = math.log(max(p["predicted_cost"], _TINY))
        p["log_cost_position"] = (hi - here) / (hi - lo) if hi > lo else 0.0
    return points
