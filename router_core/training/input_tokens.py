"""Input tokens of outcome data as the gateway would count them, and the overhead a dataset's
collection protocol billed beyond that.

The gateway prices a candidate with the conversation's tokens (`text.count_message_tokens`:
every message plus the chat template) plus what the policy's instruction adds. Outcome data
records what the provider billed, which also holds whatever the collector sent besides the
question (a long system prompt, few-shot examples: about 180-450 tokens per policy in
mcqa_concise_cot). `fit_input_overhead` stores the median of that remainder per policy
(`Policy.input_overhead_tokens`, fitted on the train split), so predicted cost matches what the
measured protocol billed; for data collected with `r2 collect` it is close to zero.
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


def fit_input_overhead(policies: Sequence[Policy], data: OutcomeData, tokens: F64,
                       kind: str = "tokenizer") -> tuple[Policy, ...]:
    """`policies` (in `data.policies` order) with `input_overhead_tokens` set to the median of
    recorded minus counted input tokens over the rows of each policy."""
    extra = instruction_columns(policies, token_counter(kind))
    out = []
    for j, pol in enumerate(policies):
        recorded = data.input_tokens[:, :, j]
        residual = recorded - tokens[:, None] - extra[j]
        ok = np.isfinite(residual)
        overhead = float(np.round(np.median(residual[ok]), 1)) if ok.any() else 0.0
        out.append(replace(pol, input_overhead_tokens=overhead))
    return tuple(out)


@dataclass
class TokenReport:
    """Median absolute relative error of predicted vs recorded input tokens and cost."""

    rows: int
    tokens_error: float
    cost_error: float

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "input_tokens_median_abs_error": self.tokens_error,
                "input_cost_median_abs_error": self.cost_error}


def compare_input_tokens(policies: Sequence[Policy], data: OutcomeData, tokens: F64,
                         kind: str = "tokenizer") -> TokenReport:
    """How close `tokens` + instruction + overhead come to the recorded input tokens."""
    extra = instruction_columns(policies, token_counter(kind))
    overhead = np.array([p.input_overhead_tokens for p in policies])
    predicted = tokens[:, None, None] + (extra + overhead)[None, None, :]
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
