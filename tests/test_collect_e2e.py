"""The whole loop offline: collect with gemma-3-270m on llama.cpp, train, evaluate, serve.

Two deployment names point at the same llama.cpp server with different prices, so the router
has a real quality-cost trade-off to learn from the collected rows. Answer quality is not
asserted (the model is tiny); the plumbing and the data are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import TEST_DATA

from gateway.cli import main
from router_core.training.dataset import load_outcomes

pytestmark = pytest.mark.slow
POLICIES = "8,24,unlimited"
MODELS = ("gemma-cheap", "gemma-dear")


def gateway_yaml(base_url: str, checkpoint: Path) -> dict[str, Any]:
    return {
        "checkpoint": str(checkpoint),
        "embedder": {"kind": "local-q8"},
        "deployments": [
            {"name": name, "model": "openai/gemma-3-270m", "api_base": base_url,
             "input_price_per_million": price, "output_price_per_million": 4 * price,
             "max_tokens": 48, "timeout_s": 120.0}
            for name, price in zip(MODELS, (0.1, 1.0), strict=True)],
    }


def test_collect_train_eval_and_serve_with_a_real_llama_cpp_model(
        tmp_path: Path, llama_base_url: str, make_gateway: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    questions = TEST_DATA / "questions"
    ckpt, out, cache = tmp_path / "ckpt", tmp_path / "mine.jsonl", tmp_path / "cache"
    settings = gateway_yaml(llama_base_url, ckpt)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(settings))
    collect = ["collect", str(questions / "science-easy.jsonl"),
               str(questions / "science-hard.jsonl"), "--limit", "4",
               "--config", str(config), "--models", ",".join(MODELS), "--policies", POLICIES,
               "--out", str(out), "--concurrency", "2", "--no-progress"]

    assert main(collect) == 0
    printed = capsys.readouterr().out
    print(printed)  # the summary table, for whoever reads the CI log
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 * 2 * 3
    assert all(r["output_tokens"] <= 8 for r in rows if r["policy"] == 8)
    assert all(r["output_tokens"] <= 48 for r in rows if r["policy"] == "unlimited")
    assert {r["split"] for r in rows} == {"train", "test"}
    assert "within_1.1x" in printed and "gemma-dear" in printed
    assert main(collect) == 0  # resumable: nothing left to ask
    assert "0 written, 48 already in" in capsys.readouterr().out

    data = load_outcomes([out])
    assert data.models == MODELS and data.policies == (8, 24, "unlimited")
    # 8 questions: every arm has a handful of train rows, far below the default minimum.
    assert main(["train", str(out), "--out", str(ckpt), "--variant", "ridge", "--folds", "0",
                 "--min-arm-rows", "1", "--cache-dir", str(cache), "--no-progress"]) == 0
    report = tmp_path / "eval.json"
    assert main(["eval", str(out), "--checkpoint", str(ckpt), "--json", str(report),
                 "--cache-dir", str(cache), "--no-progress"]) == 0
    assert report.is_file()
    capsys.readouterr()

    gw = make_gateway(settings)
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=[{"role": "user", "content": rows[0]["prompt"]}],
        extra_headers={"x-r2-lambda": "0.5"})
    completion = raw.parse()
    assert raw.headers["x-r2-model"] in MODELS
    budget = raw.headers["x-r2-budget"]
    assert budget in POLICIES.split(",")
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= (int(budget) if budget.isdigit() else 48)
