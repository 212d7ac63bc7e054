"""Predicted vs recorded input tokens (and input cost) on outcome data.

For each dataset: the train split fits each policy's input overhead and each model's
billed-per-counted-token scale (`fit_input_tokens`, what `r2 train` stores in the checkpoint);
the test split (and, for the fit itself, the train split) is compared four ways: the old count
(cl100k on the prompt text alone), the message list as billed (`count_message_tokens`, with the
policy's instruction), that plus the fitted per-policy overhead alone, and that times the
fitted per-model scale. Reported: the median absolute relative error over (query, model,
policy) cells, for tokens and for the cell's cost with the recorded output tokens (so only the
input side differs).

    python benchmarks/token_accuracy.py ../shared/data/mcqa_concise_cot.jsonl.gz \\
        --policies checkpoints/default/policies.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from router_core.text import cl100k_token_count
from router_core.training.dataset import OutcomeData, load_outcomes
from router_core.training.input_tokens import (
    conversation_tokens,
    fit_input_tokens,
    instruction_columns,
    predicted_input_tokens,
)
from router_core.training.policyfile import build_policies, load_policy_file, with_collected


def errors(predicted: np.ndarray, data: OutcomeData) -> dict[str, float]:
    recorded = data.input_tokens
    in_price = np.array([data.prices[m].input_per_million for m in data.models])[None, :, None]
    out_price = np.array([data.prices[m].output_per_million for m in data.models])[None, :, None]
    ok = np.isfinite(recorded) & (recorded > 0) & np.isfinite(data.output_tokens)
    pred_cost = predicted * in_price + data.output_tokens * out_price
    true_cost = recorded * in_price + data.output_tokens * out_price
    tok = np.abs(predicted - recorded)[ok] / recorded[ok]
    cost_ok = ok & (true_cost > 0)
    cost = np.abs(pred_cost - true_cost)[cost_ok] / true_cost[cost_ok]
    signed = (pred_cost.sum(where=cost_ok) - true_cost.sum(where=cost_ok)) / \
        true_cost.sum(where=cost_ok)
    return {"tokens_median_abs_error": round(float(np.median(tok)), 4),
            "cost_median_abs_error": round(float(np.median(cost)), 4),
            "total_cost_error": round(float(signed), 4)}


def report(path: str, policies_file: str | None) -> dict[str, Any]:
    data = load_outcomes([path])
    pfile = with_collected(load_policy_file(policies_file) if policies_file else None,
                           data.collected_policies)
    policies = build_policies(data.policies, pfile)
    train = data.subset(data.split_mask("train"))
    test = data.subset(data.split_mask("test"))
    train_tokens = conversation_tokens(train.prompts)
    flat = fit_input_tokens(policies, train, train_tokens, scale=False)
    fit = fit_input_tokens(policies, train, train_tokens)
    tokens = conversation_tokens(test.prompts)
    extra = instruction_columns(policies, cl100k_token_count)
    ones = np.ones(len(test.models))
    shape = (1, len(test.models), 1)
    old = np.array([cl100k_token_count(p) for p in test.prompts])[:, None, None] * np.ones(shape)
    billed = tokens[:, None, None] + extra[None, None, :] * np.ones(shape)
    return {
        "data": Path(path).name, "test_cells": int(np.isfinite(test.input_tokens).sum()),
        "overhead_tokens_alone": {str(p.label): p.input_overhead_tokens for p in flat.policies},
        "overhead_tokens": {str(p.label): p.input_overhead_tokens for p in fit.policies},
        "input_token_scale": dict(zip(test.models, fit.scales.tolist(), strict=True)),
        "prompt_only_cl100k": errors(old, test),
        "messages_as_billed": errors(billed, test),
        "with_fitted_overhead": errors(predicted_input_tokens(flat.policies, tokens, ones), test),
        "with_overhead_and_scale": errors(
            predicted_input_tokens(fit.policies, tokens, fit.scales), test),
        "train_split_with_overhead_and_scale": errors(
            predicted_input_tokens(fit.policies, train_tokens, fit.scales), train),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--policies", help="policies file with the named policies' instructions")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    out = [report(p, args.policies) for p in args.data]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
