"""Fewer MiniLM layers for `local-q8`: validation AUDC on the train split and CPU per text
(issue 19: the one remaining lever on the embedding's cost once the graph is fused).

`local-q8` (derivation v2: attention and GELU fused, then quantised) runs all six layers of
all-MiniLM-L6-v2. The integer matrix products are most of a run and already near this CPU's
int8 rate, so the only large saving left is fewer layers. For k in `--layers` (default 3 4 5 6)
this script cuts the fused fp32 graph after layer k (mean pooling then reads layer k's output,
as it reads layer 6's), quantises it with the same recipe as `local_q8.derive`, and reports:

- CPU ms per text, one text per run, one thread, the benchmark's medium prompts (~35
  wordpieces) and the long ones (~220), all depths in one process, alternating; ratio to k=6;
- validation AUDC on each shared dataset's train split with `r2 train`'s own cross-validation
  (`trainer.cross_validate`: 5 folds by query, seed 0, each head variant of `--variant auto`),
  per variant and the best (what `r2 train` would pick). The test split is never read.

Decision rule (fixed before any number was computed): the smallest k whose best validation AUDC
is within 0.002 of k=6's on ALL three shared datasets would be trained into checkpoints and
offered as the default only if its test AUDC is then within 0.005 of MiniLM's (`local`) on
every dataset (the issue's rule for a default); otherwise nothing ships and the numbers go to
docs/embedders.md.

    nice -n 5 python benchmarks/depth_variants.py
    nice -n 5 python benchmarks/depth_variants.py --layers 4 6 --json out.json
    nice -n 5 python benchmarks/depth_variants.py --test-depth 3

Outcome (2026-12-02, docs/embedders.md "Fewer layers"): k=3 passed the first step and failed the
second (mcqa_nine_models 0.0155 below MiniLM on test), so nothing shipped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_embed_stages import LONG, MEDIUM, GraphEmbedder
from embedder_variants import DATASETS, load, validate

from router_core.embedders.local_onnx import verified_model_file
from router_core.embedders.local_q8 import OnnxMiniLMQ8Embedder, derive
from router_core.embedders.onnx_fuse import LAYERS
from router_core.training.embed_cache import EmbeddingCache, embed_texts


def depth_embedder(model: Path, layers: int) -> GraphEmbedder:
    """`local-q8`'s pipeline on a graph of `layers` layers (no probe check: no reference)."""
    return GraphEmbedder(model, f"{OnnxMiniLMQ8Embedder.model_id}-l{layers}")


def cpu_per_text(embedders: dict[int, GraphEmbedder], texts: Sequence[str],
                 rounds: int) -> dict[int, float]:
    """Median over rounds of CPU ms per text, one text per call, depths alternating."""
    samples: dict[int, list[float]] = {k: [] for k in embedders}
    for emb in embedders.values():
        emb.embed(list(texts[:2]))
    for _ in range(rounds):
        for k, emb in embedders.items():
            start = time.process_time()
            for text in texts:
                emb.embed([text])
            samples[k].append(1000 * (time.process_time() - start) / len(texts))
    return {k: float(np.median(v)) for k, v in samples.items()}


