"""`r2 eval`: every router of a checkpoint on the test split of outcome data, judged fairly.

Outcome data has holes, so each router is judged only on the queries where every arm it can
choose was observed: r2, oracle, random and best-single need every arm, the point router of a
policy only that policy's arms. The routers are *compared* on the common set (queries with every
arm, the main table); the point router of every policy is also reported on its own set
(`point_by_policy`), with the number of queries each router was judged on. Arms of the data that
the checkpoint cannot choose, and arms without a test outcome, are left out and named.

Without `--point-policy` the point router's policy is the one with the best validation AUDC on
the train split, recorded by `r2 train` in the checkpoint; a checkpoint without that record
(imported, or trained before it existed) falls back to the best mean train quality, and the
report says which rule chose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..checkpoint import Checkpoint
from ..embedders import Embedder
from ..tradeoff import tradeoff_points
from .coverage import coverage_table, sparsest_arms
from .dataset import OutcomeData, load_outcomes
from .errors import DataError
from .evaluate import (
    Arms,
    EvalReport,
    choices,
    evaluate_predictions,
    lambda_grid,
    realised,
    summarise,
)
from .input_tokens import conversation_tokens, with_extra_input
from .trainer import (
    INPUT_TOKENS,
    arms_of,
    checkpoint_arms,
    policy_masks,
    predict_arms,
    prepare,
)

BoolArray = npt.NDArray[np.bool_]
Log = Callable[[str], None]


def default_point_policy(data: OutcomeData) -> int | str:
    """The fallback point policy: best mean train quality over the models."""
    train = data.split_mask("train")
    rows = data.score[train] if train.any() else data.score
    with np.errstate(all="ignore"):
        means = np.nanmean(rows, axis=(0, 1))
    return data.policies[int(np.nanargmax(means))]


def choose_point_policy(ckpt: Checkpoint, data: OutcomeData,
                        point_policy: str | None) -> tuple[int | str, str]:
    """The point router's policy and the rule that chose it."""
    labels = [str(p) for p in data.policies]
    if point_policy is not None:
        if str(point_policy) not in labels:
            raise DataError(f"--point-policy {point_policy!r} is not a policy of the data",
                            field="point_policy", fix=f"choose from {', '.join(labels)}")
        return data.policies[labels.index(str(point_policy))], "--point-policy"
    table = ckpt.provenance.get("point_validation_audc") or {}
    known = [p for p in labels if isinstance(table.get(p), dict) and "mean" in table[p]]
    if known:
        best = max(known, key=lambda p: float(table[p]["mean"]))
        return data.policies[labels.index(best)], "validation AUDC on the train split"
    return default_point_policy(data), ("best mean train quality (the checkpoint has no "
                                        "validation record of the point router)")


def restrict_to_checkpoint(data: OutcomeData, ckpt: Checkpoint, log: Log) -> OutcomeData:
    """`data` without the arms the checkpoint cannot choose (named in a warning)."""
    have = checkpoint_arms(ckpt)
    mi, pj = data.arm_cells()
    drop = np.zeros(data.present.shape, dtype=bool)
    names = []
    for i, j in zip(mi, pj, strict=True):
        if (data.models[i], str(data.policies[j])) not in have:
            drop[i, j] = True
            names.append(f"{data.models[i]}@{data.policies[j]}")
    if not names:
        return data
    log(f"warning: {len(names)} arm(s) of the data have no head in the checkpoint and are not "
        f"judged: {', '.join(names)}")
    out = data.without_arms(drop)
    if not out.models:
        raise DataError("the checkpoint has a head for none of the data's arms",
                        file=", ".join(data.sources), field="model",
                        fix="evaluate on data of the checkpoint's models and policies")
    return out


