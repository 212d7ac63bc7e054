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
import onnx
import onnxruntime as ort
from bench_embed_stages import LONG, MEDIUM
from embedder_variants import DATASETS, load, validate
from onnx import helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from router_core.embedders.local_onnx import verified_model_file
from router_core.embedders.local_q8 import OnnxMiniLMQ8Embedder
from router_core.embedders.onnx_fuse import LAYERS, fuse_minilm, prune_and_sort
from router_core.training.embed_cache import EmbeddingCache, embed_texts


def truncate_layers(model: onnx.ModelProto, layers: int) -> None:
    """Make layer `layers`'s output the graph's `last_hidden_state` (in place, fused graph).

    The fused MiniLM has 1 + 2 * LAYERS LayerNormalization nodes in order (embeddings, then
    each layer's attention and feed-forward outputs): layer k ends at the (2k)-th after the
    first."""
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    if len(norms) != 1 + 2 * LAYERS:
        raise ValueError(f"expected {1 + 2 * LAYERS} LayerNormalization nodes, found {len(norms)}")
    if layers == LAYERS:
        return
    for node in model.graph.node:
        node.output[:] = ["r2_unused_output" if o == "last_hidden_state" else o
                          for o in node.output]
    model.graph.node.append(helper.make_node("Identity", [norms[2 * layers].output[0]],
                                             ["last_hidden_state"], name="r2_truncate"))
    prune_and_sort(model.graph)


def derive_depth(layers: int, out: Path) -> None:
    """`local_q8.derive`'s recipe with the graph cut after `layers` layers."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(fp32)
        ort.InferenceSession(str(verified_model_file()[0]), sess_options=opts,
                             providers=["CPUExecutionProvider"])
        graph = onnx.load(str(fp32))
        fuse_minilm(graph)
        truncate_layers(graph, layers)
        fused = Path(tmp) / "fused.onnx"
        onnx.save(graph, str(fused))
        quantize_dynamic(fused, out, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=True)


class DepthEmbedder(OnnxMiniLMQ8Embedder):
    """`local-q8`'s pipeline on a graph of `layers` layers (no probe check: no reference)."""

    def __init__(self, model: Path, layers: int) -> None:
        self._path = model
        self.model_id = f"{OnnxMiniLMQ8Embedder.model_id}-l{layers}"
        super().__init__(threads=1)

    def _model_path(self) -> Path:
        return self._path

    def _check_probes(self) -> None:
        pass


def cpu_per_text(embedders: dict[int, DepthEmbedder], texts: Sequence[str],
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    if any(not 1 <= k <= LAYERS for k in args.layers):
        parser.error(f"--layers must be within 1..{LAYERS}")
    results: dict[str, Any] = {"cpu_ms_per_text": {}, "validation": {}}
    with tempfile.TemporaryDirectory() as tmp:
        embedders = {}
        for k in sorted(set(args.layers)):
            path = Path(tmp) / f"l{k}.onnx"
            derive_depth(k, path)
            embedders[k] = DepthEmbedder(path, k)
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
