"""Shared test builders: tiny checkpoints over the hash embedder, gateway settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

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
REPO = Path(__file__).resolve().parents[1]
#: Small fixtures that ship with the repository (parity cases, a few questions).
TEST_DATA = REPO / "tests" / "data"
#: The read-only shared data (`../shared` beside the checkout, or `$R2_SHARED_DIR`): the large
#: outcome datasets (`data/`) and the published release (`upstream-r2router/`).
SHARED = Path(os.environ.get("R2_SHARED_DIR") or REPO.parent / "shared")


def in_ci() -> bool:
    """`CI=true` (what CI services set): missing test data is then a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`, or fail with it under CI, so a CI that lost its data or its
    llama.cpp server cannot go green by skipping."""
    __tracebackhide__ = True  # report the test's line, not this one
    if in_ci():
        pytest.fail(f"{reason} (CI=true: what a test needs must be there, so no skip)",
                    pytrace=False)
    pytest.skip(reason)


def require_shared(*parts: str) -> Path:
    """`SHARED/parts...`, for tests whose point is a number on the shared data; skips (fails
    under CI=true) with one reason when it is absent."""
    __tracebackhide__ = True
    path = SHARED.joinpath(*parts)
    if not path.exists():
        skip_or_fail(f"shared data not found at {path}: set R2_SHARED_DIR to the folder holding "
                     "data/ and upstream-r2router/ (see README, Install and test)")
    return path


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


def run_cli(*argv: str) -> int:
    """`r2 train` / `r2 eval` run in process, with the CLI's own argument parsing."""
    import argparse

    from gateway.commands import eval as eval_cmd
    from gateway.commands import train as train_cmd

    parser = argparse.ArgumentParser(prog="r2")
    sub = parser.add_subparsers(dest="command", required=True)
    train_cmd.register(sub)
    eval_cmd.register(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def serve_without_listening(monkeypatch: pytest.MonkeyPatch, *argv: str) -> Any:
    """Run `r2 serve ARGV` in process up to the point where uvicorn would listen, and return
    the app it built (so the embedder and checkpoint are loaded as on a real start-up)."""
    import argparse

    import uvicorn

    from gateway.commands import serve

    built: list[Any] = []

    class NoServer:
        def __init__(self, config: Any) -> None:
            built.append(config.app)

        def run(self) -> None:
            return None

    monkeypatch.setattr(uvicorn, "Server", NoServer)
    parser = argparse.ArgumentParser(prog="r2")
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", *argv])
    assert args.func(args) == 0
    assert len(built) == 1
    return built[0]
