"""Input tokens as billed: the per-model tokenizer scale and per-policy overhead `r2 train`
fits, stored in the checkpoint, applied by the scorer and not applied twice by the gateway."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint

from gateway import tokens as gateway_tokens
from router_core import CheckpointError, load_checkpoint, save_checkpoint
from router_core.scoring import Scorer
from router_core.text import cl100k_token_count
from router_core.training import build_policies
from router_core.training.dataset import load_outcomes
from router_core.training.input_tokens import (
    compare_input_tokens,
    conversation_tokens,
    fit_input_tokens,
    instruction_columns,
)
from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes


def billed_data(tmp_path: Path, scales: dict[str, float], overhead: float,
                hidden_share: float = 0.2):
    """Synthetic outcomes whose recorded input tokens are `scale[m] * (counted + instruction +
    overhead)`, plus unrecorded context (hundreds of tokens) on a share of the queries."""
    rows = synthetic_rows(200, seed=3)
    for row in rows:  # questions of many lengths (a scale is told from an offset by them)
        q = int(row["query_id"].rsplit("/", 1)[1])
        row["prompt"] += " Consider the details carefully." * (q % 37)
    data = load_outcomes([write_outcomes(tmp_path / "d.jsonl", rows, synthetic_meta())])
    policies = build_policies(data.policies, None)
    counted = conversation_tokens(data.prompts)
    extra = instruction_columns(policies, cl100k_token_count)
    rng = np.random.default_rng(0)
    hidden = np.where(rng.random(data.n_queries) < hidden_share,
                      rng.uniform(200, 900, data.n_queries), 0.0)
    scale = np.array([scales[m] for m in data.models])
    recorded = (scale[None, :, None] * (counted[:, None, None] + extra[None, None, :] + overhead
                                        + hidden[:, None, None]))
    recorded = np.round(np.broadcast_to(recorded, data.input_tokens.shape))
    return dataclasses.replace(data, input_tokens=recorded), policies, counted


def test_fit_recovers_tokenizer_scales_and_overhead(tmp_path: Path) -> None:
    data, policies, counted = billed_data(tmp_path, {"small": 1.15, "large": 0.9}, 120.0)
    fit = fit_input_tokens(policies, data, counted)
    scales = dict(zip(data.models, fit.scales, strict=True))
    # Relative to the average model (geometric mean 1): the ratio is the tokenizers' ratio.
    assert scales["small"] / scales["large"] == pytest.approx(1.15 / 0.9, rel=0.002)
    assert scales["small"] * scales["large"] == pytest.approx(1.0, abs=1e-3)
    # Rows with unrecorded context do not pull the medians: most cells are exact.
    report = compare_input_tokens(fit.policies, data, counted, scales=fit.scales)
    assert report.tokens_error < 0.01
    flat = fit_input_tokens(policies, data, counted, scale=False)
    assert np.all(flat.scales == 1.0)
    assert compare_input_tokens(flat.policies, data, counted).tokens_error > 0.05


def test_scale_is_stored_applied_and_optional(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "a")
    ckpt = load_checkpoint(path)
    assert [m.input_token_scale for m in ckpt.models] == [1.0, 1.0]  # old manifests: 1.0
    manifest = json.loads((path / "manifest.json").read_text())
    assert "input_token_scale" not in manifest["models"][0]
    scaled = dataclasses.replace(ckpt, models=(
        dataclasses.replace(ckpt.models[0], input_token_scale=1.5), ckpt.models[1]))
    back = load_checkpoint(save_checkpoint(scaled, tmp_path / "b"))
    assert back.models[0].input_token_scale == 1.5
    emb = np.zeros((1, ckpt.embedder.dim))
    plain, more = Scorer(ckpt).predict(emb, 1000), Scorer(back).predict(emb, 1000)
    out_cost = plain.tokens * np.array([m.output_price_per_million for m in ckpt.models]
                                       )[None, :, None] / 1e6
    in_plain, in_more = plain.cost - out_cost, more.cost - out_cost
    np.testing.assert_allclose(in_more[:, 0], 1.5 * in_plain[:, 0])
    np.testing.assert_allclose(in_more[:, 1], in_plain[:, 1])


@pytest.mark.parametrize("bad", [0.0, -1.0, "x", True, 1e9])
def test_invalid_scale_is_refused_with_its_field(tmp_path: Path, bad: object) -> None:
    path = tiny_checkpoint(tmp_path / "a")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["models"][1]["input_token_scale"] = bad
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "models[1].input_token_scale" in str(info.value)


def test_gateway_does_not_scale_a_count_made_with_the_models_own_tokenizer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # "own" is counted with a tokenizer of its own (as LiteLLM does for Llama), "gpt" with
    # cl100k: only the cl100k count is left for the checkpoint's scale to correct.
    monkeypatch.setattr(gateway_tokens, "tokenizer_key",
                        lambda model: "llama" if model == "up/own" else "tiktoken")
    counter = gateway_tokens.InputTokenCounter(
        ("own", "gpt"), {"own": "up/own", "gpt": "up/gpt"}, scales=[1.25, 1.25])
    messages = [{"role": "user", "content": "How many primes are there below one hundred?"}]
    own, gpt = counter.count(messages)
    plain = gateway_tokens.InputTokenCounter(("own", "gpt"), {"own": "up/own", "gpt": "up/gpt"})
    own_raw, gpt_raw = plain.count(messages)
    assert gpt == gpt_raw
    assert own * 1.25 == pytest.approx(own_raw)


def test_models_whose_tokenizer_litellm_would_download_are_counted_offline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # LiteLLM counts Llama 3 with a tokenizer it fetches from the Hugging Face hub (and retries
    # on the request path after a failure); the gateway counts such models with cl100k instead,
    # which the checkpoint's per-model scale corrects, and never asks LiteLLM for the tokenizer.
    import litellm.utils

    def no_hub(kind: str) -> None:
        raise AssertionError(f"LiteLLM was asked for the {kind} tokenizer")

    monkeypatch.setattr(litellm.utils, "_load_huggingface_tokenizer", no_hub)
    llama = "openrouter/meta-llama/llama-3.1-70b-instruct"
    assert gateway_tokens.tokenizer_key(llama) == "tiktoken"
    counter = gateway_tokens.InputTokenCounter(("llama", "gpt"),
                                               {"llama": llama, "gpt": "openai/gpt-4o-mini"},
                                               scales=[1.2, 1.0])
    messages = [{"role": "user", "content": "How many primes are there below one hundred?"}]
    llama_count, gpt_count = counter.count(messages)
    assert llama_count == gpt_count > 10  # one cl100k-family count, not divided by the scale
    # a tokenizer LiteLLM ships (DeepSeek's) is still used as LiteLLM picks it
    assert gateway_tokens.tokenizer_key("deepseek/deepseek-chat") == "deepseek"


def test_a_very_long_message_is_counted_from_a_sample_within_five_percent() -> None:
    """Counting 400k characters whole holds the interpreter lock for tens of milliseconds
    (tiktoken); beyond `SAMPLE_ABOVE` a message is counted from a sample, scaled by length."""
    import random

    rng = random.Random(7)  # prose, code and tables of numbers, mixed in blocks
    words = "the of report revenue margin region quarter said which because".split()
    blocks = []
    while sum(map(len, blocks)) < 300_000:
        kind = rng.choice(["prose", "code", "table"])
        if kind == "prose":
            blocks.append(" ".join(rng.choice(words) for _ in range(rng.randint(50, 400))) + ".")
        elif kind == "code":
            blocks.append("\n".join(f"    x{i} = compute(y[{i}], {rng.random():.3f})"
                                    for i in range(rng.randint(5, 60))))
        else:
            blocks.append("\n".join("| " + " | ".join(str(rng.randint(0, 10**6))
                                                      for _ in range(6)) + " |"
                                    for _ in range(rng.randint(5, 60))))
    text = "\n\n".join(blocks)
    messages = [{"role": "system", "content": "Summarise."}, {"role": "user", "content": text}]
    counter = gateway_tokens.InputTokenCounter(("gpt",), {"gpt": "openai/gpt-4o-mini"})
    sampled = float(counter.count(messages)[0])
    import litellm

    exact = litellm.token_counter(model="gpt-3.5-turbo", messages=messages)
    assert sampled != exact  # it was estimated, not counted whole
    assert abs(sampled - exact) / exact < 0.05  # -2.9% on this text; docs: 0.2-1% on real ones
    short = [{"role": "user", "content": "What is 2+2?"}]
    assert counter.count(short)[0] == litellm.token_counter(model="gpt-3.5-turbo", messages=short)


def test_sample_text_takes_whole_words_from_across_the_text() -> None:
    words = [f"w{i}" for i in range(100_000)]
    text = " ".join(words)
    sample = gateway_tokens.sample_text(text)
    pieces = sample.split(" ")
    assert set(pieces) <= set(words)  # no word cut in half
    assert len(sample) < len(text) / 20
    first, last = int(pieces[0][1:]), int(pieces[-1][1:])
    assert first < 100_000 * 0.05 and last > 100_000 * 0.9
