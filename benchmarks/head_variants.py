"""Validation AUDC of quality-head alternatives on the train split (the second "tried and not
kept" table of docs/training.md).

The folds are `r2 train`'s (5 folds by query, seed 0); each fold fits the `shared-log` heads
(the reference) and the alternatives on the other folds and sweeps the r2 router over the
held-out fold's queries with every arm. Costs are the reference checkpoint's predictions, so
only the quality heads differ (except the diagnostic row, which uses the realised cost). The
test split is never read. CPU-heavy (minutes per dataset): run with `nice`.

    python benchmarks/head_variants.py ../shared/data/mcqa_concise_cot.jsonl.gz \\
        --policy-file checkpoints/mcqa_concise_cot/policies.yaml
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from router_core.checkpoint import EmbedderSpec
from router_core.embedders import make_embedder
from router_core.training.dataset import load_outcomes
from router_core.training.evaluate import r2_audc
from router_core.training.policyfile import load_policy_file
from router_core.training.ridge import LinearBank, fit_ridge_bank, fit_shared_bank
from router_core.training.trainer import (
    arms_of,
    fit_policies,
    make_checkpoint,
    predict_arms,
    prepare,
    query_folds,
)
from router_core.training.variants import VARIANTS, fit_variant

Heads = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def cross_fitted(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """Out-of-fold `shared` predictions `[N, M*P]` on the fitting rows."""
    fold_of = np.random.default_rng(1).permutation(x.shape[0]) % folds
    out = np.full((x.shape[0], y.shape[1] * y.shape[2]), np.nan)
    for k in range(folds):
        rows = fold_of == k
        out[rows] = fit_shared_bank(x[~rows], y[~rows]).predict(x[rows])
    return out


Calibrate = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def calibrated(x: np.ndarray, y: np.ndarray, xv: np.ndarray, fit: Calibrate) -> np.ndarray:
    """`shared` predictions on `xv`, each column mapped by `fit(out-of-fold, observed)`."""
    cf, flat = cross_fitted(x, y), y.reshape(len(y), -1)
    base = fit_shared_bank(x, y).predict(xv)
    for j in range(flat.shape[1]):
        ok = np.isfinite(flat[:, j])
        base[:, j] = fit(cf[ok, j], flat[ok, j])(base[:, j])
    return base


def isotonic(x: np.ndarray, y: np.ndarray, xv: np.ndarray) -> np.ndarray:
    from sklearn.isotonic import IsotonicRegression

    return calibrated(x, y, xv, lambda c, t: IsotonicRegression(
        y_min=0, y_max=1, out_of_bounds="clip").fit(c, t).predict)


def affine(x: np.ndarray, y: np.ndarray, xv: np.ndarray) -> np.ndarray:
    def fit(c: np.ndarray, t: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        slope, icpt = np.polyfit(c, t, 1)
        return lambda v: slope * v + icpt

    return calibrated(x, y, xv, fit)


def logistic(x: np.ndarray, y: np.ndarray, xv: np.ndarray, c: float = 0.3) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    flat = y.reshape(len(y), -1)
    out = np.empty((len(xv), flat.shape[1]))
    for j in range(flat.shape[1]):
        ok = np.isfinite(flat[:, j])
        s = flat[ok, j]
        if s.min() == s.max():
            out[:, j] = s[0]
            continue
        # Soft labels as two weighted rows per query.
        xx = np.vstack([x[ok], x[ok]])
        lab = np.r_[np.ones(len(s)), np.zeros(len(s))]
        w = np.r_[s, 1 - s]
        model = LogisticRegression(C=c, max_iter=200).fit(xx[w > 0], lab[w > 0],
                                                          sample_weight=w[w > 0])
        out[:, j] = model.predict_proba(xv)[:, 1]
    return out


def knn(x: np.ndarray, y: np.ndarray, xv: np.ndarray, k: int = 25,
        weight: float = 0.3) -> np.ndarray:
    flat = y.reshape(len(y), -1)
    base = fit_shared_bank(x, y).predict(xv)
    sim = (xv / np.linalg.norm(xv, axis=1, keepdims=True)) @ (
        x / np.linalg.norm(x, axis=1, keepdims=True)).T
    near = np.argsort(-sim, axis=1)[:, :k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(flat[near], axis=1)
    return (1 - weight) * base + weight * np.where(np.isnan(mean), base, mean)


def boosted(x: np.ndarray, y: np.ndarray, xv: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingRegressor

    flat = y.reshape(len(y), -1)
    pca = PCA(32, random_state=0).fit(x)
    z, zv = pca.transform(x), pca.transform(xv)
    out = np.empty((len(xv), flat.shape[1]))
    for j in range(flat.shape[1]):
        ok = np.isfinite(flat[:, j])
        model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05, max_depth=3,
                                              min_samples_leaf=20, l2_regularization=1.0,
                                              random_state=0)
        out[:, j] = model.fit(z[ok], flat[ok, j]).predict(zv)
    return out


def ridge_times(x: np.ndarray, y: np.ndarray, factor: float) -> LinearBank:
    """Ridge heads at `factor` times each head's leave-one-out alpha."""
    bank = fit_ridge_bank(x, y)
    for j in np.flatnonzero(~np.isnan(bank.alpha_)):
        ok = ~np.isnan(y[:, j])
        one = fit_ridge_bank(x[ok], y[ok][:, [j]], alphas=(float(bank.alpha_[j]) * factor,))
        bank.coef_[j], bank.intercept_[j] = one.coef_[0], one.intercept_[0]
    return bank


