"""Shared test builders: tiny checkpoints over the hash embedder, gateway settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from router_core import (
    Checkpoint,
    EmbedderSpec,
    ModelSpec,
    Policy,
    budget_policy,
    save_checkpoint,
    unlimited_policy,
)

HASH_DIM = 64
#: The read-only shared data (`../shared` beside the checkout, or `$R2_SHARED_DIR`).
SHARED = Path(os.environ.get("R2_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


def tiny_checkpoint(directory: Path, models: tuple[str, ...] = ("strong", "weak"),
                    budgets: tuple[int, ...] = (10, 100), dim: int = HASH_DIM,
                    quality: dict[str, list[float]] | None = None,
                    extra_policies: tuple[Policy, ...] = (),
                    prices: dict[str, tuple[float, float]] | None = None) -> Path:
    """A checkpoint whose heads ignore the embedding: quality per (model, policy) is constant.

    `quality[model]` lists one value per policy (budgets, then unlimited, then extras).
    """
    policies = [budget_policy(b) for b in budgets] + [unlimited_policy(), *extra_policies]
    m, p = len(models), len(policies)
    q = np.zeros((m, p), np.float32)
    for i, name in enumerate(models):
        default = [0.9 - 0.3 * i] * p
        q[i] = (quality or {}).get(name, default)
    prices = prices or {}
    specs = tuple(ModelSpec(n, f"prov/{n}", *prices.get(n, (1.0 * (m - i), 2.0 * (m - i))))
                  for i, n in enumerate(models))
    ckpt = Checkpoint(
        embedder=EmbedderSpec("hash", dim, True), models=specs, policies=tuple(policies),
        arrays={"quality_coef": np.zeros((m, p, dim), np.float32), "quality_intercept": q,
                "tokens_coef": np.zeros((m, p, dim), np.float32),
                "tokens_intercept": np.full((m, p), 50.0, np.float32)},
        input_tokens="words1.3",
    )
    return save_checkpoint(ckpt, directory)


def gateway_settings(ckpt: Path, base_url: str, models: tuple[str, ...] = ("strong", "weak"),
                     timeout_s: float = 5.0, **server: Any) -> dict[str, Any]:
    return {
        "checkpoint": str(ckpt),
        "embedder": {"kind": "hash", "dim": HASH_DIM},
        "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": base_url,
                         "timeout_s": timeout_s} for n in models],
        "server": server,
    }
