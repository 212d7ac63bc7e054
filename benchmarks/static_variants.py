"""Validation AUDC of static (bag-of-token-vectors) embedder variants next to MiniLM, on the
train split of every shared dataset (docs/embedders.md, "Can a static embedder be the
default?").

Each row is an embedder; each column a dataset; a cell is what `r2 train --variant auto`
reports as the chosen variant's validation AUDC: 5 folds by query (seed 0, `r2 train`'s), every
auto head variant fitted on the other folds and scored on the held-out fold, the best mean
over the variants. The test split is never read.

Variants that learn from text (`tl-*`: token vectors fitted so that the pooled static vector
of a text regresses onto MiniLM's embedding of it, tokenlearn-style) are distilled once per
fold of each dataset, on the train-split prompts of all three datasets WITHOUT that fold's
queries (held out by query id and by text, in every dataset), so a validation prompt never
shaped the table it is embedded with. The MiniLM targets come from the shared embedding cache.

    nice -n 5 python benchmarks/static_variants.py [--only minilm,static,tl-ridge0.1] [--data NAME]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from router_core.checkpoint import EmbedderSpec
from router_core.embedders import make_embedder
from router_core.embedders.static import StaticEmbedder
from router_core.embedders.static_fit import count_matrix, linear_map, pooled, tokenlearn
from router_core.text import routing_text, user_messages
from router_core.training.coverage import DEFAULT_MIN_ARM_ROWS, drop_sparse_arms
from router_core.training.dataset import OutcomeData, load_outcomes
from router_core.training.evaluate import r2_audc
from router_core.training.policyfile import load_policy_file
from router_core.training.trainer import (
    Prepared,
    arms_of,
    fit_policies,
    make_checkpoint,
    predict_arms,
    prepare,
    query_folds,
)
from router_core.training.variants import AUTO_VARIANTS, VARIANTS, applicable, fit_variant

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
DATASETS = ("mcqa_concise_cot", "mcqa_nine_models", "routerbench_subset")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FOLDS = 5


@dataclass
class Train:
    """One dataset's train split, prepared as `r2 train` prepares it."""

    name: str
    data: OutcomeData
    texts: list[str]
    prep: Prepared
    policies: list[Any]
    fold_of: npt.NDArray[np.intp]


def load_train(name: str, minilm: object) -> Train:
    everything = load_outcomes([SHARED / f"{name}.jsonl.gz"])
    everything = drop_sparse_arms(everything, DEFAULT_MIN_ARM_ROWS, False, lambda _: None)
    data = everything.subset(everything.split_mask("train"))
    prep = prepare(data, minilm, None, progress=False)  # type: ignore[arg-type]
    fit, _ = fit_policies(data, prep,
                          load_policy_file(ROOT / "checkpoints" / name / "policies.yaml"))
    texts = [routing_text(user_messages(p), 2000) for p in data.prompts]
    return Train(name, data, texts, prep, list(fit.policies), query_folds(data.n_queries, FOLDS))


def validate(ds: Train, embeddings_for_fold: Callable[[int], F64]) -> dict[str, float]:
    """Mean validation AUDC per auto head variant (folds as `r2 train`'s)."""
    data = ds.data
    variants = [VARIANTS[v] for v in AUTO_VARIANTS
                if applicable(VARIANTS[v], data.policies, data.score)]
    tokens = data.token_targets()
    scores: dict[str, list[float]] = {v.name: [] for v in variants}
    for k in range(FOLDS):
        emb = embeddings_for_fold(k)
        spec = EmbedderSpec("x", emb.shape[1], True)
        fit_rows, val_rows = ds.fold_of != k, (ds.fold_of == k) & data.complete
        val = data.subset(val_rows)
        arms = arms_of(val)
        for v in variants:
            heads = fit_variant(v, emb[fit_rows], data.score[fit_rows], tokens[fit_rows],
                                ds.prep.input_tokens[fit_rows])
            ckpt = make_checkpoint(heads, data, ds.policies, spec,
                                   input_scales=ds.prep.input_scales)
            q, c = predict_arms(ckpt, val, emb[val_rows], ds.prep.input_tokens[val_rows])
            scores[v.name].append(r2_audc(q, c, arms))
    return {k: float(np.mean(v)) for k, v in scores.items()}


# ---- static encoders over a token table -------------------------------------------------

