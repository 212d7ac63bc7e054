"""Fitting a static embedder's token table to a teacher (build time only, never while serving).

Tokenlearn-style distillation in closed form: given texts (as token ids) and the teacher's
embedding of each (MiniLM's), find token vectors whose mean over a text's pieces points where
the teacher's embedding points. Two steps, both least squares on the texts only:

1. `linear_map`: one matrix `W` from the model2vec table's space (256-d PCA) to the teacher's
   (384-d), so the start table `table @ W` already lives in the teacher's space;
2. `tokenlearn`: the table closest to that start whose mean-pooled vectors match the targets,
   `min ||M T - Y||^2 + lam ||T - T0||^2`, solved exactly in the texts' dual (one `[texts,
   texts]` system): `T = T0 + M^T (M M^T + lam I)^-1 (Y - M T0)`. Tokens no text uses keep
   their start vector.

Used by `scripts/distill_tokenlearn.py` (a candidate table, written outside the package: it
did not pass the quality rule, docs/embedders.md) and `benchmarks/static_variants.py` (the
validation that chose the recipe). numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import static

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

__all__ = ["count_matrix", "linear_map", "pooled", "tokenlearn"]


def count_matrix(ids: Sequence[Sequence[int]], vocab: int) -> Any:
    """`[texts, vocab]` sparse (CSR) counts of each text's pieces, repeats summed: the serving
    embedder's matrix (`static.count_matrix`) in float64."""
    from scipy.sparse import csr_matrix

    counts = static.count_matrix(ids, vocab, csr_matrix, np.float64)
    counts.sum_duplicates()
    return counts


def pooled(ids: Sequence[Sequence[int]], table: F32) -> F64:
    """Sum of the rows of `table` per text, L2-normalised (what the static embedder serves,
    in float64; a text with no piece stays zero)."""
    out = np.asarray(count_matrix(ids, table.shape[0]) @ table, dtype=np.float64)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 1e-12, norms, 1.0)


def _unit(x: npt.NDArray[Any]) -> F64:
    v: F64 = np.asarray(x, dtype=np.float64)
    out: F64 = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return out


def linear_map(ids: Sequence[Sequence[int]], targets: npt.NDArray[Any], table: F32,
               ridge: float = 1e-2) -> F32:
    """`W` `[table dim, target dim]` with `pooled(text) @ W ~ unit(target)` (ridge
    `ridge * texts`)."""
    x, y = pooled(ids, table), _unit(targets)
    w = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)
    return w.astype(np.float32)


def tokenlearn(ids: Sequence[Sequence[int]], targets: npt.NDArray[Any], init: F32,
               ridge: float = 0.1) -> F32:
    """Token table closest to `init` whose per-text mean vectors match `unit(targets)`
    rescaled to the median norm of `init`'s means (only directions matter: the embedder
    L2-normalises). `lam = ridge` times the mean diagonal of `M M^T`."""
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    counts = count_matrix(ids, init.shape[0])
    lens = np.asarray(counts.sum(axis=1)).ravel()
    means = counts.multiply(1.0 / np.maximum(lens, 1.0)[:, None]).tocsr()
    start = np.asarray(means @ init, dtype=np.float64)
    y = _unit(targets) * float(np.median(np.linalg.norm(start, axis=1)))
    gram = np.asarray((means @ means.T).todense(), dtype=np.float64)
    lam = ridge * float(np.mean(np.diag(gram)))
    dual = np.linalg.solve(gram + lam * np.eye(len(gram)), y - start)
    return (init + np.asarray(means.T @ dual, dtype=np.float64)).astype(np.float32)
