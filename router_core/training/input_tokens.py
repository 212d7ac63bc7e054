"""Input tokens of outcome data as the gateway would count them, and the overhead a dataset's
collection protocol billed beyond that.

The gateway prices a candidate with the conversation's tokens (`text.count_message_tokens`:
every message plus the chat template) plus what the policy's instruction adds. Outcome data
records what the provider billed, which also holds whatever the collector sent besides the
question (a long system prompt, few-shot examples: about 180-450 tokens per policy in
mcqa_concise_cot), counted by each model's own tokenizer. `fit_input_tokens` stores the
median of that remainder per policy (`Policy.input_overhead_tokens`) and each model's
billed-per-counted-token ratio (`ModelSpec.input_token_scale`), both fitted on the train
split, so predicted cost matches what the measured protocol billed; for data collected with
`r2 collect` the overhead is close to zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..policies import Policy
from ..text import (
    TokenCounter,
    count_message_tokens,
    instruction_tokens,
    token_counter,
    user_messages,
)
from .dataset import OutcomeData

F64 = npt.NDArray[np.float64]


def conversation_tokens(prompts: Sequence[str], system_prompt: str | None = None,
                        kind: str = "tokenizer") -> F64:
    """Input tokens of each prompt sent as the user turn (after `system_prompt`, if any)."""
    count = token_counter(kind)
    return np.array([count_message_tokens(user_messages(p, system_prompt), count)
                     for p in prompts], dtype=np.float64)


def instruction_columns(policies: Sequence[Policy], count: TokenCounter) -> F64:
    return np.array([instruction_tokens(p.render_instruction(), count) for p in policies],
                    dtype=np.float64)


@dataclass
class InputTokenFit:
    """Per policy the overhead (in counted tokens), per model the billed/counted scale."""

    policies: tuple[Policy, ...]
    scales: F64


def fit_input_tokens(policies: Sequence[Policy], data: OutcomeData, tokens: F64,
                     kind: str = "tokenizer", scale: bool = True) -> InputTokenFit:
    """Fit `recorded[q, m, p] ~ scale[m] * (tokens[q] + instruction[p] + overhead[p])`.

    `scale[m]` is what model m bills per counted token relative to the data's other models
    (its tokenizer: Llama's bills ~7% more than GPT's, Cohere's fewer). The same request is
    billed to every model, so the ratio of two models' recorded tokens on one query is the
    ratio of their tokenizers, whatever the request held (including context the data's prompt
    lacks); `scale[m]` is the median of that log-ratio against the query's geometric mean over
    models, and the scales' geometric mean is 1 (the counted tokenizer stands for the average
    model). `overhead[p]` is then the median of `recorded / scale - counted - instruction`: what
    the collection protocol sent besides the question, in counted tokens. Medians, so rows
    with unrecorded extra context cannot pull them. `scale=False`: every scale is 1.
    """
    extra = instruction_columns(policies, token_counter(kind))
    recorded = data.input_tokens
    m = recorded.shape[1]
    scales = np.ones(m)
    if scale and m > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(recorded > 0, np.log(recorded), np.nan)  # [N, M, P]
        full = np.isfinite(logs).all(axis=1)  # cells every model has: [N, P]
        if full.any():
            dev = logs - logs.mean(axis=1, keepdims=True)
            rho = np.array([np.median(dev[:, i, :][full]) for i in range(m)])
            scales = np.exp(rho - rho.mean())
    scales = np.clip(np.round(scales, 4), 0.1, 10.0)
    base = tokens[:, None, None] + extra[None, None, :]
    residual = recorded / scales[None, :, None] - base
    fitted = []
    for j, pol in enumerate(policies):
        ok = np.isfinite(residual[:, :, j])
        overhead = float(np.round(np.median(residual[:, :, j][ok]), 1)) if ok.any() else 0.0
        fitted.append(replace(pol, input_overhead_tokens=overhead))
    return InputTokenFit(tuple(fitted), scales)


@dataclass
class TokenReport:
    """Median absolute relative error of predicted vs recorded input tokens and cost."""

    rows: int
    tokens_error: float
    cost_error: float

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "input_tokens_median_abs_error": self.tokens_error,
                "input_cost_median_abs_error": self.cost_error}


def predicted_input_tokens(policies: Sequence[Policy], tokens: F64, scales: F64,
                           kind: str = "tokenizer") -> F64:
    """`[N, M, P]`: `scales[m] * (tokens + instruction + overhead)`, as the scorer prices."""
    extra = instruction_columns(policies, token_counter(kind))
    overhead = np.array([p.input_overhead_tokens for p in policies])
    counted = np.maximum(tokens[:, None, None] + (extra + overhead)[None, None, :], 0.0)
    return np.asarray(counted * np.asarray(scales, dtype=np.float64)[None, :, None],
                      dtype=np.float64)


def compare_input_tokens(policies: Sequence[Policy], data: OutcomeData, tokens: F64,
                         kind: str = "tokenizer", scales: F64 | None = None) -> TokenReport:
    """How close `scales * (tokens + instruction + overhead)` comes to the recorded input
    tokens (`scales` one per model; 1 if not given)."""
    scales = np.ones(len(data.models)) if scales is None else scales
    predicted = predicted_input_tokens(policies, tokens, scales, kind)
    recorded = data.input_tokens
    price = np.array([data.prices[m].input_per_million for m in data.models])[None, :, None]
    ok = np.isfinite(recorded) & (recorded > 0)
    err = np.abs(predicted - recorded)[ok] / recorded[ok]
    cost_ok = ok & (price > 0)
    cost_err = (np.abs(predicted - recorded) * price)[cost_ok] / (recorded * price)[cost_ok]
    return TokenReport(int(ok.sum()), float(np.median(err)) if err.size else float("nan"),
                       float(np.median(cost_err)) if cost_err.size else float("nan"))


def with_extra_input(data: OutcomeData, extra_tokens: F64) -> OutcomeData:
    """`data` as if each query's requests had carried `extra_tokens` more input tokens (a
    system prompt in front): input tokens and realised cost grow at each model's price."""
    price = np.array([data.prices[m].input_per_million for m in data.models]) / 1e6
    extra = np.asarray(extra_tokens, dtype=np.float64)[:, None, None]
    return replace(data, input_tokens=data.input_tokens + extra,
                   cost=data.cost + extra * price[None, :, None])