@dataclass
class Corpus:
    """Distillation texts (token ids), their MiniLM targets and the query ids they came from."""

    ids: list[list[int]]
    targets: F32
    keys: list[set[str]]  # query ids and texts that identify each corpus text

    def without(self, drop: set[str]) -> Corpus:
        keep = [i for i, k in enumerate(self.keys) if not (k & drop)]
        return Corpus([self.ids[i] for i in keep], self.targets[keep], [self.keys[i] for i in keep])


# ---- variants ---------------------------------------------------------------------------

Fitter = Callable[[Corpus, F32], F32]  # corpus, base table -> table


def learned(ridge: float) -> Fitter:
    def fit(corpus: Corpus, table: F32) -> F32:
        init = table @ linear_map(corpus.ids, corpus.targets, table)
        return tokenlearn(corpus.ids, corpus.targets, init, ridge)
    return fit


def with_base(fitter: Fitter) -> Fitter:
    """The fitted table side by side with the model2vec one (one wider table, both halves
    scaled to the same median pooled norm): richer features for the same heads."""
    def fit(corpus: Corpus, table: F32) -> F32:
        fitted = fitter(corpus, table)
        counts = count_matrix(corpus.ids, table.shape[0])
        ratio = (np.median(np.linalg.norm(counts @ fitted, axis=1))
                 / np.median(np.linalg.norm(counts @ table, axis=1)))
        return np.hstack([table * np.float32(ratio), fitted])
    return fit


LEARNED: dict[str, Fitter] = {
    "tl-linear": lambda c, t: t @ linear_map(c.ids, c.targets, t),
    "tl-ridge0.03": learned(0.03),
    "tl-ridge0.1": learned(0.1),
    "tl-ridge0.3": learned(0.3),
    "tl-ridge1": learned(1.0),
    "tl-ridge10": learned(10.0),
    "tl-ridge0.1+m2v": with_base(learned(0.1)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma list of rows (default: all)")
    parser.add_argument("--data", help="comma list of datasets (default: all three)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else ["minilm", "static", *LEARNED]
    datasets = args.data.split(",") if args.data else list(DATASETS)
    minilm = make_embedder({"kind": "local"})
    static = StaticEmbedder()
    try:
        sets = {n: load_train(n, minilm) for n in DATASETS}
    finally:
        minilm.close()
    table = static._table
    assert table is not None
    ids = {n: static._encode(s.texts) for n, s in sets.items()}
    # The distillation corpus: every train prompt of every dataset, once per text.
    seen: dict[str, int] = {}
    corpus = Corpus([], np.zeros((0, 384), dtype=np.float32), [])
    rows: list[F32] = []
    for n, s in sets.items():
        for i, text in enumerate(s.texts):
            j = seen.get(text)
            if j is None:
                seen[text] = len(corpus.ids)
                corpus.ids.append(ids[n][i])
                corpus.keys.append({s.data.query_ids[i], text})
                rows.append(s.prep.embeddings[i].astype(np.float32))
            else:
                corpus.keys[j].add(s.data.query_ids[i])
    corpus.targets = np.stack(rows)
    table_rows: dict[str, dict[str, float]] = {}
    for name in names:
        started = time.perf_counter()
        row: dict[str, float] = {}
        for n in datasets:
            s = sets[n]
            if name == "minilm":
                emb = s.prep.embeddings
                res = validate(s, lambda _k, e=emb: e)  # type: ignore[misc]
            elif name == "static":
                emb = pooled(ids[n], table)
                res = validate(s, lambda _k, e=emb: e)  # type: ignore[misc]
            else:
                def fold_emb(k: int, s: Train = s, n: str = n,
                             fitter: Fitter = LEARNED[name]) -> F64:
                    held = s.fold_of == k
                    drop = {s.data.query_ids[i] for i in np.flatnonzero(held)}
                    drop |= {s.texts[i] for i in np.flatnonzero(held)}
                    fitted = fitter(corpus.without(drop), table)
                    return pooled(ids[n], fitted)
                res = validate(s, fold_emb)
            best = max(res, key=lambda v: res[v])
            row[n] = round(res[best], 4)
            row[f"{n}:variant"] = best  # type: ignore[assignment]
        table_rows[name] = row
        print(json.dumps({name: row, "seconds": round(time.perf_counter() - started)}),
              flush=True)
    print("\n| embedder | " + " | ".join(datasets) + " |")
    print("| --- |" + " --- |" * len(datasets))
    ref = table_rows.get("minilm")
    for name, row in table_rows.items():
        cells = [f"{row[n]:.4f}" + (f" ({row[n] - ref[n]:+.4f})" if ref and name != "minilm"
                                    else "") for n in datasets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
