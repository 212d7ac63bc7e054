"""Outcome data as it really comes: missing cells, stray models, a provider that failed.

Small synthetic files and the hash embedder: `r2 train` fits each arm on the rows where it was
observed and leaves out (or, with `--strict`, refuses) arms with too few train rows, naming
them; `r2 eval` judges each router on the queries where its arms were observed and compares
them on the common set.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli

from router_core import Scorer, load_checkpoint
from router_core.training import DataError
from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes

MODELS = ("small", "medium", "large")


run = run_cli


def train(data: Path, out: Path, cache: Path, *extra: str) -> int:
    return run("train", str(data), "--out", str(out), "--embedder", "hash", "--cache-dir",
               str(cache), "--no-progress", *extra)


def evaluate(data: Path, ckpt: Path, cache: Path, *extra: str) -> dict[str, Any]:
    out = ckpt.parent / f"{ckpt.name}.eval.json"
    assert run("eval", str(data), "--checkpoint", str(ckpt), "--cache-dir", str(cache),
               "--no-progress", "--json", str(out), *extra) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def hole_rows() -> list[dict[str, Any]]:
    """3 models x 3 policies; `large` never ran budget 32."""
    rows = synthetic_rows(n_queries=120, models=MODELS, seed=4)
    return [r for r in rows if not (r["model"] == "large" and r["policy"] == 32)]


def test_a_missing_cell_trains_and_is_never_chosen(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = write_outcomes(tmp_path / "hole.jsonl", hole_rows(), synthetic_meta(MODELS))
    assert train(data, tmp_path / "c", tmp_path / "e", "--folds", "2") == 0
    printed = capsys.readouterr().out
    assert printed.index("coverage") < printed.index("validation")
    assert "  large  " in printed and " - " in printed  # the hole in the coverage table
    ckpt = load_checkpoint(tmp_path / "c", expected_embedder=("hash", 384))
    observed = ckpt.arrays["arm_observed"]
    i, j = ckpt.model_names.index("large"), [p.label for p in ckpt.policies].index(32)
    assert observed[i, j] == 0 and observed.sum() == 8
    scorer = Scorer(ckpt)
    emb = np.random.default_rng(0).normal(size=(50, 384))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for lam in (0.0, 0.5, 0.9, 0.999, 1.0):
        idx, _, _ = scorer.pick(emb, 40, lam)
        assert not np.any(idx == i * len(ckpt.policies) + j)
    assert ckpt.provenance["point_policy"] in {"32", "256", "unlimited"}
    report = evaluate(data, tmp_path / "c", tmp_path / "e")
    assert "large@32" not in {a["arm"] for a in report["arms"]}
    assert set(report["point_by_policy"]) == {"32", "256", "unlimited"}
    assert report["point_policy_chosen_by"] == "validation AUDC on the train split"
    assert str(report["point_policy"]) == ckpt.provenance["point_policy"]
    assert report["judged_queries"]["r2"] == report["common_queries"] == report["queries"]


def stray_rows() -> list[dict[str, Any]]:
    """2 main models plus 3 models that appear in 2-3 rows each."""
    rows = synthetic_rows(n_queries=80, models=("small", "large"), seed=6)
    ids = sorted({r["query_id"] for r in rows})
    keep = {"s1": (0, 1), "s2": (0, 2, 3), "s3": (1, 4)}
    by_id = {r["query_id"]: r for r in rows if r["model"] == "small" and r["policy"] == 256}
    strays = [{**by_id[ids[k]], "model": model, "score": 0.5}
              for model, picks in keep.items() for k in picks]
    return rows + strays


def test_stray_models_are_left_out_with_a_table_naming_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = synthetic_meta(("small", "large", "s1", "s2", "s3"))
    data = write_outcomes(tmp_path / "stray.jsonl", stray_rows(), meta)
    assert train(data, tmp_path / "c", tmp_path / "e", "--folds", "2") == 0
    printed = capsys.readouterr().out
    warning = printed[printed.index("warning"):]
    for name in ("s1", "s2", "s3"):
        assert f"  {name}  " in warning
    ckpt = load_checkpoint(tmp_path / "c", expected_embedder=("hash", 384))
    assert ckpt.model_names == ("large", "small")
    report = evaluate(data, tmp_path / "c", tmp_path / "e")
    assert report["queries_missing_arms"] == 0  # the strays' arms are not judged
    assert "no head in the checkpoint" in capsys.readouterr().out
    with pytest.raises(DataError) as info:
        train(data, tmp_path / "d", tmp_path / "e", "--strict")
    message = str(info.value)
    assert all(name in message for name in ("s1", "s2", "s3")) and "--min-arm-rows" in message
    assert not (tmp_path / "d").exists()


def test_models_and_policies_flags_restrict_train_and_eval(tmp_path: Path) -> None:
    meta = synthetic_meta(("small", "large", "s1", "s2", "s3"))
    data = write_outcomes(tmp_path / "stray.jsonl", stray_rows(), meta)
    assert train(data, tmp_path / "c", tmp_path / "e", "--folds", "2", "--strict",
                 "--models", "small,large", "--policies", "256,unlimited") == 0
    ckpt = load_checkpoint(tmp_path / "c", expected_embedder=("hash", 384))
    assert [p.label for p in ckpt.policies] == [256, "unlimited"]
    report = evaluate(data, tmp_path / "c", tmp_path / "e", "--models", "large")
    assert {a["arm"] for a in report["arms"]} == {"large@256", "large@unlimited"}
    with pytest.raises(DataError, match="choose from"):
        train(data, tmp_path / "x", tmp_path / "e", "--models", "small,nope")


def test_a_provider_outage_is_judged_on_the_common_set(tmp_path: Path) -> None:
    rows = synthetic_rows(n_queries=160, models=MODELS, seed=8, test_share=0.4)
    test_ids = sorted({r["query_id"] for r in rows if r["split"] == "test"})
    out_ids = set(test_ids[: len(test_ids) // 3])  # `large` failed for a third of the test
    rows = [r for r in rows if not (r["model"] == "large" and r["query_id"] in out_ids)]
    data = write_outcomes(tmp_path / "outage.jsonl", rows, synthetic_meta(MODELS))
    assert train(data, tmp_path / "c", tmp_path / "e", "--folds", "2") == 0
    report = evaluate(data, tmp_path / "c", tmp_path / "e", "--point-policy", "256")
    assert report["point_policy_chosen_by"] == "--point-policy"
    n_test = len(test_ids)
    assert report["common_queries"] == n_test - len(out_ids)
    assert report["queries_missing_arms"] == len(out_ids)
    judged = report["judged_queries"]
    assert judged["r2"] == judged["oracle"] == n_test - len(out_ids)
    assert judged["point"] == n_test - len(out_ids)  # `large` is an arm of every policy
    for row in report["point_by_policy"].values():
        assert row["own"]["queries"] == n_test - len(out_ids)
        assert row["audc"] is not None and 0 < row["audc"] <= 1


def test_own_set_of_a_policy_is_larger_when_only_another_policy_failed(tmp_path: Path) -> None:
    rows = synthetic_rows(n_queries=120, models=MODELS, seed=9, test_share=0.5)
    test_ids = sorted({r["query_id"] for r in rows if r["split"] == "test"})
    gone = set(test_ids[:10])
    rows = [r for r in rows if not (r["policy"] == "unlimited" and r["query_id"] in gone)]
    data = write_outcomes(tmp_path / "d.jsonl", rows, synthetic_meta(MODELS))
    assert train(data, tmp_path / "c", tmp_path / "e", "--folds", "2") == 0
    report = evaluate(data, tmp_path / "c", tmp_path / "e", "--point-policy", "32")
    by = report["point_by_policy"]
    assert by["32"]["own"]["queries"] == len(test_ids)
    assert by["unlimited"]["own"]["queries"] == len(test_ids) - 10
    assert report["judged_queries"]["point"] == len(test_ids)
    assert report["judged_queries"]["r2"] == len(test_ids) - 10


def test_no_common_test_query_names_the_sparsest_arms(tmp_path: Path) -> None:
    rows = synthetic_rows(n_queries=120, models=MODELS, seed=10, test_share=0.5)
    test_ids = sorted({r["query_id"] for r in rows if r["split"] == "test"})
    half = set(test_ids[: len(test_ids) // 2])
    rows = [r for r in rows if r["split"] == "train"
            or not ((r["model"] == "large" and r["query_id"] in half)
                    or (r["model"] == "small" and r["query_id"] not in half))]
    data = write_outcomes(tmp_path / "d.jsonl", rows, synthetic_meta(MODELS))
    assert train(data, tmp_path / "c", tmp_path / "e", "--variant", "ridge", "--folds", "0") == 0
    with pytest.raises(DataError, match="sparsest") as info:
        evaluate(data, tmp_path / "c", tmp_path / "e")
    assert "--models/--policies" in str(info.value)


def test_plot_without_matplotlib_fails_before_the_evaluation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_outcomes(tmp_path / "hole.jsonl", hole_rows(), synthetic_meta(MODELS))
    assert train(data, tmp_path / "c", tmp_path / "e", "--variant", "ridge", "--folds", "0") == 0
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    called = []
    monkeypatch.setattr("router_core.training.evaluate", lambda *a, **k: called.append(1))
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(DataError, match="matplotlib"):
        run("eval", str(data), "--checkpoint", str(tmp_path / "c"), "--cache-dir",
            str(tmp_path / "e"), "--no-progress", "--plot", str(tmp_path / "p.png"))
    assert called == []


def test_min_arm_rows_must_be_positive(tmp_path: Path) -> None:
    data = write_outcomes(tmp_path / "hole.jsonl", hole_rows(), synthetic_meta(MODELS))
    with pytest.raises(DataError, match="--min-arm-rows"):
        train(data, tmp_path / "c", tmp_path / "e", "--min-arm-rows", "0")


def test_length_feature_heads_score_with_one_product_in_training_and_serving(
        tmp_path: Path) -> None:
    """`shared-len` heads read log input length next to the embedding; the scorer computes the
    feature with the same function, and the checkpoint keeps the embedding heads' shapes."""
    from router_core.features import input_features
    from router_core.training import VARIANTS, fit_variant

    rng = np.random.default_rng(1)
    n, d = 200, 384
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    tin = rng.integers(10, 3000, size=n).astype(float)
    length = input_features(["log_input_tokens"], tin)[:, 0]
    score = np.clip(0.5 + 0.2 * length[:, None, None] + rng.normal(0, 0.05, (n, 2, 3)), 0, 1)
    tokens = np.abs(100 + 30 * length[:, None, None] + rng.normal(0, 5, (n, 2, 3)))
    heads = fit_variant(VARIANTS["shared-len"], x, score, tokens, tin)
    assert heads.options["features"] == ["log_input_tokens"]
    assert heads.arrays["quality_coef"].shape == (2, 3, d)
    assert heads.arrays["quality_feat_coef"].shape == (2, 3, 1)
    assert float(np.abs(heads.arrays["quality_feat_coef"]).min()) > 0.1  # it found the signal
    from router_core.checkpoint import EmbedderSpec, save_checkpoint
    from router_core.policies import budget_policy, unlimited_policy
    from router_core.training.dataset import OutcomeData
    from router_core.training.readers import Prices
    from router_core.training.trainer import make_checkpoint

    empty = np.zeros((0, 2, 3))
    data = OutcomeData((), (), (), ("a", "b"), (32, 256, "unlimited"), empty, empty, empty,
                       empty, {"a": Prices(1, 2), "b": Prices(3, 4)}, {})
    ckpt = make_checkpoint(heads, data, (budget_policy(32), budget_policy(256),
                                         unlimited_policy()), EmbedderSpec("hash", d, True))
    save_checkpoint(ckpt, tmp_path / "c")
    loaded = load_checkpoint(tmp_path / "c")
    scores = Scorer(loaded).predict(x[:5], tin[:5])
    a = loaded.arrays
    feat = input_features(["log_input_tokens"], tin[:5])
    expected = np.clip(x[:5] @ a["quality_coef"].reshape(6, d).T.astype(np.float64)
                       + feat @ a["quality_feat_coef"].reshape(6, 1).T
                       + a["quality_intercept"].reshape(-1), 0, 1)
    np.testing.assert_allclose(scores.quality.reshape(5, 6), expected, atol=1e-5)
