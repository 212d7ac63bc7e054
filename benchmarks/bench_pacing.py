"""Spend pacing under a Poisson load: does realised spend track `pacing.usd_per_hour`?

The real gateway (in-process, on a real port) routes real prompts (the test split of
`mcqa_concise_cot`) with the shipped, calibrated `checkpoints/default` to the HTTP stand-in
upstream of the tests, which answers every request with as many tokens as the request allows
(so realised costs differ from the predicted ones the table was calibrated on: the feedback has
something to correct). Requests go through LiteLLM; spend is measured from the stand-in's usage.

Time is simulated: arrivals are a Poisson process of `--rate` requests per simulated second;
before each request the gateway's pacing clock (`Service.pacing.clock`) is set to its arrival
time, and requests are sent one after another as fast as the gateway answers. The controller
only ever reads that clock, so an hour of load takes a minute or two of wall time.

Embeddings come through the training embedding cache (computed once with the real MiniLM).

    python benchmarks/bench_pacing.py                       # target reachable, then unreachable
    python benchmarks/bench_pacing.py --hours 2 --tau 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT.parent / "shared" / "data" / "mcqa_concise_cot.jsonl.gz"


class CachedEmbedder:
    """The default MiniLM embedder (local-q8) behind the training cache (a hit is a lookup)."""

    def __init__(self) -> None:
        from router_core import make_embedder
        from router_core.training.embed_cache import EmbeddingCache, default_cache_dir

        self.inner = make_embedder({"kind": "local-q8"})
        self.id, self.dim = self.inner.id, self.inner.dim
        self.normalized, self.max_chars = self.inner.normalized, self.inner.max_chars
        self.cache = EmbeddingCache(default_cache_dir(), self.id, self.dim)

    def embed(self, texts: Sequence[str]) -> Any:
        from router_core.training.embed_cache import embed_texts

        return embed_texts(self.inner, texts, self.cache)

    def close(self) -> None:
        """Kept open: every case's gateway closes its embedder on shutdown, and they share one."""

    def shutdown(self) -> None:
        self.inner.close()


def prompts(limit: int) -> list[str]:
    from router_core.training import load_outcomes

    data = load_outcomes([DATA])
    return list(data.subset(data.split_mask("test")).prompts)[:limit]


def run_case(target_usd_per_hour: float, pool: list[str], args: argparse.Namespace,
             embedder: Any, standin_url: str) -> dict[str, Any]:
    from standin import ServerThread

    from gateway.app import build_app
    from gateway.config import parse_settings

    settings = parse_settings({
        "checkpoint": str(ROOT / "checkpoints" / "default"), "embedder": {"kind": "local-q8"},
        "default_tradeoff": args.start, "input_tokens": "tokenizer",
        "pacing": {"usd_per_hour": target_usd_per_hour, "time_constant_s": args.tau},
        "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": standin_url}
                        for n in ("gpt-3.5-turbo", "gpt-4")],
    })
    app = build_app(settings, embedder)
    server = ServerThread(app).start()
    svc = app.state.service
    sim = [0.0]
    origin = svc.pacing.clock()
    svc.pacing.clock = lambda: origin + sim[0]
    rng = np.random.default_rng(args.seed)
    horizon = args.hours * 3600.0
    spend: list[tuple[float, float, float]] = []  # (time, realised usd, tradeoff)
    wall = time.perf_counter()
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        while sim[0] < horizon:
            sim[0] += float(rng.exponential(1.0 / args.rate))
            text = pool[int(rng.integers(len(pool)))]
            r = client.post(url, json={"model": "r2-auto",
                                       "messages": [{"role": "user", "content": text}]})
            r.raise_for_status()
            spec = svc.model_specs[r.headers["x-r2-model"]]
            usage = r.json()["usage"]
            usd = (usage["prompt_tokens"] * spec.input_price_per_million
                   + usage["completion_tokens"] * spec.output_price_per_million) / 1e6
            spend.append((sim[0], usd, float(r.headers["x-r2-tradeoff"])))
    metrics = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    server.stop()
    gauges = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("r2_pacing_")}
    return summarise(target_usd_per_hour, spend, args, gauges, time.perf_counter() - wall)


