"""Which arms outcome data covers, and which are too sparse to fit a head on.

Real outcome data is never a full model x policy grid: models are added and retired, some
(model, policy) cells were never run, a provider failed for a week. `coverage_table` prints the
scored rows per model x policy and split (before anything expensive runs); `drop_sparse_arms`
removes the arms with fewer than `min_rows` train rows (default `DEFAULT_MIN_ARM_ROWS`), with a
warning table naming them, or refuses with `strict`. A head fitted on a handful of rows is
noise the router would act on; a dropped arm is simply not offered by the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .dataset import OutcomeData
from .errors import DataError

#: Train rows an arm needs for a head of its own (`--min-arm-rows`): below ~20 rows the
#: leave-one-out alpha of a 384-d Ridge is itself noise.
DEFAULT_MIN_ARM_ROWS = 20


@dataclass(frozen=True)
class SparseArm:
    model: str
    policy: int | str
    train_rows: int
    test_rows: int


def counts(data: OutcomeData, split: str) -> np.ndarray:
    """Scored rows `[M, P]` of `split`."""
    return np.asarray(data.observed[data.split_mask(split)].sum(axis=0), dtype=np.int64)


def coverage_table(data: OutcomeData) -> str:
    """Scored rows per model x policy as `train / test`; `-` where the arm has no row."""
    train, test = counts(data, "train"), counts(data, "test")
    labels = [str(p) for p in data.policies]
    cells = [[("-" if train[i, j] + test[i, j] == 0 else f"{train[i, j]} / {test[i, j]}")
              for j in range(len(labels))] for i in range(len(data.models))]
    first = max([len("model"), *(len(m) for m in data.models)])
    widths = [max(len(label), *(len(row[j]) for row in cells)) for j, label in
              enumerate(labels)]
    lines = ["coverage (scored rows, train / test):",
             "  " + "model".ljust(first) + "".join(f"  {lab:>{w}}" for lab, w in
                                                   zip(labels, widths, strict=True))]
    for model, row in zip(data.models, cells, strict=True):
        lines.append("  " + model.ljust(first)
                     + "".join(f"  {c:>{w}}" for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def sparse_arms(data: OutcomeData, min_rows: int) -> list[SparseArm]:
    """Arms with some rows but fewer than `min_rows` of them in the train split."""
    train, test = counts(data, "train"), counts(data, "test")
    return [SparseArm(data.models[i], data.policies[j], int(train[i, j]), int(test[i, j]))
            for i in range(len(data.models)) for j in range(len(data.policies))
            if 0 < train[i, j] + test[i, j] and train[i, j] < min_rows]


def sparse_table(arms: list[SparseArm]) -> str:
    width = max(len("model"), *(len(a.model) for a in arms))
    pwidth = max(len("policy"), *(len(str(a.policy)) for a in arms))
    lines = [f"  {'model':<{width}}  {'policy':<{pwidth}}  train rows  test rows"]
    lines += [f"  {a.model:<{width}}  {str(a.policy):<{pwidth}}  {a.train_rows:>10}  "
              f"{a.test_rows:>9}" for a in arms]
    return "\n".join(lines)


def drop_sparse_arms(data: OutcomeData, min_rows: int, strict: bool = False,
                     log: Callable[[str], None] = print) -> OutcomeData:
    """`data` without the arms that have fewer than `min_rows` train rows.

    Logs a warning table naming them, or raises `DataError` when `strict`.
    """
    if min_rows < 1:
        raise DataError("--min-arm-rows must be at least 1", field="min_arm_rows",
                        fix="pass a positive number of train rows")
    sparse = sparse_arms(data, min_rows)
    if not sparse:
        return data
    head = f"{len(sparse)} arm(s) have fewer than {min_rows} train rows (--min-arm-rows)"
    if strict:
        named = ", ".join(f"{a.model}@{a.policy} ({a.train_rows} train rows)" for a in sparse)
        raise DataError(f"{head}: {named}", file=", ".join(data.sources),
                        field="model", fix="collect more rows for them, lower --min-arm-rows, "
                        "restrict with --models/--policies, or drop --strict to leave them out")
    log(f"warning: {head}; left out of the checkpoint:\n{sparse_table(sparse)}")
    drop = np.zeros((len(data.models), len(data.policies)), dtype=bool)
    mi = {m: i for i, m in enumerate(data.models)}
    pj = {p: j for j, p in enumerate(data.policies)}
    for arm in sparse:
        drop[mi[arm.model], pj[arm.policy]] = True
    out = data.without_arms(drop)
    if not out.models:
        raise DataError(f"no arm has {min_rows} train rows", file=", ".join(data.sources),
                        field="split", fix="lower --min-arm-rows or add train rows")
    return out


def sparsest_arms(data: OutcomeData, count: int = 3) -> str:
    """The `count` present arms with the fewest outcomes, as `model@policy (N queries)`."""
    rows = data.observed.sum(axis=0)
    mi, pj = data.arm_cells()
    order = np.argsort(rows[mi, pj], kind="stable")[:count]
    return ", ".join(f"{data.models[mi[k]]}@{data.policies[pj[k]]} ({rows[mi[k], pj[k]]} "
                     "queries)" for k in order)
