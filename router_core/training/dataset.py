"""Outcome data as arrays: one `[query, model, policy]` cell per recorded answer.

`load_outcomes` reads one or more outcome files (see `readers`), validates every row and
returns an `OutcomeData` whose arrays hold NaN where a query lacks an arm. Rules:

- a missing field, a value of the wrong type, a score outside [0, 1], negative tokens, an
  unknown split, a query whose prompt or split differs between rows, a duplicate
  (query_id, model, policy) and a model with neither a list price nor a `cost_usd` are errors
  naming the file, the row and the field;
- a present but null/NaN `score` means the source recorded no outcome for that arm (RouterBench
  does this): the row is counted in `unscored_rows` and the query lacks that arm;
- arms may be sparse: a (model, policy) cell with no row is NaN for that query; a model need
  not have every policy (see `coverage.py` for the table, the minimum rows and the subset).

`models` / `policies` restrict the load to a subset (`--models A,B`, `--policies P,Q`); a name
that no row has is an error listing the names the files do have.

Cost of a cell is `input_tokens * input_price + output_tokens * output_price` with the meta's
list prices, or the row's `cost_usd` where the model has no list price. For the checkpoint
such a model gets prices fitted to its train rows' recorded costs (non-negative least squares).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..policies import UNLIMITED, parse_policy_label
from .errors import DataError
from .readers import Meta, Prices, Row, read_meta, read_rows

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
SPLITS = ("train", "test")


@dataclass
class OutcomeData:
    """Validated outcomes; `score`, `input_tokens`, `output_tokens`, `cost` are `[Q, M, P]`."""

    query_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    splits: tuple[str, ...]
    models: tuple[str, ...]
    policies: tuple[int | str, ...]
    score: F64
    input_tokens: F64
    output_tokens: F64
    cost: F64
    prices: dict[str, Prices]
    price_source: dict[str, str]
    sources: tuple[str, ...] = ()
    unscored_rows: int = 0
    collected_policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def observed(self) -> BoolArray:
        """`[Q, M, P]`: the query has an outcome for that arm."""
        return np.asarray(~np.isnan(self.score))

    @property
    def present(self) -> BoolArray:
        """`[M, P]`: the arms with at least one outcome (a cell never run is no arm)."""
        return np.asarray(self.observed.any(axis=0))

    @property
    def complete(self) -> BoolArray:
        """Queries with an outcome for every present arm."""
        return np.asarray(self.observed[:, self.present].all(axis=1))

    def arm_cells(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Model and policy index of every present arm, model-major (the flat arm order)."""
        mi, pj = np.nonzero(self.present)
        return mi.astype(np.intp), pj.astype(np.intp)

    def without_arms(self, drop: BoolArray) -> OutcomeData:
        """The data with the arms `drop` (`[M, P]`) removed: their cells become NaN, and a
        model or policy left with no arm leaves the grid."""
        drop = np.asarray(drop, dtype=bool)
        arrays = {k: getattr(self, k).copy()
                  for k in ("score", "input_tokens", "output_tokens", "cost")}
        for arr in arrays.values():
            arr[:, drop] = np.nan
        live = ~np.isnan(arrays["score"]).all(axis=0)
        mi, pj = np.flatnonzero(live.any(axis=1)), np.flatnonzero(live.any(axis=0))
        for key, arr in arrays.items():
            arrays[key] = arr[:, mi][:, :, pj]
        return replace(self, models=tuple(self.models[i] for i in mi),
                       policies=tuple(self.policies[j] for j in pj), **arrays)

    def token_targets(self) -> F64:
        """Output tokens with numeric budgets capped at the budget (the `max_tokens` sent)."""
        cap = np.array([p if isinstance(p, int) else np.inf for p in self.policies])
        return np.asarray(np.minimum(self.output_tokens, cap), dtype=np.float64)

    def split_mask(self, name: str) -> BoolArray:
        return np.array([s == name for s in self.splits], dtype=bool)

    def subset(self, mask: BoolArray | npt.NDArray[np.intp]) -> OutcomeData:
        """The same arms over a subset of queries (boolean mask or indices)."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        pick = [int(i) for i in idx]
        return replace(
            self,
            query_ids=tuple(self.query_ids[i] for i in pick),
            prompts=tuple(self.prompts[i] for i in pick),
            splits=tuple(self.splits[i] for i in pick),
            score=self.score[idx], input_tokens=self.input_tokens[idx],
            output_tokens=self.output_tokens[idx], cost=self.cost[idx])

    def arm_labels(self) -> list[str]:
        """`model@policy` of every present arm, in the flat arm order of `arm_cells`."""
        mi, pj = self.arm_cells()
        return [f"{self.models[i]}@{self.policies[j]}" for i, j in zip(mi, pj, strict=True)]


def load_outcomes(paths: Sequence[str | Path], models: Sequence[str] | None = None,
                  policies: Sequence[str] | None = None) -> OutcomeData:
    """Read, validate and tensorise the outcome files `paths` (with their meta files),
    keeping only the rows of `models` and `policies` when given."""
    if not paths:
        raise DataError("no data files given", fix="pass one or more outcome files")
    prices: dict[str, Prices] = {}
    collected: dict[str, dict[str, Any]] = {}
    records: list[_Record] = []
    unscored = 0
    for raw_path in paths:
        path = Path(raw_path)
        meta = read_meta(path)
        _merge_prices(prices, meta, path)
        collected.update(meta.collected)
        for number, row in read_rows(path):
            rec = _validate(row, str(path), number)
            if rec is None:
                unscored += 1
            else:
                records.append(rec)
    if not records:
        raise DataError("no scored rows", file=str(paths[0]),
                        fix="every row needs a numeric score in [0, 1]")
    sources = tuple(str(p) for p in paths)
    records = _select(records, models, policies, ", ".join(sources))
    data = _tensorise(records, prices, sources, unscored)
    data.collected_policies = collected
    return data


def _select(records: list[_Record], models: Sequence[str] | None,
            policies: Sequence[str] | None, sources: str) -> list[_Record]:
    """The records of the named models and policies; unknown names are errors."""
    for flag, wanted, attr in (("--models", models, "model"), ("--policies", policies, "policy")):
        if wanted is None:
            continue
        have = {str(getattr(r, attr)) for r in records}
        unknown = [w for w in wanted if w not in have]
        if unknown:
            raise DataError(f"{flag}: no scored row has {attr} {', '.join(map(repr, unknown))}",
                            file=sources, field=attr,
                            fix=f"choose from {', '.join(sorted(have))}")
        keep = set(wanted)
        records = [r for r in records if str(getattr(r, attr)) in keep]
    return records


@dataclass(frozen=True)
class _Record:
    file: str
    row: int
    query_id: str
    prompt: str
    model: str
    policy: int | str
    score: float
    input_tokens: float
    output_tokens: float
    cost_usd: float | None
    split: str


def _merge_prices(prices: dict[str, Prices], meta: Meta, path: Path) -> None:
    for model, price in meta.prices.items():
        if model in prices and prices[model] != price:
            raise DataError("prices differ from another data file's meta", file=str(path),
                            field=f"prices_usd.{model}",
                            fix="give the model one list price in every meta file")
        prices[model] = price


def _text(row: Row, key: str, file: str, number: int) -> str:
    value = row.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise DataError("missing field", file=file, row=number, field=key,
                        fix=f"add a non-empty string {key!r} to the row")
    if not isinstance(value, str) or not value.strip():
        raise DataError("must be a non-empty string", file=file, row=number, field=key,
                        fix=f"write {key!r} as a non-empty string")
    return value


def _number(row: Row, key: str, file: str, number: int, upper: float = math.inf) -> float:
    value = row.get(key)
    if value is None:
        raise DataError("missing field", file=file, row=number, field=key,
                        fix=f"add a numeric {key!r} to the row")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError("must be a number", file=file, row=number, field=key,
                        fix=f"write {key!r} as a JSON number, not a string")
    out = float(value)
    if not math.isfinite(out) or out < 0 or out > upper:
        bounds = "in [0, 1]" if upper == 1.0 else "finite and >= 0"
        fix = ("rescale scores to [0, 1], or write null for an arm without an outcome"
               if upper == 1.0 else "counts and costs are finite and never negative")
        raise DataError(f"must be {bounds}, got {out!r}", file=file, row=number, field=key,
                        fix=fix)
    return out


def _policy(row: Row, file: str, number: int) -> int | str:
    value = row.get("policy")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise DataError("a token budget must be a positive integer", file=file, row=number,
                            field="policy", fix="write a budget such as 100, or a policy name")
        return value
    return parse_policy_label(_text(row, "policy", file, number))


def _validate(row: Row, file: str, number: int) -> _Record | None:
    """One checked row, or None when its score is null/NaN (no outcome recorded)."""
    if "score" not in row:
        raise DataError("missing field", file=file, row=number, field="score",
                        fix="add score in [0, 1], or null for an arm without an outcome")
    raw_score = row["score"]
    if raw_score is None or isinstance(raw_score, float) and math.isnan(raw_score):
        return None
    cost = row.get("cost_usd")
    split = _text(row, "split", file, number)
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}", file=file, row=number,
                        field="split", fix="mark each query train or test (fixed per query)")
    return _Record(
        file=file, row=number,
        query_id=_text(row, "query_id", file, number),
        prompt=_text(row, "prompt", file, number),
        model=_text(row, "model", file, number),
        policy=_policy(row, file, number),
        score=_number(row, "score", file, number, upper=1.0),
        input_tokens=_number(row, "input_tokens", file, number),
        output_tokens=_number(row, "output_tokens", file, number),
        cost_usd=None if cost is None else _number(row, "cost_usd", file, number),
        split=split,
    )


def policy_order(labels: Iterable[int | str],
                 mean_tokens: dict[int | str, float]) -> list[int | str]:
    """Numeric budgets ascending, then named policies by mean output tokens, then unlimited."""
    labels = set(labels)
    budgets = sorted(x for x in labels if isinstance(x, int))
    named = sorted((x for x in labels if isinstance(x, str) and x != UNLIMITED),
                   key=lambda x: (mean_tokens.get(x, 0.0), x))
    return [*budgets, *named, *([UNLIMITED] if UNLIMITED in labels else [])]


def _tensorise(records: list[_Record], prices: dict[str, Prices],
               sources: tuple[str, ...], unscored: int) -> OutcomeData:
    queries: dict[str, int] = {}
    first: list[_Record] = []
    seen: dict[tuple[str, str, int | str], _Record] = {}
    tokens_by_policy: dict[int | str, list[float]] = {}
    for rec in records:
        key = (rec.query_id, rec.model, rec.policy)
        if key in seen:
            other = seen[key]
            raise DataError(f"duplicate (query_id, model, policy): same as row {other.row} of "
                            f"{other.file}", file=rec.file, row=rec.row, field="query_id",
                            fix="keep one row per query, model and policy (average samples "
                                "into one score)")
        seen[key] = rec
        if rec.query_id not in queries:
            queries[rec.query_id] = len(first)
            first.append(rec)
        else:
            ref = first[queries[rec.query_id]]
            for name in ("prompt", "split"):
                if getattr(rec, name) != getattr(ref, name):
                    raise DataError(f"differs from row {ref.row} of {ref.file} for the same "
                                    "query_id", file=rec.file, row=rec.row, field=name,
                                    fix=f"give every row of a query_id the same {name}, or "
                                        "use distinct query_ids")
        if rec.model not in prices and rec.cost_usd is None:
            raise DataError(f"model {rec.model!r} has no price in the meta file and the row "
                            "has no cost_usd", file=rec.file, row=rec.row, field="cost_usd",
                            fix=f"add prices_usd.{rec.model} to the .meta.json beside the file, "
                                "or a cost_usd to every row of the model")
        tokens_by_policy.setdefault(rec.policy, []).append(rec.output_tokens)
    models = sorted({rec.model for rec in records})
    mean_tokens = {k: float(np.mean(v)) for k, v in tokens_by_policy.items()}
    policies = policy_order(tokens_by_policy, mean_tokens)
    mi = {m: i for i, m in enumerate(models)}
    pi = {p: j for j, p in enumerate(policies)}
    shape = (len(first), len(models), len(policies))
    arrays = {k: np.full(shape, np.nan) for k in ("score", "in", "out", "cost")}
    for rec in records:
        cell = (queries[rec.query_id], mi[rec.model], pi[rec.policy])
        arrays["score"][cell] = rec.score
        arrays["in"][cell] = rec.input_tokens
        arrays["out"][cell] = rec.output_tokens
        price = prices.get(rec.model)
        arrays["cost"][cell] = (
            rec.input_tokens * price.input_per_million / 1e6
            + rec.output_tokens * price.output_per_million / 1e6
            if price is not None else rec.cost_usd)
    splits = tuple(r.split for r in first)
    all_prices, source = _model_prices(models, prices, arrays, splits)
    return OutcomeData(
        query_ids=tuple(queries), prompts=tuple(r.prompt for r in first), splits=splits,
        models=tuple(models), policies=tuple(policies), score=arrays["score"],
        input_tokens=arrays["in"], output_tokens=arrays["out"], cost=arrays["cost"],
        prices=all_prices, price_source=source, sources=sources, unscored_rows=unscored)


def _model_prices(models: list[str], prices: dict[str, Prices], arrays: dict[str, Any],
                  splits: tuple[str, ...]) -> tuple[dict[str, Prices], dict[str, str]]:
    """List prices where the meta has them; otherwise prices fitted to recorded costs."""
    from scipy.optimize import nnls

    train = np.array([s == "train" for s in splits])
    out: dict[str, Prices] = {}
    source: dict[str, str] = {}
    for i, model in enumerate(models):
        if model in prices:
            out[model], source[model] = prices[model], "list"
            continue
        has_train = ~np.isnan(arrays["cost"][train, i]).all() if train.any() else False
        rows = train if has_train else np.ones_like(train)
        tin, tout = arrays["in"][rows, i].ravel(), arrays["out"][rows, i].ravel()
        cost = arrays["cost"][rows, i].ravel()
        ok = ~np.isnan(cost)
        design = np.stack([tin[ok], tout[ok]], axis=1)
        coef, _ = nnls(design, cost[ok])
        resid = design @ coef - cost[ok]
        rel = float(np.max(np.abs(resid)) / max(float(np.mean(cost[ok])), 1e-12))
        # 10 significant digits: recorded costs are exact products, drop the float noise.
        out[model] = Prices(float(f"{coef[0] * 1e6:.10g}"), float(f"{coef[1] * 1e6:.10g}"))
        source[model] = f"fitted to recorded cost_usd (max abs error {rel:.1e} of mean cost)"
    return out, source
