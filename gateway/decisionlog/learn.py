"""Learning from the log: `r2 train --from-log DB` and `r2 calibrate --from-log DB`.

Refit. Each feedback-scored record is an outcome row for the arm actually served: its
embedding (the float16 the gateway logged), the feedback score, the output tokens from usage.
Bandit data has one arm per query, far from the full grid `r2 train` fits on, so the refit
corrects a base checkpoint's linear heads instead of replacing them: per arm, a ridge
regression of the residual (score minus the base's predicted quality; log1p or raw tokens
minus the base's token prediction) on `[embedding, 1]`, weighted by the inverse propensity of
the served arm (clipped at `MAX_WEIGHT`), intercept penalised too so an arm with little
feedback stays near the base. Arms without feedback keep their base heads. The ridge strength
is chosen by IPS-weighted error on a validation part of the log (records hashed by id, 20%),
then the heads are refitted on all of it.

Validation AUDC. On the same held-out records, the base and refitted routers are compared by
an off-policy estimate: for each lambda, a record counts where the router would pick the arm
that was served, weighted by 1/propensity (self-normalised); quality is the mean feedback and
cost the mean realised cost of those records. The curve's AUDC (over the realised cost range)
is reported for both, with the number of records that match. With little exploration the
estimate rests on few records: it is printed with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router_core import Checkpoint, InvalidInputError, Scorer
from router_core.router import policy_input_tokens

from .record import decode_embedding
from .store import SQLStore

F64 = npt.NDArray[np.float64]
Log = Callable[[str], None]
#: Inverse-propensity weights are clipped here (a propensity below 1% counts as 1%).
MAX_WEIGHT = 100.0
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
VALIDATION_SHARE = 0.2

_SCORED = """
SELECT request_id, embedding, model, policy, feedback_score, propensity, input_tokens,
       completion_tokens, COALESCE(cost_usd, predicted_cost_usd), lambda
FROM decisions
WHERE feedback_score IS NOT NULL AND embedding_kind = 'float16' AND fallback IS NULL
  AND status < 400 AND ts >= ?