def evaluate(paths: Sequence[str | Path], ckpt: Checkpoint, embedder: Embedder,
             point_policy: str | None = None, cache_dir: str | Path | None = None,
             split: str = "test", progress: bool = True, models: Sequence[str] | None = None,
             policies: Sequence[str] | None = None, log: Log | None = None,
             system_prompt: str | None = None, composition: str | None = None,
             bill_system_prompt: bool = True) -> EvalReport:
    """Every router on the `split` queries, compared on the queries with every arm.

    With `system_prompt`, every query is evaluated as if it came after that system prompt
    (routed on the gateway's routing text of the two turns); its input tokens are billed in
    predicted and realised cost unless `bill_system_prompt` is false."""
    say: Log = log or (lambda _: None)
    everything = load_outcomes(paths, models, policies)
    say(coverage_table(everything))
    everything = restrict_to_checkpoint(everything, ckpt, say)
    in_split = everything.split_mask(split)
    if not in_split.any():
        raise DataError(f"no {split} rows", file=", ".join(everything.sources), field="split",
                        fix=f"mark held-out queries '{split}'")
    data = everything.subset(in_split)
    unjudged = [f"{m}@{p}" for i, m in enumerate(everything.models)
                for j, p in enumerate(everything.policies)
                if everything.present[i, j] and not data.present[i, j]]
    if unjudged:
        say(f"warning: arm(s) without a {split} outcome are not judged: {', '.join(unjudged)}")
    point, chosen_by = choose_point_policy(ckpt, everything, point_policy)
    if point not in data.policies:
        raise DataError(f"the point policy {point!r} has no {split} outcome", field="point_policy",
                        fix="pass --point-policy with a policy the split has")
    obs = data.observed
    own = {str(p): np.asarray(obs[:, :, j][:, data.present[:, j]].all(axis=1), dtype=bool)
           for j, p in enumerate(data.policies) if data.present[:, j].any()}
    common: BoolArray = np.asarray(data.complete, dtype=bool)
    if not common.any():
        raise DataError(f"no {split} query has an outcome for every arm; the sparsest: "
                        f"{sparsest_arms(data)}", field="split",
                        fix="leave sparse arms out with --models/--policies")
    needed = common | np.any(np.stack(list(own.values())), axis=0)
    prep = prepare(data.subset(needed), embedder, cache_dir, progress, system_prompt, composition)
    if system_prompt and not bill_system_prompt:
        # Isolate the routing text: costs as if the system prompt were free.
        prep.input_tokens = conversation_tokens(prep.data.prompts, None, INPUT_TOKENS)
    elif system_prompt:
        # The system prompt is billed too: realised costs include its input tokens.
        prep.data = with_extra_input(prep.data, prep.input_tokens - conversation_tokens(
            prep.data.prompts, None, INPUT_TOKENS))
    q, c = predict_arms(ckpt, prep.data, prep.embeddings, prep.input_tokens)
    arms = arms_of(prep.data)
    in_common = common[needed]
    masks = policy_masks(prep.data)
    report = evaluate_predictions(q[in_common], c[in_common], _rows(arms, in_common),
                                  np.flatnonzero(masks[str(point)]).tolist())
    by_policy = _point_by_policy(q, c, arms, masks, in_common, {p: v[needed]
                                                                for p, v in own.items()})
    judged = {name: int(common.sum()) for name in report.routers}
    judged["point"] = by_policy[str(point)]["own"]["queries"]
    r2 = report.routers["r2"].curve
    lam = ckpt.default_lambda
    at = int(np.argmin(np.abs(np.asarray(r2.lambdas) - lam)))
    report.info = {
        "split": split, "queries": int(common.sum()), "common_queries": int(common.sum()),
        "system_prompt_chars": len(system_prompt or ""), "routing_text": composition,
        "system_prompt_billed": bool(system_prompt) and bill_system_prompt,
        "judged_queries": judged,
        "queries_missing_arms": int((~common).sum()),
        "rows_without_score": everything.unscored_rows, "point_policy": point,
        "point_policy_chosen_by": chosen_by, "point_by_policy": by_policy,
        "arms_not_judged": unjudged,
        "checkpoint": str(ckpt.path) if ckpt.path else ckpt.name,
        "embedder": embedder.id, "variant": ckpt.provenance.get("variant"),
        "default_lambda": {"lambda": lam, "cost": float(r2.cost[at]),
                           "quality": float(r2.quality[at])},
    }
    if ckpt.tradeoff is not None:
        report.info["tradeoff_points"] = tradeoff_points(
            ckpt.tradeoff, q[in_common], c[in_common], report.arms.quality, report.arms.cost)
    return report


def _rows(arms: Arms, rows: BoolArray) -> Arms:
    return Arms(arms.labels, arms.quality[rows], arms.cost[rows])


def _metrics(result: Any) -> dict[str, float | None]:
    return {k: (v if np.isfinite(v) else None) for k, v in result.metrics().items()}


def _point_by_policy(q: Any, c: Any, arms: Arms, masks: dict[str, BoolArray],
                     common: BoolArray, own: dict[str, BoolArray]) -> dict[str, Any]:
    """The point router of every policy: on the common set, and on its own set (queries with
    that policy's arms), both on the common set's cost range and best-arm target."""
    base = _rows(arms, common)
    lambdas = lambda_grid(float(base.mean_cost.min()), float(base.mean_cost.max()))
    out: dict[str, Any] = {}
    for label, mask in masks.items():
        entry: dict[str, Any] = {}
        for key, rows in (("common", common), ("own", own[label])):
            sub = _rows(arms, rows)
            curve = realised(choices(q[rows], c[rows], lambdas, mask), sub)
            result, _, _ = summarise({"point": curve}, base)
            entry[key] = {**_metrics(result["point"]), "queries": int(rows.sum())}
        out[label] = {**{k: v for k, v in entry["common"].items() if k != "queries"},
                      "own": entry["own"]}
    return out

