"""Parity with the published R2-Router release: its joblib Ridge heads, converted to this
project's checkpoint, make the same decisions as the released code on 300 recorded cases.

The release and the cases live outside the repository (`shared/upstream-r2router`, next to the
checkout, or `$R2_SHARED_DIR`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import SHARED

from router_core import CheckpointError, Router, load_checkpoint
from router_core.upstream_import import import_release

UPSTREAM = SHARED / "upstream-r2router"
RELEASE = UPSTREAM / "r2_router"

# The release was pickled by an older scikit-learn; the arrays are all that is read.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def cases() -> list[dict[str, Any]]:
    if not RELEASE.is_dir():
        pytest.fail(f"upstream release not found at {RELEASE}; set R2_SHARED_DIR")
    lines = (UPSTREAM / "parity_cases.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def embeddings(cases: list[dict[str, Any]]) -> np.ndarray:
    return np.load(UPSTREAM / "parity_embeddings.npy", allow_pickle=False)


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory, cases: list[dict[str, Any]]) -> Path:
    dest = tmp_path_factory.mktemp("release") / "r2-release"
    import_release(RELEASE, dest, trust_pickle=True)
    return dest


@pytest.fixture(scope="module")
def router(release_dir: Path) -> Router:
    return Router(load_checkpoint(release_dir, expected_embedder=("Qwen/Qwen3-0.6B", 1024)))


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


def test_imported_release_has_the_upstream_pool_and_budgets(router: Router) -> None:
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


def test_converted_release_holds_no_pickle(release_dir: Path) -> None:
    assert sorted(p.name for p in release_dir.iterdir()) == ["heads.npz", "manifest.json"]


def test_import_without_trust_pickle_refuses_and_creates_nothing(tmp_path: Path) -> None:
    if not RELEASE.is_dir():
        pytest.fail(f"upstream release not found at {RELEASE}; set R2_SHARED_DIR")
    dest = tmp_path / "never"
    with pytest.raises(CheckpointError, match="pickle"):
        import_release(RELEASE, dest)
    assert not dest.exists()