"""
_QUERIES = """
SELECT embedding, input_tokens FROM decisions
WHERE embedding_kind = 'float16' AND input_tokens IS NOT NULL AND ts >= ?
"""


@dataclass
class LogRows:
    """Feedback-scored records as arrays (`arm` indexes the checkpoint's `[M*P]` arms)."""

    ids: list[str]
    x: F64
    arm: npt.NDArray[np.intp]
    score: F64
    weight: F64
    input_tokens: F64
    tokens: F64
    cost: F64
    lambdas: F64

    def subset(self, mask: npt.NDArray[np.bool_]) -> LogRows:
        idx = np.flatnonzero(mask)
        return LogRows([self.ids[i] for i in idx], self.x[idx], self.arm[idx], self.score[idx],
                       self.weight[idx], self.input_tokens[idx], self.tokens[idx],
                       self.cost[idx], self.lambdas[idx])


def read_scored(store: SQLStore, ckpt: Checkpoint, since: float | None = None) -> LogRows:
    models = {m: i for i, m in enumerate(ckpt.model_names)}
    labels = {str(p.label): j for j, p in enumerate(ckpt.policies)}
    p = len(ckpt.policies)
    ids, xs, arms, scores, weights, tin, tout, costs, lams = [], [], [], [], [], [], [], [], []
    skipped = 0
    for rid, emb, model, policy, score, prop, n_in, n_out, cost, lam in store.query(
            _SCORED, (-1e300 if since is None else since,)):
        x = decode_embedding(emb)
        if x.shape[0] != ckpt.embedder.dim or model not in models or policy not in labels:
            skipped += 1
            continue
        ids.append(rid)
        xs.append(x)
        arms.append(models[model] * p + labels[policy])
        scores.append(float(score))
        weights.append(min(1.0 / max(float(prop or 1.0), 1e-12), MAX_WEIGHT))
        tin.append(float(n_in or 0))
        tout.append(np.nan if n_out is None else float(n_out))
        costs.append(float(cost or 0.0))
        lams.append(float(lam or 0.0))
    if not ids:
        raise InvalidInputError(
            f"the log has no feedback-scored records this checkpoint can learn from ({skipped} "
            "skipped: another embedder, model or policy); send feedback with POST /v1/feedback "
            "and keep log.embedding: float16", param="from_log")
    return LogRows(ids, np.vstack(xs), np.asarray(arms, dtype=np.intp), np.asarray(scores),
                   np.asarray(weights), np.asarray(tin), np.asarray(tout), np.asarray(costs),
                   np.asarray(lams))


def read_queries(store: SQLStore, dim: int, since: float | None = None) -> tuple[F64, F64]:
    """Embeddings and input tokens of every logged request (for `r2 calibrate --from-log`)."""
    xs, tokens = [], []
    for emb, n_in in store.query(_QUERIES, (-1e300 if since is None else since,)):
        x = decode_embedding(emb)
        if x.shape[0] == dim:
            xs.append(x)
            tokens.append(float(n_in))
    if not xs:
        raise InvalidInputError(f"the log has no {dim}-d float16 embeddings to calibrate on",
                                param="from_log")
    return np.vstack(xs), np.asarray(tokens)


def validation_mask(ids: list[str], share: float = VALIDATION_SHARE) -> npt.NDArray[np.bool_]:
    """Deterministic by request id: the same record is always on the same side."""
    cut = int(share * 2**32)
    return np.array([int.from_bytes(hashlib.sha256(i.encode()).digest()[:4], "big") < cut
                     for i in ids], dtype=bool)


def _weighted_ridge(x: F64, r: F64, w: F64, alpha: float) -> F64:
    """`beta` minimising `sum w (r - x beta)^2 + alpha |beta|^2` (dual form: n x n)."""
    s = np.sqrt(w)[:, None]
    xt, rt = x * s, r * s[:, 0]
    gram = xt @ xt.T
    return np.asarray(xt.T @ np.linalg.solve(gram + alpha * np.eye(len(r)), rt))


def _design(x: F64) -> F64:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def _residual_heads(x: F64, arm: npt.NDArray[np.intp], target: F64, base: F64, w: F64,
                    alpha: float, arms: int) -> F64:
    """`[arms, D+1]` corrections (embedding weights and intercept) per arm."""
    out = np.zeros((arms, x.shape[1] + 1))
    ok = ~np.isnan(target)
    for a in np.unique(arm[ok]):
        rows = (arm == a) & ok
        out[a] = _weighted_ridge(_design(x[rows]), target[rows] - base[rows], w[rows], alpha)
    return out


def _raw_heads(scorer: Scorer, x: F64) -> tuple[F64, F64]:
    """The base's raw head outputs `[N, M*P]` (before clipping) for quality and tokens."""
    scores_q, scores_t = scorer._raw(x)  # noqa: SLF001 - the linear heads' raw outputs
    n = x.shape[0]
    return scores_q.reshape(n, -1), scores_t.reshape(n, -1)


def _ips_error(rows: LogRows, delta: F64, base: F64) -> float:
    """IPS-weighted squared error of the corrected quality heads on the records' scores."""
    ok = ~np.isnan(rows.score)
    pred = base + np.einsum("nd,nd->n", _design(rows.x), delta[rows.arm])
    err = (rows.score - pred) ** 2
    return float(np.sum(rows.weight[ok] * err[ok]) / max(np.sum(rows.weight[ok]), 1e-12))


@dataclass
class Refit:
    checkpoint: Checkpoint
    alpha: float
    rows: int
    arms: int
    validation: dict[str, Any]


def refit(base: Checkpoint, rows: LogRows, log: Log = print) -> Refit:
    if base.head_kind != "linear" or base.head_options.get("features"):
        raise InvalidInputError("--from-log refits linear heads on the embedding alone; this "
                                "checkpoint's heads are not", param="checkpoint")
    scorer = Scorer(base, policy_input_tokens(base, base.input_tokens))
    m, p = scorer.shape
    q_raw, t_raw = _raw_heads(scorer, rows.x)
    idx = np.arange(len(rows.ids))
    base_q, base_t = q_raw[idx, rows.arm], t_raw[idx, rows.arm]
    log_tokens = scorer.tokens_space == "log1p"
    tok_target = np.log1p(rows.tokens) if log_tokens else rows.tokens
    val = validation_mask(rows.ids)
    if val.all() or not val.any():
        val = np.zeros(len(rows.ids), dtype=bool)
    fit = ~val
    alpha = ALPHAS[len(ALPHAS) // 2]
    held = rows.subset(val)
    if val.any():
        errs = []
        for a in ALPHAS:
            dq = _residual_heads(rows.x[fit], rows.arm[fit], rows.score[fit], base_q[fit],
                                 rows.weight[fit], a, m * p)
            errs.append(_ips_error(held, dq, base_q[val]))
        alpha = ALPHAS[int(np.argmin(errs))]
        zero = np.zeros((m * p, rows.x.shape[1] + 1))
        before = _ips_error(held, zero, base_q[val])
        log(f"ridge strength by IPS-weighted validation error on {int(val.sum())} held-out "
            f"records: alpha {alpha:g} (error {min(errs):.4f}; base heads {before:.4f})")
    dq = _residual_heads(rows.x, rows.arm, rows.score, base_q, rows.weight, alpha, m * p)
    dt = _residual_heads(rows.x, rows.arm, tok_target, base_t, rows.weight, alpha, m * p)
    arrays = dict(base.arrays)
    d = base.embedder.dim
    for key, delta in (("quality", dq), ("tokens", dt)):
        coef = arrays[f"{key}_coef"].astype(np.float64) + delta[:, :d].reshape(m, p, d)
        icpt = arrays[f"{key}_intercept"].astype(np.float64) + delta[:, d].reshape(m, p)
        arrays[f"{key}_coef"] = coef.astype(np.float32)
        arrays[f"{key}_intercept"] = icpt.astype(np.float32)
    served = np.unique(rows.arm)
    provenance = {**base.provenance, "refit_from_log": {
        "records": len(rows.ids), "arms": len(served), "alpha": alpha,
        "weighting": f"inverse propensity, clipped at {MAX_WEIGHT:g}",
        "validation_share": VALIDATION_SHARE}}
    new = dataclasses.replace(base, arrays=arrays, provenance=provenance)
    report = compare(base, new, held) if val.any() else {}
    return Refit(new, alpha, len(rows.ids), len(served), report)


def _predicted(scorer: Scorer, rows: LogRows) -> tuple[F64, F64]:
    """Predicted quality and cost `[N, M*P]` of every arm for the records."""
    scores = scorer.predict(rows.x, rows.input_tokens)
    n = rows.x.shape[0]
    return scores.quality.reshape(n, -1), scores.cost.reshape(n, -1)


def _ips_curve(q: F64, c: F64, rows: LogRows, lambdas: F64) -> tuple[F64, F64, list[int]]:
    costs, quals, matched = [], [], []
    for lam in lambdas:
        pick = np.argmax((1.0 - lam) * q - lam * c, axis=1)
        hit = pick == rows.arm
        w = rows.weight * hit
        if w.sum() <= 0:
            costs.append(np.nan)
            quals.append(np.nan)
        else:
            costs.append(float(np.sum(w * rows.cost) / w.sum()))
            quals.append(float(np.sum(w * rows.score) / w.sum()))
        matched.append(int(hit.sum()))
    return np.asarray(costs), np.asarray(quals), matched


def _at_logged_lambda(q: F64, c: F64, rows: LogRows) -> dict[str, Any]:
    """IPS estimate of mean feedback if the router had decided each held-out request at the
    lambda it was served with (the policy's value on this traffic)."""
    lam = rows.lambdas[:, None]
    hit = np.argmax((1.0 - lam) * q - lam * c, axis=1) == rows.arm
    w = rows.weight * hit
    value = float(np.sum(w * rows.score) / w.sum()) if w.sum() > 0 else float("nan")
    return {"value_at_logged_lambda": value, "matched_at_logged_lambda": int(hit.sum())}


def compare(base: Checkpoint, new: Checkpoint, rows: LogRows) -> dict[str, Any]:
    """Off-policy (self-normalised IPS) validation AUDC of `base` and `new` on `rows`."""
    from router_core.training import audc, lambda_grid

    lo, hi = float(np.min(rows.cost)), float(np.max(rows.cost))
    lambdas = lambda_grid(max(lo, 1e-9), max(hi, 1e-9), 120)
    out: dict[str, Any] = {"records": len(rows.ids)}
    for name, ckpt in (("base", base), ("refit", new)):
        q, c = _predicted(Scorer(ckpt, policy_input_tokens(ckpt, ckpt.input_tokens)), rows)
        cost, qual, matched = _ips_curve(q, c, rows, lambdas)
        ok = ~np.isnan(cost)
        value = audc(cost[ok], qual[ok], lo, hi) if ok.any() and hi > lo else (
            float(np.nanmax(qual)) if ok.any() else float("nan"))
        out[name] = {"audc": value, "matched_records_mean": float(np.mean(matched)),
                     **_at_logged_lambda(q, c, rows)}
    out["change"] = out["refit"]["audc"] - out["base"]["audc"]
    return out
