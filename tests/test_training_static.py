"""The shipped `checkpoints/*-static` (trained with the `static-minilm` embedder) load, score and
reproduce their documented test AUDC (docs/embedders.md) on the shared data (`require_shared`:
skips without it, fails under CI=true). The static embedder embeds the test prompts afresh into
a temporary cache in well under a second each dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import require_shared

from router_core import Router, load_checkpoint, make_embedder
from router_core.training import evaluate, missing_instructions

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
STATIC = ("static-minilm-l6-v2-m2v256-int8", 256)
#: test AUDC of r2 as documented in docs/embedders.md (`r2 eval`, test split)
DOCUMENTED = {"mcqa_concise_cot": 0.7303, "mcqa_nine_models": 0.7386,
              "routerbench_subset": 0.8663}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_static_checkpoint_is_servable_and_records_its_embedder(name: str) -> None:
    ckpt = load_checkpoint(CHECKPOINTS / f"{name}-static", expected_embedder=STATIC)
    assert ckpt.provenance["embedder_config"] == {"kind": "static-minilm"}
    assert ckpt.provenance["split"] == "train"
    assert missing_instructions(ckpt.policies) == []
    minilm = load_checkpoint(CHECKPOINTS / name)
    # same data and arms as the MiniLM checkpoint: only the embedder differs
    assert [m.name for m in ckpt.models] == [m.name for m in minilm.models]
    assert [p.name for p in ckpt.policies] == [p.name for p in minilm.policies]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_static_checkpoint_scores_the_test_split_as_documented(
        name: str, tmp_path: Path) -> None:
    data = require_shared("data", f"{name}.jsonl.gz")
    embedder = make_embedder({"kind": "static-minilm"})
    try:
        ckpt = load_checkpoint(CHECKPOINTS / f"{name}-static",
                               expected_embedder=(embedder.id, embedder.dim))
        report = evaluate([data], ckpt, embedder, cache_dir=tmp_path, progress=False)
        router = Router(ckpt, embedder)
        decisions = [router.route(p, 0.0) for p in ("What is 2 + 2?", "Name a prime above 90.")]
    finally:
        embedder.close()
    r = report.routers
    assert r["r2"].audc == pytest.approx(DOCUMENTED[name], abs=0.002)
    assert r["r2"].audc > r["random"].audc + 0.05
    for d in decisions:
        assert d.model in ckpt.model_names
        assert np.isfinite(d.chosen.predicted_quality)
