"""Vectorised scoring of every (model, policy) head and the utility arg-max.

All heads of all models are one matrix: a batch of embeddings `E [N, D]` is scored with a single
product `E @ W.T` where `W` stacks quality and token heads `[2*M*P, D]`. Deciding is then array
arithmetic over `[N, M, P]`; nothing on this path loops over heads or models in Python. A
decision's ranked candidate list is built only when someone reads it, so `decide` costs one GEMV
and an arg-max. The product is float64 on purpose: float32 would be ~2x faster but its rounding
(which also differs between batch sizes) moves predictions by ~1e-7, enough to flip the release's
4-decimal quality on some parity cases.

Head options in the manifest (all default to the release's behaviour):
- `quality_link`: `"clip"` (clip to [0, 1]) or `"sigmoid"`;
- `tokens_space`: `"linear"` or `"log1p"` (token heads predict log1p(tokens));
- `monotone_quality`: quality of numeric budgets made non-decreasing in the budget;
- cost of a `cost_tokens == "predicted"` policy is capped at its cap.

Input tokens are the conversation's (one number per query, or one per query and model when
models count with different tokenizers); each policy adds the tokens its instruction and its
measured protocol add (`policy_input_tokens`). A request for `n` answers pays `n` outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt

from ._errors import InvalidInputError, NoFeasibleCandidateError, UnknownModelError
from .checkpoint import Checkpoint
from .features import input_features
from .policies import Policy

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Constraints:
    """Per-decision limits. `max_budget` is the client's max_tokens: policies that ask for
    more (`Policy.limit`) are not considered; the budget-free arm stays (it keeps the client's
    cap). `policies` restricts the policies by name; `outputs` is the request's `n`."""

    allowed_models: tuple[str, ...] | None = None
    max_budget: int | None = None
    max_cost_usd: float | None = None
    policies: tuple[str, ...] | None = None
    outputs: int = 1


NO_CONSTRAINTS = Constraints()  # frozen, so one shared default instance is safe


@dataclass(frozen=True)
class Candidate:
    model: str
    budget: int | str
    predicted_quality: float
    predicted_output_tokens: float
    predicted_cost_usd: float
    utility: float

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "budget": self.budget,
            "predicted_quality": self.predicted_quality,
            "predicted_output_tokens": self.predicted_output_tokens,
            "predicted_cost_usd": self.predicted_cost_usd,
            "utility": self.utility,
        }


class RankedCandidates(Sequence[Candidate]):
    """A decision's feasible candidates, best first, built on first access and then cached.

    Building ~180 `Candidate`s costs several times the scoring itself, and most requests only
    need the chosen one. Compares equal to a tuple or sequence with the same candidates.
    """

    __slots__ = ("_build", "_items", "_top")

    def __init__(self, build: Callable[[], tuple[Candidate, ...]],
                 top: Callable[[int], tuple[Candidate, ...]] | None = None) -> None:
        self._build: Callable[[], tuple[Candidate, ...]] | None = build
        self._items: tuple[Candidate, ...] = ()
        self._top = top

    def top(self, k: int) -> tuple[Candidate, ...]:
        """`self[:k]`, building only those `k` when the list has not been built yet."""
        if self._build is None or self._top is None:
            return self._get()[:k]
        return self._top(k)

    def _get(self) -> tuple[Candidate, ...]:
        if self._build is not None:
            self._items = self._build()
            self._build = None
        return self._items

    @overload
    def __getitem__(self, index: int) -> Candidate: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Candidate, ...]: ...
    def __getitem__(self, index: int | slice) -> Candidate | tuple[Candidate, ...]:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._get() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return f"RankedCandidates({self._get()!r})"


@dataclass(frozen=True)
class Decision:
    """The pick for one query; `candidates` are all feasible ones ranked by utility (best
    first, ties in model then policy order); a tuple or a lazily built `RankedCandidates`."""

    chosen: Candidate
    policy: Policy
    lambda_: float
    input_tokens: int
    candidates: Sequence[Candidate]

    @property
    def model(self) -> str:
        return self.chosen.model

    @property
    def budget(self) -> int | str:
        return self.chosen.budget

    def to_json(self, all_candidates: bool = False) -> dict[str, object]:
        out = self.chosen.to_json()
        out["lambda"] = self.lambda_
        out["input_tokens"] = self.input_tokens
        if all_candidates:
            out["candidates"] = [c.to_json() for c in self.candidates]
        return out


@dataclass
class Scores:
    """Predicted quality, output tokens and cost per query, model and policy: `[N, M, P]`."""

    quality: F64
    tokens: F64
    cost: F64


