"""Cheap request features next to the embedding, computed the same way in training and serving.

A head may read, besides the prompt embedding, a few numbers the scorer already has. Today
that is the input length: `log_input_tokens` = `(log1p(input_tokens) - 5) / 1.5`, about -1..2
for prompts of 20..2,000 tokens (the centre and spread are fixed, so the checkpoint stores
nothing but the feature's name). Such a head stays linear in `embedding ++ features`, so the
scorer still scores every head with one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
FEATURES = ("log_input_tokens",)


def input_features(names: Sequence[str], input_tokens: npt.ArrayLike) -> F64:
    """`[N, len(names)]` feature matrix for `input_tokens` `[N]`."""
    tokens = np.asarray(input_tokens, dtype=np.float64).reshape(-1)
    columns = []
    for name in names:
        if name == "log_input_tokens":
            columns.append((np.log1p(np.maximum(tokens, 0.0)) - 5.0) / 1.5)
        else:
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
    return np.stack(columns, axis=1) if columns else np.zeros((tokens.size, 0))
