"""`r2 train` and `r2 eval` end to end on synthetic data with the hash embedder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli

from router_core import Scorer, load_checkpoint
from router_core.training import VARIANTS, DataError, Variant, fit_variant
from router_core.training.interpolate import interpolate_budgets
from router_core.training.mlp import MLPConfig
from router_core.training.policyfile import build_policies
from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes
from router_core.training.variants import applicable, quality_falls

run = run_cli


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rows = synthetic_rows(n_queries=160, models=("small", "medium", "large"), seed=3)
    lacking = next(r["query_id"] for r in rows if r["split"] == "train")
    rows = [r for r in rows if not (r["query_id"] == lacking and r["model"] == "large"
                                    and r["policy"] == 32)]  # one train query lacks one arm
    return write_outcomes(tmp_path / "syn.jsonl", rows, synthetic_meta(("small", "medium",
                                                                       "large")))


@pytest.fixture()
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def train(dataset: Path, out: Path, cache: str, *extra: str) -> int:
    return run("train", str(dataset), "--out", str(out), "--embedder", "hash", "--cache-dir",
               cache, "--no-progress", *extra)


def test_train_writes_a_servable_checkpoint(dataset: Path, tmp_path: Path, cache: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ckpt"
    assert train(dataset, out, cache, "--folds", "2") == 0
    printed = capsys.readouterr().out
    assert "1 queries lack some arms" in printed and "validation AUDC" in printed
    ckpt = load_checkpoint(out, expected_embedder=("hash", 384))
    assert ckpt.model_names == ("large", "medium", "small")
    assert [p.label for p in ckpt.policies] == [32, 256, "unlimited"]
    assert all(p.cost_tokens == "predicted" for p in ckpt.policies)
    assert ckpt.models[0].input_price_per_million == 3.0
    prov = ckpt.provenance
    assert prov["variant"] in VARIANTS and prov["embedder_config"] == {"kind": "hash"}
    assert "shared-monotone" in prov["validation_audc"]  # offered: quality rises with budget
    scores = Scorer(ckpt).predict(np.ones((2, 384)) / np.sqrt(384), [10, 10])
    assert scores.quality.shape == (2, 3, 3)
    # Budget caps hold for predicted tokens.
    assert np.all(scores.tokens[:, :, 0] <= 32) and np.all(scores.tokens[:, :, 1] <= 256)


def test_second_train_does_not_embed_again(dataset: Path, tmp_path: Path, cache: str) -> None:
    assert train(dataset, tmp_path / "a", cache, "--variant", "ridge", "--folds", "0") == 0
    shards = sorted(Path(cache).rglob("shard-*.npz"))
    assert shards
    assert train(dataset, tmp_path / "b", cache, "--variant", "ridge", "--folds", "0") == 0
    assert sorted(Path(cache).rglob("shard-*.npz")) == shards


def test_eval_writes_json_plot_and_table(dataset: Path, tmp_path: Path, cache: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    assert train(dataset, ckpt, cache, "--variant", "shared", "--folds", "0") == 0
    capsys.readouterr()
    out_json, out_png = tmp_path / "ev" / "eval.json", tmp_path / "ev" / "eval.png"
    assert run("eval", str(dataset), "--checkpoint", str(ckpt), "--point-policy", "256",
               "--json", str(out_json), "--plot", str(out_png), "--cache-dir", cache,
               "--no-progress") == 0
    table = capsys.readouterr().out
    assert "AUDC" in table and "oracle" in table and "point policy: 256" in table
    report = json.loads(out_json.read_text())
    assert set(report["routers"]) == {"r2", "point", "oracle", "random", "best-single"}
    for metrics in report["routers"].values():
        assert set(metrics) == {"audc", "qnc", "peak"}
    r = report["routers"]
    assert r["oracle"]["audc"] >= r["r2"]["audc"] > r["random"]["audc"]
    assert len(report["curves"]["r2"]["lambda"]) == len(report["curves"]["r2"]["cost"])
    assert report["queries_missing_arms"] == 0  # the incomplete query is in train
    assert report["point_policy"] == 256
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reports_queries_lacking_arms(tmp_path: Path, cache: str) -> None:
    rows = synthetic_rows(n_queries=40, seed=5, test_share=0.5)
    test_q = next(r["query_id"] for r in rows if r["split"] == "test")
    rows = [r for r in rows if not (r["query_id"] == test_q and r["model"] == "small")]
    data = write_outcomes(tmp_path / "d.jsonl.gz", rows, synthetic_meta())
    assert train(data, tmp_path / "c", cache, "--variant", "ridge", "--folds", "0",
                 "--min-arm-rows", "5") == 0
    out = tmp_path / "e.json"
    assert run("eval", str(data), "--checkpoint", str(tmp_path / "c"), "--json", str(out),
               "--cache-dir", cache, "--no-progress") == 0
    report = json.loads(out.read_text())
    assert report["queries_missing_arms"] == 1


def test_bad_input_raises_r2_errors(dataset: Path, tmp_path: Path, cache: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="unknown variant"):
        train(dataset, tmp_path / "x", cache, "--variant", "nope")
    ckpt = tmp_path / "ckpt"
    train(dataset, ckpt, cache, "--variant", "ridge", "--folds", "0")
    with pytest.raises(DataError, match="point-policy"):
        run("eval", str(dataset), "--checkpoint", str(ckpt), "--point-policy", "cot",
            "--cache-dir", cache, "--no-progress")
    other = write_outcomes(tmp_path / "o.jsonl", synthetic_rows(20, models=("small", "huge")),
                           synthetic_meta(("small", "huge")))
    out = tmp_path / "o.json"
    assert run("eval", str(other), "--checkpoint", str(ckpt), "--cache-dir", cache,
               "--no-progress", "--json", str(out)) == 0
    report = json.loads(out.read_text())
    assert not any(a["arm"].startswith("huge@") for a in report["arms"])
    assert "no head in the checkpoint" in capsys.readouterr().out


def test_cli_maps_data_errors_to_exit_code_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    bad = write_outcomes(tmp_path / "bad.jsonl", [{"query_id": "q"}], synthetic_meta())
    code = main(["train", str(bad), "--out", str(tmp_path / "x"), "--embedder", "hash",
                 "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "field" in err and "Traceback" not in err


def test_one_train_query_asks_for_a_named_variant_then_trains(tmp_path: Path,
                                                               cache: str) -> None:
    """Cross-validation with a fold holding every train query has nothing to fit: a clear
    error naming the way out, not a numpy reshape error; the way out works."""
    rows = synthetic_rows(n_queries=2, seed=2, test_share=0.3)
    assert len({r["query_id"] for r in rows if r["split"] == "train"}) == 1
    data = write_outcomes(tmp_path / "d.jsonl", rows, synthetic_meta())
    with pytest.raises(DataError, match="--variant NAME --folds 0"):
        train(data, tmp_path / "a", cache, "--min-arm-rows", "1")
    assert train(data, tmp_path / "b", cache, "--variant", "shared", "--folds", "0",
                 "--min-arm-rows", "1") == 0
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_named_policies_without_instructions_warn(tmp_path: Path, cache: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rows = synthetic_rows(40, policies=("answer_only", "cot"), seed=2)
    data = write_outcomes(tmp_path / "n.jsonl", rows, synthetic_meta())
    assert train(data, tmp_path / "c", cache, "--variant", "ridge", "--folds", "0") == 0
    assert "without an instruction: answer_only, cot" in capsys.readouterr().out
    pfile = tmp_path / "p.yaml"
    pfile.write_text("policies:\n  answer_only: {instruction: Answer only.}\n"
                     "  cot: {instruction: Think step by step., max_tokens: 400}\n")
    assert train(data, tmp_path / "d", cache, "--variant", "ridge", "--folds", "0",
                 "--policies", str(pfile)) == 0
    assert "without an instruction" not in capsys.readouterr().out
    pols = load_checkpoint(tmp_path / "d").policies
    assert [(p.name, p.max_tokens) for p in pols] == [("answer_only", None), ("cot", 400)]


def test_policies_recorded_by_collect_are_used(tmp_path: Path, cache: str) -> None:
    rows = synthetic_rows(40, policies=(16, "answer_only", "cot"), seed=2)
    meta = synthetic_meta()
    meta["collect"] = {"policies": {
        "16": {"instruction": "You MUST respond in 16 tokens or fewer.", "max_tokens": 16},
        "answer_only": {"instruction": "Only the letter.", "max_tokens": 8},
        "cot": {"instruction": "Think step by step.", "max_tokens": None}}}
    data = write_outcomes(tmp_path / "c.jsonl", rows, meta)
    pfile = tmp_path / "p.yaml"
    pfile.write_text("policies:\n  cot: {instruction: Reason first., max_tokens: 300}\n")
    assert train(data, tmp_path / "c", cache, "--variant", "ridge", "--folds", "0",
                 "--policy-file", str(pfile)) == 0
    pols = {p.name: p for p in load_checkpoint(tmp_path / "c").policies}
    assert (pols["answer_only"].instruction, pols["answer_only"].max_tokens) == (
        "Only the letter.", 8)
    assert (pols["cot"].instruction, pols["cot"].max_tokens) == ("Reason first.", 300)
    assert pols["16"].budget == 16 and pols["16"].max_tokens == 16


def test_monotone_variant_is_offered_only_when_the_data_agrees() -> None:
    rising = np.tile(np.array([0.2, 0.5, 0.8]), (50, 2, 1))
    falling = rising[:, :, ::-1].copy()
    monotone = VARIANTS["shared-monotone"]
    assert applicable(monotone, (32, 256, 1024), rising)
    assert not applicable(monotone, (32, 256, 1024), falling + 0.01 * np.arange(50)[:, None,
                                                                                       None])
    assert not applicable(monotone, ("a", "b", "c"), rising)
    assert not quality_falls(rising, [0, 1, 2])


def test_mlp_variant_gives_an_mlp_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="MLP heads need the torch extra")
    from router_core.checkpoint import EmbedderSpec
    from router_core.embedders import HashEmbedder
    from router_core.training import load_outcomes, make_checkpoint, predict_arms, prepare

    data = load_outcomes([write_outcomes(tmp_path / "m.jsonl", synthetic_rows(40),
                                         synthetic_meta())])
    emb = HashEmbedder(dim=32)
    prep = prepare(data, emb, tmp_path / "cache", progress=False)
    tiny = Variant("mlp", quality="mlp", tokens_space="log1p",
                   mlp=MLPConfig(hidden=(8, 4), epochs=5))
    heads = fit_variant(tiny, prep.embeddings, data.score, data.token_targets())
    assert heads.kind == "mlp" and heads.arrays["quality_w0"].shape == (6, 32, 8)
    ckpt = make_checkpoint(heads, data, build_policies(data.policies), EmbedderSpec("hash", 32,
                                                                                  True))
    from router_core import save_checkpoint

    save_checkpoint(ckpt, tmp_path / "mlp")
    loaded = load_checkpoint(tmp_path / "mlp")
    q, c = predict_arms(loaded, data, prep.embeddings, prep.input_tokens)
    assert q.shape == (40, 6) and np.all((q >= 0) & (q <= 1)) and np.all(c > 0)


def test_interpolated_budgets_blend_neighbouring_heads(dataset: Path, tmp_path: Path,
                                                       cache: str) -> None:
    out = tmp_path / "interp"
    assert train(dataset, out, cache, "--variant", "ridge", "--folds", "0",
                 "--interpolate-budgets", "128") == 0
    ckpt = load_checkpoint(out)
    assert [p.label for p in ckpt.policies] == [32, 128, 256, "unlimited"]
    assert ckpt.policies[1].max_tokens == 128 and ckpt.policies[1].instruction
    coef = ckpt.arrays["quality_coef"]
    w = np.log(128 / 32) / np.log(256 / 32)
    np.testing.assert_allclose(coef[:, 1], (1 - w) * coef[:, 0] + w * coef[:, 2], atol=1e-6)
    # The data has no outcomes at 128: evaluation still runs on the data's own arms.
    assert run("eval", str(dataset), "--checkpoint", str(out), "--cache-dir", cache,
               "--no-progress") == 0


def test_interpolation_refuses_extrapolation_and_mlp() -> None:
    from router_core.training.variants import FittedHeads

    pols = build_policies([32, 256])
    arrays: dict[str, Any] = {k: np.zeros((1, 2, 4) if k.endswith("coef") else (1, 2),
                                          np.float32)
                              for k in ("quality_coef", "quality_intercept", "tokens_coef",
                                        "tokens_intercept")}
    heads = FittedHeads("linear", {}, arrays)
    with pytest.raises(DataError, match="not between"):
        interpolate_budgets(heads, pols, [1000], "x {budget}")
    with pytest.raises(DataError, match="linear heads"):
        interpolate_budgets(FittedHeads("mlp", {}, {}), pols, [64], "x {budget}")
