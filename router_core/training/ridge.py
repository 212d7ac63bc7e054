"""Banks of Ridge heads: one linear head per target, alpha chosen per target by cross-validation.

`fit_ridge_bank` fits `Y[:, k] ~ X` for every column k by Ridge with the alpha of least
leave-one-out error (one alpha per target, exact and cheap from one SVD); columns with missing
values (NaN: a query lacking that arm) are fitted on their own rows. `fit_shared_bank` is the
hierarchical variant for an `[N, M, P]` target: a head for the mean over all arms, one for
each model's deviation from it and one for each arm's deviation from its model, each level
with its own cross-validated alpha. Summed, every arm is still one linear head, so the
checkpoint and the request path do not change; the point is that the arm-level deviations,
which decide between output-length policies, are shrunk separately from what arms share.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 22))


@dataclass
class LinearBank:
    """`coef_` `[K, D]`, `intercept_` `[K]`, `alpha_` `[K]` (NaN where not fitted by CV)."""

    coef_: F64
    intercept_: F64
    alpha_: F64

    def predict(self, x: F64) -> F64:
        return np.asarray(x @ self.coef_.T + self.intercept_, dtype=np.float64)


class RidgeSolver:
    """Ridge with an intercept on fixed rows `x` `[N, D]`, for many targets and alphas at once.

    One thin SVD of the centred `x`; each target's alpha minimises the exact leave-one-out
    squared error `((y - y_hat) / (1 - h_ii))**2` of the hat matrix (what scikit-learn's
    `RidgeCV` computes, without its per-call eigendecomposition).
    """

    def __init__(self, x: F64, alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> None:
        self.mean_ = x.mean(axis=0)
        u, s, vt = thin_svd(x - self.mean_)
        keep = s > s[0] * 1e-10 if s.size else s > 0
        self.u_, self.s_, self.vt_ = u[:, keep], s[keep], vt[keep]
        self.alphas = np.asarray(alphas, dtype=np.float64)

    def fit(self, y: F64) -> LinearBank:
        """Heads for every column of `y` `[N, K]` (no NaN)."""
        n = y.shape[0]
        y_mean = y.mean(axis=0)
        uty = self.u_.T @ (y - y_mean)  # [r, K]
        s2 = self.s_ ** 2
        best_err = np.full(y.shape[1], np.inf)
        best = np.zeros(y.shape[1], dtype=np.intp)
        for a, alpha in enumerate(self.alphas):
            shrink = s2 / (s2 + alpha)
            fitted = self.u_ @ (shrink[:, None] * uty) + y_mean
            h = (self.u_ ** 2) @ shrink + 1.0 / n
            err = np.mean(((y - fitted) / (1.0 - h)[:, None]) ** 2, axis=0)
            better = err < best_err
            best_err[better], best[better] = err[better], a
        alpha_ = self.alphas[best]
        weights = self.s_[:, None] / (s2[:, None] + alpha_[None, :])  # [r, K]
        coef = (self.vt_.T @ (weights * uty)).T  # [K, D]
        return LinearBank(coef, y_mean - coef @ self.mean_, alpha_)


def thin_svd(a: F64) -> tuple[F64, F64, F64]:
    """`np.linalg.svd(a, full_matrices=False)`, falling back to LAPACK's `gesvd` when numpy's
    divide-and-conquer driver (`gesdd`) reports that it did not converge.

    `gesdd` can fail on finite, well-scaled input: it did on the 2,214 x 384 train rows of
    routerbench_subset with a mean-of-layers feature block, OpenBLAS on an AMD EPYC (AVX2), and
    `r2 train` died with "SVD did not converge". `gesvd` (QR iteration) is slower but converges
    where `gesdd` does not; the heads do not depend on which one factored `a`."""
    try:
        u, s, vt = np.linalg.svd(a, full_matrices=False)
    except np.linalg.LinAlgError:
        import scipy.linalg

        u, s, vt = scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd",
                                    check_finite=False)
    return u, s, vt


Solvers = dict[bytes, RidgeSolver]


def fit_ridge_bank(x: F64, y: F64, alphas: tuple[float, ...] = DEFAULT_ALPHAS,
                   solvers: Solvers | None = None) -> LinearBank:
    """One Ridge head per column of `y` `[N, K]`; NaN targets are left out of that column.

    `solvers` caches the SVD per set of rows across calls on the same `x` and `alphas`.
    """
    solvers = {} if solvers is None else solvers
    y = y.reshape(y.shape[0], -1)
    k, d = y.shape[1], x.shape[1]
    coef, intercept, alpha = np.zeros((k, d)), np.zeros(k), np.full(k, np.nan)
    observed = ~np.isnan(y)
    patterns: dict[bytes, list[int]] = {}
    for j in range(k):
        patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
    for cols in patterns.values():
        rows = observed[:, cols[0]]
        if rows.sum() == 0:
            continue
        if rows.sum() < 3:  # too few rows to cross-validate: the mean is the honest head
            intercept[cols] = np.nanmean(y[rows][:, cols], axis=0)
            continue
        key = np.packbits(rows).tobytes()
        if key not in solvers:
            solvers[key] = RidgeSolver(x[rows], alphas)
        bank = solvers[key].fit(y[rows][:, cols])
        coef[cols], intercept[cols], alpha[cols] = bank.coef_, bank.intercept_, bank.alpha_
    return LinearBank(coef, intercept, alpha)


def fit_shared_bank(x: F64, y: F64, alphas: tuple[float, ...] = DEFAULT_ALPHAS,
                    solvers: Solvers | None = None) -> LinearBank:
    """Hierarchical heads for `y` `[N, M, P]`: global mean + model deviation + arm deviation.

    The levels are fitted on the per-query means `g = mean(y)`, `m = mean_p(y) - g` and
    `a = y - mean_p(y)`; NaN (missing arms) are skipped in the means and left out of the arm
    level. Returns a bank of `M*P` heads in model-major order.
    """
    n, m, p = y.shape
    with warnings.catch_warnings():  # a query lacking all of a model's arms gives NaN: wanted
        warnings.simplefilter("ignore", RuntimeWarning)
        per_model = np.nanmean(y, axis=2)  # [N, M]
        overall = np.nanmean(per_model, axis=1)  # [N]
    solvers = {} if solvers is None else solvers
    g = fit_ridge_bank(x, overall[:, None], alphas, solvers)
    dev_model = fit_ridge_bank(x, per_model - overall[:, None], alphas, solvers) if m > 1 else None
    dev_arm = (fit_ridge_bank(x, (y - per_model[:, :, None]).reshape(n, m * p), alphas, solvers)
               if p > 1 else None)
    coef = np.repeat(g.coef_, m * p, axis=0)
    intercept = np.repeat(g.intercept_, m * p)
    if dev_model is not None:
        coef += np.repeat(dev_model.coef_, p, axis=0)
        intercept += np.repeat(dev_model.intercept_, p)
    alpha = np.full(m * p, np.nan)
    if dev_arm is not None:
        coef += dev_arm.coef_
        intercept += dev_arm.intercept_
        alpha = dev_arm.alpha_
    return LinearBank(coef, intercept, alpha)