def test_depth(layers: int, datasets: Sequence[str], data_dir: Path) -> dict[str, Any]:
    """The rule's second step for one depth: `r2 train` (variant auto, each dataset's policies
    file, as the shipped checkpoints) and `r2 eval` on the test split, in this process with the
    cut graph; and `r2 eval` of the shipped MiniLM (`local`) checkpoint in the same run."""
    from router_core import load_checkpoint, make_embedder
    from router_core.training import trainer
    from router_core.training.checkpoint_eval import evaluate

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / f"l{layers}.onnx"
        derive(verified_model_file()[0], model, layers=layers)
        emb = depth_embedder(model, layers)
        local = make_embedder({"kind": "local", "threads": 1})
        try:
            for name in datasets:
                data = data_dir / f"{name}.jsonl.gz"
                ckpt_dir = Path(tmp) / f"{name}-l{layers}"
                trainer.train([data], ckpt_dir, {"kind": f"local-q8 cut after {layers}"},
                              policies_file=Path("checkpoints") / name / "policies.yaml",
                              cache_dir=Path(tmp) / "cache", progress=False,
                              log=lambda _: None, embedder=emb)
                cut = evaluate([data], load_checkpoint(ckpt_dir), emb, progress=False)
                ref = evaluate([data], load_checkpoint(Path("checkpoints") / name), local,
                               progress=False)
                row = {"audc": cut.routers["r2"].audc, "qnc": cut.routers["r2"].qnc,
                       "local_audc": ref.routers["r2"].audc}
                out[name] = row
                print(f"{name:<20} k={layers} test AUDC {row['audc']:.4f} (QNC "
                      f"{row['qnc']:.3f}); MiniLM `local` {row['local_audc']:.4f}; difference "
                      f"{row['audc'] - row['local_audc']:+.4f}", flush=True)
        finally:
            local.close()
            emb.close()
    ok = all(r["audc"] - r["local_audc"] >= -0.005 for r in out.values())
    print(f"k={layers}: test AUDC within 0.005 of MiniLM on every dataset: {ok}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--test-depth", type=int, metavar="K",
                        help="only the rule's second step: train depth K and measure it on the "
                             "test split next to MiniLM (run it for the k the first step chose)")
    args = parser.parse_args(argv)
    if args.test_depth is not None:
        result = test_depth(args.test_depth, args.datasets, Path(args.data_dir))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    if any(not 1 <= k <= LAYERS for k in args.layers):
        parser.error(f"--layers must be within 1..{LAYERS}")
    results: dict[str, Any] = {"cpu_ms_per_text": {}, "validation": {}}
    with tempfile.TemporaryDirectory() as tmp:
        embedders = {}
        for k in sorted(set(args.layers)):
            path = Path(tmp) / f"l{k}.onnx"
            derive(verified_model_file()[0], path, layers=k)
            embedders[k] = depth_embedder(path, k)
        for label, texts in (("medium", MEDIUM), ("long", LONG)):
            cpu = cpu_per_text(embedders, texts, args.rounds)
            results["cpu_ms_per_text"][label] = cpu
            base = cpu.get(LAYERS)
            print(f"CPU ms per text, {label} prompts: " + ", ".join(
                f"k={k} {ms:.2f}" + (f" (x{ms / base:.2f})" if base else "")
                for k, ms in cpu.items()), flush=True)
        cache_dir = Path(tmp) / "cache"
        for name in args.datasets:
            ds = load(name, Path(args.data_dir), None)
            for k, emb in embedders.items():
                cache = EmbeddingCache(cache_dir, emb.id, emb.dim)
                x = embed_texts(emb, ds.texts, cache).astype(np.float64)
                res = validate(ds, x, emb.id)
                results["validation"].setdefault(name, {})[k] = res
                mean, sd = res["auto_audc"]
                print(f"{name:<20} k={k}  validation AUDC {mean:.4f} +- {sd:.4f} "
                      f"({res['auto']}); " + ", ".join(
                          f"{v} {m:.4f}" for v, (m, _) in res["variants"].items()), flush=True)
        for emb in embedders.values():
            emb.close()
    verdict(results["validation"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def verdict(validation: dict[str, dict[int, dict[str, Any]]]) -> None:
    """The decision rule above, applied."""
    depths = sorted({k for per in validation.values() for k in per})
    if LAYERS not in depths:
        print("no k=6 reference: no verdict")
        return
    for k in depths:
        gaps = {name: per[k]["auto_audc"][0] - per[LAYERS]["auto_audc"][0]
                for name, per in validation.items()}
        ok = all(g >= -0.002 for g in gaps.values())
        print(f"k={k}: validation AUDC minus k=6: " + ", ".join(
            f"{n} {g:+.4f}" for n, g in gaps.items()) + ("  -> passes" if ok else ""))


if __name__ == "__main__":
    raise SystemExit(main())
