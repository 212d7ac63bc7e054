"""Checkpoints whose heads depend on the embedding, so a trade-off table has many steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import HASH_DIM

from router_core import Checkpoint, EmbedderSpec, ModelSpec, budget_policy, save_checkpoint

PROMPTS = [f"Question {i}: what is {i} times {i + 3}, and why does it matter for topic {i % 7}?"
           for i in range(60)]


def varied_checkpoint(directory: Path, seed: int = 0,
                      models: tuple[str, ...] = ("strong", "weak")) -> Path:
    """Models with prices 10:1 per step; quality and tokens vary with the embedding."""
    rng = np.random.default_rng(seed)
    budgets = (16, 64, 256)
    m, p, d = len(models), len(budgets), HASH_DIM
    base_q = np.array([[0.6, 0.75, 0.85], [0.4, 0.5, 0.55], [0.2, 0.25, 0.3]])[:m]
    arrays = {
        "quality_coef": (rng.normal(0, 0.6, (m, p, d))).astype(np.float32),
        "quality_intercept": base_q.astype(np.float32),
        "tokens_coef": np.zeros((m, p, d), np.float32),
        "tokens_intercept": np.zeros((m, p), np.float32),
    }
    specs = tuple(ModelSpec(n, f"prov/{n}", 10.0 ** (1 - i), 10.0 ** (2 - i))
                  for i, n in enumerate(models))
    ckpt = Checkpoint(embedder=EmbedderSpec("hash", d, True), models=specs,
                      policies=tuple(budget_policy(b) for b in budgets), arrays=arrays,
                      input_tokens="words1.3")
    return save_checkpoint(ckpt, directory)