def _utilities(scores: Scores, lam: float) -> F64:
    """`(1-lambda)*quality - lambda*cost`, for a lambda already checked."""
    return (1.0 - lam) * scores.quality - lam * scores.cost


def check_lambda(lambda_: float) -> float:
    try:
        value = float(lambda_)
    except (TypeError, ValueError):
        raise InvalidInputError("lambda must be a number in [0, 1]", param="lambda") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError("lambda must be a number in [0, 1]", param="lambda")
    return value


class Scorer:
    """Scores embeddings against a checkpoint's heads and picks the utility arg-max."""

    def __init__(self, ckpt: Checkpoint,
                 policy_input_tokens: Sequence[float] | None = None) -> None:
        self.ckpt = ckpt
        self.models = ckpt.model_names
        self.policies = ckpt.policies
        m, p, d = len(ckpt.models), len(ckpt.policies), ckpt.embedder.dim
        self.shape = (m, p)
        self.dim = d
        opts = ckpt.head_options
        self.quality_link = str(opts.get("quality_link", "clip"))
        self.tokens_space = str(opts.get("tokens_space", "linear"))
        self.monotone = bool(opts.get("monotone_quality", False))
        a = ckpt.arrays
        if ckpt.head_kind == "linear":
            # One [2*M*P, D] matrix: a single GEMM scores every head of every model.
            self._w = np.ascontiguousarray(np.concatenate(
                [a["quality_coef"].reshape(m * p, d), a["tokens_coef"].reshape(m * p, d)]
            ).astype(np.float64).T)
            self._b = np.concatenate(
                [a["quality_intercept"].reshape(-1), a["tokens_intercept"].reshape(-1)]
            ).astype(np.float64)
        else:
            # Converted once here, not on every call.
            self._layers = {t: self._mlp_layers(t) for t in ("quality", "tokens")}
        # Linear heads may also read cheap request features (`features.py`): their weights
        # become extra rows of the same matrix, so scoring stays one product.
        self.features = tuple(str(f) for f in opts.get("features") or ())
        if self.features and ckpt.head_kind == "linear":
            f = len(self.features)
            extra = np.concatenate([a["quality_feat_coef"].reshape(m * p, f),
                                    a["tokens_feat_coef"].reshape(m * p, f)]).astype(np.float64)
            self._w = np.ascontiguousarray(np.vstack([self._w, extra.T]))
        self._model_index = {name: i for i, name in enumerate(self.models)}
        # Trained on sparse outcomes, a checkpoint marks the arms it has no data for; absent,
        # every arm has a head.
        observed = a.get("arm_observed")
        self._arm_ok = None if observed is None else np.asarray(observed).reshape(m, p) > 0.5
        # Per counted input token: each model bills `input_token_scale` tokens (its tokenizer).
        self._in_price = np.array([x.input_price_per_million * x.input_token_scale
                                   for x in ckpt.models]) / 1e6
        self._out_price = np.array([x.output_price_per_million for x in ckpt.models]) / 1e6
        self._fixed_tokens = np.array(
            [pol.budget if pol.cost_tokens == "budget" and pol.kind == "budget" else np.nan
             for pol in ckpt.policies], dtype=np.float64)
        self._token_cap = np.array(
            [np.inf if pol.cap is None else pol.cap for pol in ckpt.policies], dtype=np.float64)
        budgets = [(pol.budget, j) for j, pol in enumerate(ckpt.policies) if pol.kind == "budget"]
        self._budget_order = np.array([j for _, j in sorted(budgets)], dtype=np.intp)
        # What each policy asks for; the budget-free arm asks for nothing (always within a cap).
        self._policy_limit = np.array(
            [0 if pol.limit is None else pol.limit for pol in ckpt.policies], dtype=np.float64)
        extra = np.zeros(p) if policy_input_tokens is None else np.asarray(
            policy_input_tokens, dtype=np.float64).reshape(-1)
        if extra.shape != (p,):
            raise InvalidInputError(f"policy_input_tokens needs {p} numbers",
                                    param="policy_input_tokens")
        self._policy_input = extra + np.array([pol.input_overhead_tokens for pol in ckpt.policies])
        self._labels = [pol.label for pol in ckpt.policies]
        self._names = [pol.name for pol in ckpt.policies]

    def _mlp_layers(self, target: str) -> list[tuple[F64, F64]]:
        a = self.ckpt.arrays
        count = sum(1 for k in a if k.startswith(f"{target}_w"))
        return [(a[f"{target}_w{i}"].astype(np.float64),
                 a[f"{target}_b{i}"].astype(np.float64)[:, None, :]) for i in range(count)]

    # -- prediction -------------------------------------------------------------------------
    def _raw(self, emb: F64) -> tuple[F64, F64]:
        n = emb.shape[0]
        m, p = self.shape
        if self.ckpt.head_kind == "linear":
            out = emb @ self._w + self._b
            return out[:, : m * p].reshape(n, m, p), out[:, m * p:].reshape(n, m, p)
        return self._mlp(emb, "quality"), self._mlp(emb, "tokens")

    def _mlp(self, emb: F64, target: str) -> F64:
        layers = self._layers[target]
        n = emb.shape[0]
        h = np.broadcast_to(emb, (layers[0][0].shape[0], *emb.shape))  # [K, N, D]
        for i, (w, b) in enumerate(layers):
            h = np.matmul(h, w) + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
        m, p = self.shape
        return np.asarray(h[:, :, 0].T.reshape(n, m, p), dtype=np.float64)

    def predict(self, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike,
                outputs: int = 1) -> Scores:
        emb = self.validate_embeddings(embeddings)
        tok_in = self._input_tokens(input_tokens, emb.shape[0])  # [N, M]
        if self.features:
            # Heads read one length per query (training counts one); per-model counts differ
            # only by tokenizer, so their mean stands for it.
            emb = np.hstack([emb, input_features(self.features, tok_in.mean(axis=1))])
        q_raw, t_raw = self._raw(emb)
        if self.quality_link == "sigmoid":
            quality = 1.0 / (1.0 + np.exp(-q_raw))
        else:
            quality = np.clip(q_raw, 0.0, 1.0)
        if self.monotone and self._budget_order.size:
            ordered = quality[:, :, self._budget_order]
            quality[:, :, self._budget_order] = np.maximum.accumulate(ordered, axis=2)
        tokens = np.expm1(np.maximum(t_raw, 0.0)) if self.tokens_space == "log1p" else t_raw
        tokens = np.minimum(np.maximum(tokens, 0.0), self._token_cap)
        tokens = np.where(np.isnan(self._fixed_tokens), tokens, self._fixed_tokens)
        tok_in = np.maximum(tok_in[:, :, None] + self._policy_input[None, None, :], 0.0)
        cost = (tok_in * self._in_price[None, :, None]
                + max(1, int(outputs)) * tokens * self._out_price[None, :, None])
        return Scores(quality, tokens, cost)

    def validate_embeddings(self, embeddings: npt.ArrayLike) -> F64:
        """`[N, D]` float64, finite; a 1-d input is one row."""
        try:
            emb = np.asarray(embeddings, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("embeddings must be numbers", param="embeddings") from None
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise InvalidInputError(
                f"embedding dimension {emb.shape[-1] if emb.ndim else 0} does not match the "
                f"checkpoint's {self.dim}", param="embeddings")
        if not np.all(np.isfinite(emb)):
            raise InvalidInputError("embeddings contain NaN or infinity", param="embeddings")
        return emb

    def _input_tokens(self, input_tokens: npt.ArrayLike, n: int) -> F64:
        """`[N, M]`: one number, one per query, or one per query and model."""
        m = self.shape[0]
        try:
            tok = np.asarray(input_tokens, dtype=np.float64)
        except (TypeError, ValueError):
            tok = np.empty(0)
        if tok.ndim == 2 and tok.shape == (n, m):
            out = tok
        elif tok.size == 1:
            out = np.full((n, m), tok.reshape(-1)[0])
        elif tok.size == n and tok.ndim <= 1:
            out = np.repeat(tok.reshape(n, 1), m, axis=1)
        else:
            raise InvalidInputError(f"input_tokens must be one number, {n} numbers or {n}x{m}",
                                    param="input_tokens")
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise InvalidInputError("input_tokens must be finite and >= 0", param="input_tokens")
        return out

    # -- decision ---------------------------------------------------------------------------
    def feasible_mask(self, scores: Scores, constraints: Constraints) -> npt.NDArray[np.bool_]:
        m, p = self.shape
        mask = np.ones((m, p), dtype=bool) if self._arm_ok is None else self._arm_ok.copy()
        if constraints.allowed_models is not None:
            unknown = [x for x in constraints.allowed_models if x not in self._model_index]
            if unknown:
                raise UnknownModelError(f"unknown model in allowed list: {unknown[0]!r}",
                                        param="models")
            allowed = np.zeros(m, dtype=bool)
            allowed[[self._model_index[x] for x in constraints.allowed_models]] = True
            mask &= allowed[:, None]
        if constraints.max_budget is not None:
            mask &= (self._policy_limit <= constraints.max_budget)[None, :]
        if constraints.policies is not None:
            mask &= np.array([n in constraints.policies for n in self._names])[None, :]
        if constraints.max_cost_usd is not None:
            return mask & (scores.cost <= constraints.max_cost_usd)
        return np.repeat(mask[None], scores.cost.shape[0], axis=0)

    def utilities(self, scores: Scores, lambda_: float) -> F64:
        return _utilities(scores, check_lambda(lambda_))

    def pick(self, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike, lambda_: float,
             constraints: Constraints = NO_CONSTRAINTS) -> tuple[npt.NDArray[np.intp], Scores, F64]:
        """Batch arg-max: flat index `m*P + p` per row, -1 where nothing is feasible."""
        idx, scores, util, _ = self._pick(embeddings, input_tokens, lambda_, constraints)
        return idx, scores, util

    def _pick(self, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike, lambda_: float,
              constraints: Constraints,
              ) -> tuple[npt.NDArray[np.intp], Scores, F64, npt.NDArray[np.bool_]]:
        lam = check_lambda(lambda_)
        scores = self.predict(embeddings, input_tokens, constraints.outputs)
        util = _utilities(scores, lam)
        mask = self.feasible_mask(scores, constraints)
        masked = np.where(mask, util, -np.inf).reshape(util.shape[0], -1)
        idx = np.argmax(masked, axis=1)  # first maximum: model order, then policy order
        idx[~np.isfinite(masked[np.arange(masked.shape[0]), idx])] = -1
        return idx, scores, util, mask

    def candidate(self, scores: Scores, util: F64, row: int, flat: int) -> Candidate:
        mi, pi = divmod(int(flat), self.shape[1])
        return Candidate(self.models[mi], self._labels[pi], float(scores.quality[row, mi, pi]),
                         float(scores.tokens[row, mi, pi]), float(scores.cost[row, mi, pi]),
                         float(util[row, mi, pi]))

    def ranked(self, scores: Scores, util: F64, mask: npt.NDArray[np.bool_],
               row: int, k: int | None = None) -> tuple[Candidate, ...]:
        """Feasible candidates of `row`, best utility first, ties in flat (model, policy) order
        (the first `k` only, when given)."""
        flat_util = util[row].reshape(-1)
        order = np.argsort(-flat_util, kind="stable")
        order = order[mask[row].reshape(-1)[order]][:k]
        p = self.shape[1]
        q, t, c = (x[row].reshape(-1)[order].tolist()
                   for x in (scores.quality, scores.tokens, scores.cost))
        u = flat_util[order].tolist()
        return tuple(Candidate(self.models[i // p], self._labels[i % p], q[k], t[k], c[k], u[k])
                     for k, i in enumerate(order.tolist()))

    def decide(self, embedding: npt.ArrayLike, input_tokens: npt.ArrayLike, lambda_: float,
               constraints: Constraints = NO_CONSTRAINTS) -> Decision:
        try:
            tokens = np.asarray(input_tokens, dtype=np.float64)[None]
        except (TypeError, ValueError):
            raise InvalidInputError("input_tokens must be numbers", param="input_tokens") from None
        idx, scores, util, mask = self._pick(embedding, tokens, lambda_, constraints)
        if scores.quality.shape[0] != 1:
            raise InvalidInputError("decide() takes one embedding; use pick() for a batch",
                                    param="embeddings")
        if idx[0] < 0:
            raise NoFeasibleCandidateError("no (model, budget) satisfies the constraints")
        flat = int(idx[0])
        cands = RankedCandidates(lambda: self.ranked(scores, util, mask, 0),
                                 lambda k: self.ranked(scores, util, mask, 0, k))
        tokens = tokens.reshape(-1)
        return Decision(self.candidate(scores, util, 0, flat), self.policies[flat % self.shape[1]],
                        float(lambda_), int(tokens[flat // self.shape[1]] if tokens.size > 1
                                            else tokens[0]), cands)

    def smallest_policies(self) -> tuple[str, ...]:
        """Names of the policies that ask for the least (smallest limit), for a client cap below
        every policy's: a shorter request, never a longer style. The budget-free arm only when
        no policy has a limit."""
        limited = [(pol.limit, pol.name) for pol in self.policies if pol.limit is not None]
        if not limited:
            return tuple(pol.name for pol in self.policies)
        least = min(limit for limit, _ in limited)
        return tuple(name for limit, name in limited if limit == least)

    def policy_for(self, budget: int | str) -> Policy:
        for pol in self.policies:
            if pol.label == budget or pol.name == str(budget):
                return pol
        raise InvalidInputError(f"unknown budget {budget!r}", param="budget")

    def labels(self) -> Sequence[int | str]:
        return list(self._labels)
