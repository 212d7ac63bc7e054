"""Head variants: how quality and output-token heads are fitted, as checkpoint arrays.

| variant | quality heads | token heads |
| --- | --- | --- |
| `ridge` | one Ridge per (model, policy), alpha by leave-one-out CV | Ridge on tokens |
| `ridge-log` | as `ridge` | Ridge on log1p(tokens) |
| `shared` | hierarchical Ridge: all-arm mean + model + arm deviations (see `ridge`) | Ridge |
| `shared-log` | as `shared` | Ridge on log1p(tokens) |
| `shared-monotone` | `shared`, made non-decreasing in the numeric budget when scoring | Ridge |
| `shared-len` | `shared` on embedding ++ log input length (`features.py`) | Ridge, same inputs |
| `shared-log-len` | as `shared-len` | Ridge on log1p(tokens), same inputs |
| `mlp` | MLP 256-128-64, sigmoid output | MLP on log1p(tokens) |

Every variant caps predicted tokens at the policy's `max_tokens` (the budget) when scoring.
`shared-monotone` is only offered when the data has two or more numeric budgets and the train
data does not show quality falling as the budget grows (a one-sided paired test per model and
pair of neighbouring budgets): "monotone unless the data says otherwise".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..features import input_features
from .mlp import MLPConfig, fit_mlp_bank
from .ridge import LinearBank, Solvers, fit_ridge_bank, fit_shared_bank

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Variant:
    name: str
    quality: str = "ridge"  # "ridge" | "shared" | "mlp"
    tokens_space: str = "linear"  # "linear" | "log1p"
    monotone: bool = False
    mlp: MLPConfig = field(default_factory=MLPConfig)
    #: Request features (`router_core/features.py`) the linear heads read next to the embedding.
    features: tuple[str, ...] = ()


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("ridge"),
    Variant("ridge-log", tokens_space="log1p"),
    Variant("shared", quality="shared"),
    Variant("shared-log", quality="shared", tokens_space="log1p"),
    Variant("shared-monotone", quality="shared", monotone=True),
    Variant("shared-len", quality="shared", features=("log_input_tokens",)),
    Variant("shared-log-len", quality="shared", tokens_space="log1p",
            features=("log_input_tokens",)),
    Variant("mlp", quality="mlp", tokens_space="log1p"),
)}
#: Variants compared by `r2 train --variant auto` (the MLP only when asked: it is slow on CPU).
AUTO_VARIANTS = ("ridge", "ridge-log", "shared", "shared-log", "shared-monotone", "shared-len",
                 "shared-log-len")


@dataclass
class FittedHeads:
    """What a checkpoint needs from a fit: head kind, options and arrays."""

    kind: str
    options: dict[str, Any]
    arrays: dict[str, F32]
    info: dict[str, Any] = field(default_factory=dict)


def applicable(variant: Variant, policies: Sequence[int | str], score: F64) -> bool:
    """Whether `variant` makes sense for these policies and train scores `[N, M, P]`."""
    if not variant.monotone:
        return True
    budgets = [(b, j) for j, b in enumerate(policies) if isinstance(b, int)]
    return len(budgets) >= 2 and not quality_falls(score, [j for _, j in sorted(budgets)])


def quality_falls(score: F64, order: Sequence[int], z: float = 2.33) -> bool:
    """True if some model's quality drops significantly from one budget to the next
    (paired one-sided z-test at about 1%, over queries with both outcomes)."""
    for i in range(score.shape[1]):
        for lo, hi in zip(order[:-1], order[1:], strict=True):
            diff = score[:, i, hi] - score[:, i, lo]
            diff = diff[~np.isnan(diff)]
            if diff.size < 2:
                continue
            se = float(np.std(diff, ddof=1)) / np.sqrt(diff.size)
            if se > 0 and float(np.mean(diff)) / se < -z:
                return True
    return False


def fit_variant(variant: Variant, x: F64, score: F64, tokens: F64,
                input_tokens: F64 | None = None) -> FittedHeads:
    """Fit quality and token heads for every arm on `x` `[N, D]`, `score`/`tokens` `[N, M, P]`
    (and `input_tokens` `[N]`, which variants with request features read)."""
    from threadpoolctl import threadpool_limits

    # These matrices are small: one BLAS thread is as fast unloaded and far faster on a busy
    # machine, where OpenBLAS threads spin against each other.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(variant, x, score, tokens, input_tokens)


def _fit(variant: Variant, x: F64, score: F64, tokens: F64,
         input_tokens: F64 | None) -> FittedHeads:
    d = x.shape[1]
    if variant.features:
        if input_tokens is None:
            raise ValueError(f"variant {variant.name} needs the input tokens")
        x = np.hstack([x, input_features(variant.features, input_tokens)])
    heads = _fit_heads(variant, x, score, tokens)
    if variant.features:  # split the feature weights off: the embedding heads keep their shape
        heads.options["features"] = list(variant.features)
        for target in ("quality", "tokens"):
            coef = heads.arrays[f"{target}_coef"]
            heads.arrays[f"{target}_coef"] = np.ascontiguousarray(coef[:, :, :d])
            heads.arrays[f"{target}_feat_coef"] = np.ascontiguousarray(coef[:, :, d:])
    observed = np.asarray(~np.isnan(score).all(axis=0))
    if not observed.all():  # sparse data: the scorer never offers an arm without data
        heads.arrays["arm_observed"] = np.asarray(observed, dtype=np.float32)
    return heads


def _fit_heads(variant: Variant, x: F64, score: F64, tokens: F64) -> FittedHeads:
    n, m, p = score.shape
    options: dict[str, Any] = {"quality_link": "clip", "tokens_space": variant.tokens_space,
                               "monotone_quality": variant.monotone}
    tok = np.log1p(tokens) if variant.tokens_space == "log1p" else tokens
    if variant.quality == "mlp":
        cfg = variant.mlp
        q = fit_mlp_bank(x, score.reshape(n, m * p), "bce", cfg)
        t = fit_mlp_bank(x, tok.reshape(n, m * p), "mse", cfg)
        arrays = {f"quality_{k}": v for k, v in q.items()}
        arrays.update({f"tokens_{k}": v for k, v in t.items()})
        options.update(quality_link="sigmoid", tokens_space="log1p", hidden=list(cfg.hidden))
        return FittedHeads("mlp", options, arrays)
    solvers: Solvers = {}
    qbank = (fit_shared_bank(x, score, solvers=solvers) if variant.quality == "shared"
             else fit_ridge_bank(x, score.reshape(n, m * p), solvers=solvers))
    tbank = fit_ridge_bank(x, tok.reshape(n, m * p), solvers=solvers)
    arrays = _linear_arrays(qbank, "quality", m, p) | _linear_arrays(tbank, "tokens", m, p)
    info = {"quality_alpha": _alphas(qbank), "tokens_alpha": _alphas(tbank)}
    return FittedHeads("linear", options, arrays, info)


def _linear_arrays(bank: LinearBank, target: str, m: int, p: int) -> dict[str, F32]:
    d = bank.coef_.shape[1]
    return {f"{target}_coef": bank.coef_.reshape(m, p, d).astype(np.float32),
            f"{target}_intercept": bank.intercept_.reshape(m, p).astype(np.float32)}


def _alphas(bank: LinearBank) -> list[float | None]:
    return [None if np.isnan(a) else float(a) for a in bank.alpha_]