def summarise(target: float, spend: list[tuple[float, float, float]], args: argparse.Namespace,
              gauges: dict[str, float], wall_s: float) -> dict[str, Any]:
    t = np.array([s[0] for s in spend])
    usd = np.array([s[1] for s in spend])
    knob = np.array([s[2] for s in spend])
    settle = args.settle_taus * args.tau
    horizon = args.hours * 3600.0
    after = t >= settle
    window = args.window_min * 60.0
    windows = []
    for start in np.arange(0.0, horizon, window):
        sel = (t >= start) & (t < start + window)
        windows.append({"start_min": float(start / 60),
                        "usd_per_hour": float(usd[sel].sum() / window * 3600),
                        "tradeoff_mean": float(knob[sel].mean()) if sel.any() else math.nan})
    settled = float(usd[after].sum() / (horizon - settle) * 3600)
    settled_windows = [w["usd_per_hour"] for w in windows if w["start_min"] * 60 >= settle]
    return {
        "target_usd_per_hour": target, "requests": len(spend), "wall_s": wall_s,
        "settled_from_s": settle, "settled_usd_per_hour": settled,
        "settled_ratio": settled / target,
        "worst_settled_window_ratio": (max(abs(w / target - 1) for w in settled_windows) + 1
                                       if settled_windows else math.nan),
        "final_tradeoff": float(knob[-1]), "gauges": gauges, "windows": windows,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1.0, help="requests per simulated second")
    p.add_argument("--hours", type=float, default=1.5, help="simulated hours per case")
    p.add_argument("--tau", type=float, default=300.0, help="pacing time_constant_s")
    p.add_argument("--start", type=float, default=0.5, help="default_tradeoff to start from")
    p.add_argument("--settle-taus", type=float, default=3.0,
                   help="spend is judged after this many time constants")
    p.add_argument("--window-min", type=float, default=10.0, help="reporting window (minutes)")
    p.add_argument("--pool", type=int, default=300, help="distinct test prompts drawn from")
    p.add_argument("--targets", default="auto",
                   help="comma list of USD/hour, or auto: a reachable target (spend at "
                        "tradeoff 0.8 measured in a short run) and 0.3x the cheapest spend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    from standin import start_standin

    from router_core import load_checkpoint

    state, standin_server = start_standin()
    state.default.text = " ".join(["word"] * 4000)  # answer up to the budget the gateway sets
    embedder = CachedEmbedder()
    pool = prompts(args.pool)
    table = load_checkpoint(ROOT / "checkpoints" / "default").tradeoff
    if table is None:
        raise SystemExit("checkpoints/default has no trade-off table: run r2 calibrate first")
    if args.targets == "auto":
        # Realised spend per hour at a fixed trade-off, from the first requests: what the
        # cheapest setting and a mid setting cost with this load (predictions are not used).
        cheapest = _fixed_spend(1.0, pool, args, embedder, state.base_url)
        mid = _fixed_spend(0.8, pool, args, embedder, state.base_url)
        targets = [mid, 0.3 * cheapest]
        print(f"spend at tradeoff 1.0: ${cheapest:.4f}/h, at 0.8: ${mid:.4f}/h")
    else:
        targets = [float(x) for x in args.targets.split(",")]
    results = []
    for target in targets:
        res = run_case(target, pool, args, embedder, state.base_url)
        results.append(res)
        print(f"target ${target:.4f}/h: settled (t >= {res['settled_from_s']:.0f} s) "
              f"${res['settled_usd_per_hour']:.4f}/h = {res['settled_ratio']:.3f} x target; "
              f"worst {args.window_min:g}-min window {res['worst_settled_window_ratio']:.3f}; "
              f"final tradeoff {res['final_tradeoff']:.3f}; unreachable gauge "
              f"{res['gauges'].get('r2_pacing_target_unreachable')}; "
              f"{res['requests']} requests in {res['wall_s']:.0f} s wall")
        for w in res["windows"]:
            print(f"   {w['start_min']:5.0f} min  ${w['usd_per_hour']:.4f}/h  "
                  f"tradeoff {w['tradeoff_mean']:.3f}")
    standin_server.stop()
    embedder.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=1) + "\n")
    return 0


def _fixed_spend(tradeoff: float, pool: list[str], args: argparse.Namespace, embedder: Any,
                 standin_url: str, requests: int = 300) -> float:
    """USD/hour at a fixed trade-off at `args.rate`: the mean realised cost per request."""
    from standin import ServerThread

    from gateway.app import build_app
    from gateway.config import parse_settings

    settings = parse_settings({
        "checkpoint": str(ROOT / "checkpoints" / "default"), "embedder": {"kind": "local-q8"},
        "default_tradeoff": tradeoff, "input_tokens": "tokenizer",
        "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": standin_url}
                        for n in ("gpt-3.5-turbo", "gpt-4")],
    })
    app = build_app(settings, embedder)
    server = ServerThread(app).start()
    svc = app.state.service
    total = 0.0
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        for text in pool[:requests]:
            r = client.post(url, json={"model": "r2-auto",
                                       "messages": [{"role": "user", "content": text}]})
            r.raise_for_status()
            spec = svc.model_specs[r.headers["x-r2-model"]]
            u = r.json()["usage"]
            total += (u["prompt_tokens"] * spec.input_price_per_million
                      + u["completion_tokens"] * spec.output_price_per_million) / 1e6
    server.stop()
    return total / min(requests, len(pool)) * args.rate * 3600


if __name__ == "__main__":
    sys.exit(main())
