"""Isotonic calibration of linear quality heads, stored as plain arrays.

Ridge shrinks every head towards its mean, so predicted quality differences between arms are
compressed by different amounts per arm; a per-arm monotone map from the head's raw output to
the observed quality undoes that. The map is fitted on *cross-fitted* predictions (each train
row predicted by heads fitted without it), never on in-sample ones, which are overfit. It is
stored as `K` knots per arm (`quality_cal_x`, `quality_cal_y` `[M, P, K]`) and applied by the
scorer as a piecewise-linear interpolation, clamped at the end knots.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .ridge import LinearBank

F64 = npt.NDArray[np.float64]
KNOTS = 24


def cross_fitted(fit: Callable[[F64, F64], LinearBank], x: F64, y: F64, folds: int = 5,
                 seed: int = 1) -> F64:
    """Out-of-fold predictions `[N, K]` of `fit(x, y)` heads (`y` `[N, ...]`), folds by row."""
    n = x.shape[0]
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    out = np.full((n, int(np.prod(y.shape[1:]))), np.nan)
    for k in range(folds):
        rows = fold_of == k
        if rows.all() or not rows.any():
            continue
        bank = fit(x[~rows], y[~rows])
        out[rows] = bank.predict(x[rows])
    return out


def isotonic_maps(pred: F64, y: F64, knots: int = KNOTS) -> tuple[F64, F64]:
    """Per column, `knots` points of the isotonic regression of `y` on `pred` (observed rows)."""
    from sklearn.isotonic import IsotonicRegression

    k = pred.shape[1]
    xs, ys = np.zeros((k, knots)), np.zeros((k, knots))
    for j in range(k):
        ok = np.isfinite(pred[:, j]) & np.isfinite(y[:, j])
        if ok.sum() < 2:  # no data: the identity map (clipped to [0, 1])
            xs[j], ys[j] = np.linspace(0.0, 1.0, knots), np.linspace(0.0, 1.0, knots)
            continue
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(pred[ok, j], y[ok, j])
        grid = np.quantile(pred[ok, j], np.linspace(0.0, 1.0, knots))
        grid = grid + np.arange(knots) * 1e-9  # strictly increasing for interpolation
        xs[j], ys[j] = grid, iso.predict(grid)
    return xs, ys


def apply_maps(raw: F64, knots_x: F64, knots_y: F64) -> F64:
    """`raw` `[N, K]` through each column's piecewise-linear map (`knots_*` `[K, knots]`)."""
    out = np.empty_like(raw)
    for j in range(raw.shape[1]):
        out[:, j] = np.interp(raw[:, j], knots_x[j], knots_y[j])
    return out
