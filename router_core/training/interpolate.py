"""Budgets between the trained ones, with heads interpolated in log-budget.

A checkpoint can only pick budgets it has heads for, and the gateway drops budgets above the
client's `max_tokens`; finer budgets let it fit under such a cap more closely. For a new
budget `b` between trained budgets `lo < b < hi`, every linear head (quality and tokens) is
`(1 - w) * head(lo) + w * head(hi)` with `w = log(b/lo) / log(hi/lo)`: still one linear head,
so nothing changes on the request path. Extrapolation beyond the trained range is refused, and
so are MLP heads (a blend of two MLPs is not an MLP of the same shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..policies import Policy, budget_policy
from .errors import DataError
from .variants import FittedHeads

LINEAR_ARRAYS = ("quality_coef", "quality_intercept", "tokens_coef", "tokens_intercept")


def interpolate_budgets(heads: FittedHeads, policies: Sequence[Policy], budgets: Sequence[int],
                        instruction: str) -> tuple[FittedHeads, tuple[Policy, ...]]:
    """`heads` and `policies` with `budgets` added, numeric budgets kept in ascending order."""
    if heads.kind != "linear":
        raise DataError("budget interpolation needs linear heads", field="interpolate_budgets")
    trained = sorted((p.budget, j) for j, p in enumerate(policies) if p.budget is not None)
    known = {b for b, _ in trained}
    new = sorted({int(b) for b in budgets} - known)
    # A column is (lo index, hi index, weight); a trained policy j is (j, j, 0.0).
    added: list[tuple[int, tuple[int, int, float]]] = []
    for b in new:
        below = [(lb, j) for lb, j in trained if lb < b]
        above = [(hb, j) for hb, j in trained if hb > b]
        if b <= 0 or not below or not above:
            raise DataError(f"budget {b} is not between two trained budgets "
                            f"({', '.join(str(x) for x, _ in trained) or 'none'})",
                            field="interpolate_budgets")
        (lb, lj), (hb, hj) = below[-1], above[0]
        added.append((b, (lj, hj, float(np.log(b / lb) / np.log(hb / lb)))))
    if not added:
        return heads, tuple(policies)
    budget_cols = sorted([(p.budget, (j, j, 0.0)) for j, p in enumerate(policies)
                          if p.budget is not None] + added)
    other = [(j, p) for j, p in enumerate(policies) if p.budget is None]
    order = [c for _, c in budget_cols] + [(j, j, 0.0) for j, _ in other]
    lo = np.array([c[0] for c in order])
    hi = np.array([c[1] for c in order])
    w = np.array([c[2] for c in order])
    arrays = dict(heads.arrays)
    for key in (*LINEAR_ARRAYS, "quality_feat_coef", "tokens_feat_coef"):
        if key not in heads.arrays:
            continue
        arr = heads.arrays[key].astype(np.float64)
        shape = (1, len(order)) + (1,) * (arr.ndim - 2)
        blend = (1 - w.reshape(shape)) * arr[:, lo] + w.reshape(shape) * arr[:, hi]
        arrays[key] = blend.astype(np.float32)
    if "arm_observed" in arrays:  # an interpolated arm has data only if both neighbours do
        obs = heads.arrays["arm_observed"]
        arrays["arm_observed"] = np.minimum(obs[:, lo], obs[:, hi]).astype(np.float32)
    by_budget = {p.budget: p for p in policies if p.budget is not None}
    # New budgets are served like the trained ones (same instruction, placement, cap rule).
    like = next(iter(by_budget.values()), None)
    new_policies = [by_budget.get(b) or (
        replace(budget_policy(b, cost_tokens=like.cost_tokens, protocol=like.protocol),
                input_overhead_tokens=like.input_overhead_tokens) if like is not None
        else budget_policy(b, instruction, cost_tokens="predicted")) for b, _ in budget_cols]
    info = dict(heads.info, interpolated_budgets=[b for b, _ in added])
    result = FittedHeads(heads.kind, dict(heads.options), arrays, info)
    return result, (*new_policies, *(p for _, p in other))