def shared_times(factors: tuple[float, float, float]) -> Heads:
    def fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray) -> np.ndarray:
        n, m, p = y.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_model = np.nanmean(y, axis=2)
            overall = np.nanmean(per_model, axis=1)
        out = np.repeat(ridge_times(x, overall[:, None], factors[0]).predict(xv), m * p, axis=1)
        if m > 1:
            dev = ridge_times(x, per_model - overall[:, None], factors[1]).predict(xv)
            out += np.repeat(dev, p, axis=1)
        if p > 1:
            out += ridge_times(x, (y - per_model[:, :, None]).reshape(n, m * p),
                               factors[2]).predict(xv)
        return out
    return fit


ALTERNATIVES: dict[str, Heads] = {
    "isotonic": isotonic, "affine": affine, "logistic": logistic,
    "blend-logistic": lambda x, y, v: 0.5 * fit_shared_bank(x, y).predict(v)
    + 0.5 * logistic(x, y, v),
    "knn": knn, "boosted": boosted,
    "blend-boosted": lambda x, y, v: 0.5 * fit_shared_bank(x, y).predict(v)
    + 0.5 * boosted(x, y, v),
    "alpha-1-1-3": shared_times((1, 1, 3)), "alpha-0.3": shared_times((0.3, 0.3, 0.3)),
    "alpha-1-3-3": shared_times((1, 3, 3)),
}


def validate(path: str, policy_file: str | None, names: list[str]) -> dict[str, Any]:
    full = load_outcomes([path])
    data = full.subset(full.split_mask("train"))
    embedder = make_embedder({"kind": "local"})
    try:
        prep = prepare(data, embedder, None, progress=False)
    finally:
        embedder.close()
    fit, _ = fit_policies(data, prep, load_policy_file(policy_file) if policy_file else None)
    spec = EmbedderSpec(embedder.id, embedder.dim, embedder.normalized)
    fold_of = query_folds(data.n_queries, 5)
    mi, pj = data.arm_cells()
    m, p = data.score.shape[1:]
    scores: dict[str, list[float]] = {}
    tokens = data.token_targets()
    for k in range(5):
        fit_rows, val_rows = fold_of != k, (fold_of == k) & data.complete
        val = data.subset(val_rows)
        arms = arms_of(val)
        heads = fit_variant(VARIANTS["shared-log"], prep.embeddings[fit_rows],
                            data.score[fit_rows], tokens[fit_rows], prep.input_tokens[fit_rows])
        ckpt = make_checkpoint(heads, data, fit.policies, spec, input_scales=fit.scales)
        q, c = predict_arms(ckpt, val, prep.embeddings[val_rows], prep.input_tokens[val_rows])
        scores.setdefault("shared-log", []).append(r2_audc(q, c, arms))
        scores.setdefault("realised-cost", []).append(r2_audc(q, arms.cost, arms))
        for name in names:
            alt = ALTERNATIVES[name](prep.embeddings[fit_rows], data.score[fit_rows],
                                     prep.embeddings[val_rows])
            alt_q = np.clip(alt.reshape(-1, m, p)[:, mi, pj], 0.0, 1.0)
            scores.setdefault(name, []).append(r2_audc(alt_q, c, arms))
    return {"data": Path(path).name,
            "validation_audc": {k: round(float(np.mean(v)), 4) for k, v in scores.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--policy-file")
    parser.add_argument("--only", help="comma list of alternatives (default: all)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ALTERNATIVES)
    print(json.dumps(validate(args.data, args.policy_file, names), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
