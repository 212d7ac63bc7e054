"""Routing-core throughput: the vectorised `Scorer` against a per-head scikit-learn loop.

Both score the published R2-Router release (11 models x 17 Ridge heads = 187 heads, 1024-d:
15 budget quality heads, the unlimited quality head and the unlimited token head per model)
and pick the utility arg-max, in the same process and run:

- `Scorer.decide` (one embedding, the gateway's hot path) and `Scorer.pick` /
  `Router.route_embeddings` (a batch: one GEMM);
- the baseline: `Ridge.predict` called once per head, as the release's code does, with Ridge
  objects rebuilt from the converted arrays (no pickle is loaded for the baseline), then the
  same utility and arg-max.

The release is the shipped `checkpoints/r2-release`, the inputs the 300 parity embeddings in
`tests/data/`, so this runs from a clone alone.

    python benchmarks/bench_core.py [--seconds 2] [--blas-threads N]

`--blas-threads` caps the BLAS (OpenBLAS) thread pool via threadpoolctl: on a small, busy
machine a multi-threaded GEMM can be several times slower than a single-threaded one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _ridge_heads(ckpt: Any) -> list[tuple[int, int, str, Any]]:
    """(model, policy, target, Ridge) for the release's 187 heads, built from the arrays."""
    from sklearn.linear_model import Ridge

    a = ckpt.arrays
    heads = []
    for i in range(len(ckpt.models)):
        for j, pol in enumerate(ckpt.policies):
            targets = ["quality"] + (["tokens"] if pol.budget is None else [])
            for target in targets:
                r = Ridge(alpha=10.0)
                r.coef_ = a[f"{target}_coef"][i, j].copy()
                r.intercept_ = np.float32(a[f"{target}_intercept"][i, j])
                r.n_features_in_ = a[f"{target}_coef"].shape[2]
                heads.append((i, j, target, r))
    return heads


class RidgeLoop:
    """The per-head baseline: one `Ridge.predict` per head, then the same utility arg-max."""

    def __init__(self, ckpt: Any) -> None:
        self.heads = _ridge_heads(ckpt)
        self.m, self.p = len(ckpt.models), len(ckpt.policies)
        self.in_price = np.array([x.input_price_per_million for x in ckpt.models]) / 1e6
        self.out_price = np.array([x.output_price_per_million for x in ckpt.models]) / 1e6
        self.budgets = np.array([pol.budget or 0 for pol in ckpt.policies], dtype=np.float64)
        self.unlimited = np.array([pol.budget is None for pol in ckpt.policies])

    def pick(self, emb: np.ndarray, input_tokens: np.ndarray, lam: float) -> np.ndarray:
        n = emb.shape[0]
        quality = np.zeros((n, self.m, self.p))
        tokens = np.broadcast_to(self.budgets, (n, self.m, self.p)).copy()
        for i, j, target, head in self.heads:
            pred = head.predict(emb)
            if target == "quality":
                quality[:, i, j] = np.clip(pred, 0.0, 1.0)
            else:
                tokens[:, i, j] = np.maximum(pred, 0.0)
        cost = (input_tokens[:, None, None] * self.in_price[None, :, None]
                + tokens * self.out_price[None, :, None])
        util = (1.0 - lam) * quality - lam * cost
        return np.argmax(util.reshape(n, -1), axis=1)


def _time(fn: Callable[[int], object], calls_per_round: int, seconds: float) -> list[float]:
    """Seconds per call, one sample per round, for about `seconds` of wall time."""
    fn(0)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter()
        for _ in range(calls_per_round):
            fn(k)
            k += 1
        samples.append((time.perf_counter() - start) / calls_per_round)
    return samples


def _row(label: str, per_call: list[float], batch: int) -> tuple[str, float]:
    med = statistics.median(per_call)
    per_decision = med / batch
    print(f"  {label:<44} {per_decision * 1e6:>10.1f} us/decision {1 / per_decision:>12,.0f}"
          f" decisions/s  (best {min(per_call) / batch * 1e6:.1f} us)")
    return label, per_decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="cap BLAS threads (default: the library's own choice)")
    args = parser.parse_args(argv)
    if args.blas_threads is None:
        return run(args)
    import sklearn.linear_model  # noqa: F401 - load every BLAS library before capping them
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_info

    from router_core import Router, Scorer, load_checkpoint

    ckpt = load_checkpoint(REPO / "checkpoints" / "r2-release")
    scorer, router, loop = Scorer(ckpt), Router(ckpt), RidgeLoop(ckpt)
    emb = np.load(REPO / "tests" / "data" / "parity_embeddings.npy").astype(np.float32)
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 5000, size=len(emb)).astype(np.float64)
    lam = 0.9

    agree = np.array_equal(scorer.pick(emb, tokens, lam)[0], loop.pick(emb, tokens, lam))
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    blas = [f"{p['internal_api']} {p['num_threads']} threads" for p in threadpool_info()
            if p.get("user_api") == "blas"]
    print(f"BLAS: {', '.join(blas) or 'unknown'}")
    print(f"heads: {len(loop.heads)} Ridge heads; Scorer matrix {scorer._w.shape} "
          f"({len(ckpt.models)} models x {len(ckpt.policies)} policies x 2 targets)")
    print(f"Scorer and Ridge loop pick the same candidate on all {len(emb)} embeddings: {agree}")

    n = len(emb)
    print("\nbatch 1 (one decision per call)")
    _, s_dec = _row("Scorer.decide", _time(
        lambda k: scorer.decide(emb[k % n], int(tokens[k % n]), lam), 200, args.seconds), 1)
    _, s_pick = _row("Scorer.pick", _time(
        lambda k: scorer.pick(emb[k % n: k % n + 1], tokens[k % n: k % n + 1], lam),
        200, args.seconds), 1)
    _, r_one = _row("Ridge.predict loop (187 heads) + arg-max", _time(
        lambda k: loop.pick(emb[k % n: k % n + 1], tokens[k % n: k % n + 1], lam),
        5, args.seconds), 1)
    print(f"  speed-up: decide {r_one / s_dec:.0f}x, pick {r_one / s_pick:.0f}x")

    batch = 256
    big = np.concatenate([emb, emb])[:batch]
    big_tokens = np.concatenate([tokens, tokens])[:batch]
    print(f"\nbatch {batch}")
    _, s_b = _row("Scorer.pick", _time(lambda k: scorer.pick(big, big_tokens, lam), 5,
                                        args.seconds), batch)
    _, s_r = _row("Router.route_embeddings (+ Candidate objects)", _time(
        lambda k: router.route_embeddings(big, big_tokens, lam), 5, args.seconds), batch)
    _, r_b = _row("Ridge.predict loop (187 heads) + arg-max", _time(
        lambda k: loop.pick(big, big_tokens, lam), 2, args.seconds), batch)
    print(f"  speed-up: pick {r_b / s_b:.0f}x, route_embeddings {r_b / s_r:.0f}x")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
