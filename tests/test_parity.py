"""Parity with the published R2-Router release: the shipped `checkpoints/r2-release` (its joblib
Ridge heads, converted by `r2 import-checkpoint`) makes the same decisions as the released code
on 300 recorded cases.

The cases and their embeddings ship in `tests/data/`; so does the converted checkpoint, so
parity is checked from a clone alone. The release itself (`shared/upstream-r2router`, next to
the checkout, or `$R2_SHARED_DIR`) is only needed to check that the shipped checkpoint is
exactly what the importer makes of it.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, TEST_DATA, require_shared

from gateway.cli import main
from router_core import CheckpointError, Router, load_checkpoint
from router_core.checkpoint import sha256_file
from router_core.upstream_import import import_release

SHIPPED = REPO / "checkpoints" / "r2-release"


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    lines = (TEST_DATA / "parity_cases.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return np.load(TEST_DATA / "parity_embeddings.npy", allow_pickle=False)


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_checkpoint(SHIPPED, expected_embedder=("Qwen/Qwen3-0.6B", 1024)))


def mismatch(case: dict[str, Any], model: str, budget: int | str, quality: float,
             cost: float) -> str | None:
    got = (model, budget, round(quality, 4), round(cost, 8))
    want = (case["model"], case["budget"], case["predicted_quality"], case["predicted_cost_usd"])
    return None if got == want else f"case {case['index']}: got {got}, upstream {want}"


def test_the_cases_cover_300_embeddings_and_varied_lambdas(
        cases: list[dict[str, Any]], embeddings: np.ndarray) -> None:
    assert len(cases) == 300
    assert embeddings.shape == (300, 1024)
    assert len({c["lambda"] for c in cases}) >= 5
    assert len({(c["model"], c["budget"]) for c in cases}) >= 5


def test_shipped_release_has_the_upstream_pool_and_budgets(router: Router) -> None:
    assert len(router.models) == 11
    labels = [p.label for p in router.checkpoint.policies]
    assert labels == [10, 20, 30, 40, 50, 80, 100, 150, 200, 300, 500, 800, 1200, 2000, 4000,
                      "unlimited"]
    assert router.checkpoint.input_tokens == "words1.3"


def test_one_by_one_decisions_match_upstream_on_all_300_cases(
        router: Router, cases: list[dict[str, Any]], embeddings: np.ndarray) -> None:
    errors = []
    for case in cases:
        d = router.decide(embeddings[case["index"]], case["input_tokens"], case["lambda"])
        c = d.chosen
        errors.append(mismatch(case, c.model, c.budget, c.predicted_quality,
                               c.predicted_cost_usd))
    assert [e for e in errors if e] == []


def test_batch_route_embeddings_matches_upstream_on_all_300_cases(
        router: Router, cases: list[dict[str, Any]], embeddings: np.ndarray) -> None:
    by_lambda: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        by_lambda[case["lambda"]].append(case)
    errors = []
    for lam, group in by_lambda.items():
        rows = embeddings[[c["index"] for c in group]]
        picks = router.route_embeddings(rows, [c["input_tokens"] for c in group], lam)
        assert len(picks) == len(group)
        for case, c in zip(group, picks, strict=True):
            errors.append(mismatch(case, c.model, c.budget, c.predicted_quality,
                                   c.predicted_cost_usd))
    assert sum(len(g) for g in by_lambda.values()) == 300
    assert [e for e in errors if e] == []


def test_shipped_release_holds_no_pickle_and_carries_licence_and_provenance() -> None:
    assert sorted(p.name for p in SHIPPED.iterdir()) == ["README.md", "heads.npz",
                                                         "manifest.json"]
    prov = json.loads((SHIPPED / "manifest.json").read_text())["provenance"]
    assert prov["source"] == "https://github.com/UCF-ML-Research/R2-Router"
    assert prov["license"] == "MIT"
    assert "Permission is hereby granted, free of charge" in prov["license_notice"]
    originals = prov["original_files"]
    assert len(originals) == 1 + 11 * 3  # config.json + three joblib files per model
    assert "r2_router/config.json" in originals
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in originals.values())
    readme = (SHIPPED / "README.md").read_text()
    assert prov["license_notice"] in readme and prov["converted_with"] in readme
    assert all(f"`{name}` | `{digest}`" in readme for name, digest in originals.items())


def test_shipped_release_is_what_the_importer_makes_of_the_published_files(
        tmp_path: Path) -> None:
    """The point is the bytes of the real release: their hashes, and a fresh conversion."""
    release = require_shared("upstream-r2router", "r2_router")
    shipped = load_checkpoint(SHIPPED)
    recorded = shipped.provenance["original_files"]
    assert {name: sha256_file(release.parent / name) for name in recorded} == recorded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickled by an older scikit-learn
        fresh = import_release(release, tmp_path / "r2-release", trust_pickle=True)
    assert fresh.provenance["original_files"] == recorded
    fresh.provenance["converted_with"] = shipped.provenance["converted_with"]  # other DEST
    fresh.tradeoff = shipped.tradeoff  # added by `r2 calibrate` after the conversion
    assert fresh.manifest({}) == shipped.manifest({})  # same models, prices, policies, notice
    for name, array in shipped.arrays.items():
        np.testing.assert_array_equal(fresh.arrays[name], array)


def test_parity_fixtures_are_the_published_cases() -> None:
    upstream = require_shared("upstream-r2router")
    for name in ("parity_cases.jsonl", "parity_embeddings.npy"):
        assert sha256_file(TEST_DATA / name) == sha256_file(upstream / name)


def test_import_records_every_original_file_and_writes_the_notice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """On a two-model miniature of the release (same layout, joblib Ridge heads)."""
    import joblib
    from sklearn.linear_model import Ridge

    root = tmp_path / "r2_router"
    rng = np.random.default_rng(0)
    models = {}
    for name in ("big", "small"):
        ckdir = root / "checkpoints" / f"{name}_ridge"
        ckdir.mkdir(parents=True)
        x, y = rng.normal(size=(8, 4)), rng.uniform(size=8)
        heads = {f"{b}_score": Ridge().fit(x, y) for b in (10, 100)}
        joblib.dump(heads, ckdir / "limited_score_predictors.joblib")
        joblib.dump(Ridge().fit(x, y), ckdir / "unlimited_score_predictor.joblib")
        joblib.dump(Ridge().fit(x, 100 * y), ckdir / "unlimited_token_predictor.joblib")
        models[name] = {"openrouter_id": f"p/{name}", "input_price_per_million": 1.0,
                        "output_price_per_million": 2.0, "checkpoint_dir": f"{name}_ridge"}
    (root / "config.json").write_text(json.dumps({
        "embedding_model": "toy", "embedding_dim": 4, "method": "Ridge",
        "token_limits": [10, 100, "unlimited"], "models": models}))
    (root / "router.py").write_text("# code, not data: not hashed\n")

    out = tmp_path / "out"
    assert main(["import-checkpoint", str(root), str(out)]) == 2  # no --trust-pickle
    assert not out.exists()
    assert main(["import-checkpoint", str(root), str(out), "--trust-pickle"]) == 0
    assert "README.md" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    originals = ckpt.provenance["original_files"]
    assert sorted(originals) == sorted(
        ["r2_router/config.json"] + [f"r2_router/checkpoints/{m}_ridge/{f}" for m in models
                                     for f in ("limited_score_predictors.joblib",
                                               "unlimited_score_predictor.joblib",
                                               "unlimited_token_predictor.joblib")])
    assert originals["r2_router/config.json"] == sha256_file(root / "config.json")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "MIT License" in readme and originals["r2_router/config.json"] in readme
    assert f"r2 import-checkpoint {root} {tmp_path / 'out'} --trust-pickle" in readme


def test_import_without_trust_pickle_refuses_and_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "r2_router"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"token_limits": [10, "unlimited"],
                                                  "models": {"a": {}}}))
    dest = tmp_path / "never"
    with pytest.raises(CheckpointError, match="pickle"):
        import_release(root, dest)
    assert not dest.exists()


def test_parity_fixtures_carry_the_release_notice() -> None:
    from router_core.release_notice import MIT_NOTICE

    readme = (TEST_DATA / "README.md").read_text()
    assert MIT_NOTICE in readme
    for name in ("parity_cases.jsonl", "parity_embeddings.npy"):
        assert f"`{name}` | `{sha256_file(TEST_DATA / name)}`" in readme
