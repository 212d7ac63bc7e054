"""Load test of the gateway against the HTTP stand-in provider, all on 127.0.0.1.

Starts the stand-in (tests/standin.py) and `r2 serve` as separate processes, then:

1. at concurrency 1, 16 and 64: requests per second, the latency the gateway adds (p50/p99 of
   `r2-auto` through the gateway minus the same of the stand-in called directly with the request
   the gateway would send) and the gateway's resident memory;
2. `--soak-seconds S`: S seconds at 80 % of the measured capacity (open loop): non-2xx count and
   memory growth after warm-up;
3. `--overload`: `--overload-seconds` at 3x the capacity: how much was shed (503 + Retry-After)
   and how fast, whether anything hung, and how long until a request is served again.

Everything is bounded: a fixed duration per phase, a 30 s client timeout, at most 1024
connections. Examples::

    python benchmarks/load.py                                  # levels, about 2 minutes
    python benchmarks/load.py --soak-seconds 600 --overload    # the full reliability run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from httpload import Result, closed_loop, open_loop, percentile

ROOT = Path(__file__).resolve().parents[1]
PATH = "/v1/chat/completions"
MODELS = ("large", "medium", "small")
PROMPTS = [f"Question {i}: explain, in plain words, how {topic} works and why it matters."
           for i, topic in enumerate(["photosynthesis", "a hash map", "TCP congestion control",
                                      "inflation", "vaccination", "a compiler", "tides",
                                      "public-key cryptography"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_standin(port: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import uvicorn
    from standin import StandIn, build_app

    uvicorn.run(build_app(StandIn(port=port)), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def write_checkpoint(directory: Path, embedder: dict[str, Any]) -> None:
    from router_core import (Checkpoint, EmbedderSpec, ModelSpec, budget_policy,
                             make_embedder, save_checkpoint, unlimited_policy)

    emb = make_embedder(embedder)
    spec, dim = EmbedderSpec(emb.id, emb.dim, emb.normalized), emb.dim
    emb.close()
    policies = [budget_policy(b) for b in (64, 256, 1024)] + [unlimited_policy()]
    m, p = len(MODELS), len(policies)
    rng = np.random.default_rng(0)
    arrays = {"quality_coef": rng.normal(0, 0.05, (m, p, dim)).astype(np.float32),
              "quality_intercept": rng.uniform(0.4, 0.9, (m, p)).astype(np.float32),
              "tokens_coef": rng.normal(0, 1, (m, p, dim)).astype(np.float32),
              "tokens_intercept": rng.uniform(30, 400, (m, p)).astype(np.float32)}
    models = tuple(ModelSpec(n, f"prov/{n}", 3.0 / (i + 1), 12.0 / (i + 1))
                   for i, n in enumerate(MODELS))
    save_checkpoint(Checkpoint(spec, models, tuple(policies), arrays,
                               input_tokens="tokenizer"), directory)


def write_config(work: Path, standin_port: int, embedder: dict[str, Any],
                 max_concurrency: int) -> Path:
    write_checkpoint(work / "ckpt", embedder)
    config = {
        "checkpoint": str(work / "ckpt"), "embedder": embedder, "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}",
                         "api_base": f"http://127.0.0.1:{standin_port}/v1"} for n in MODELS],
        "server": {"max_concurrency": max_concurrency, "request_timeout_s": 30},
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(cmd: list[str], ready_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{cmd[:4]} did not become ready")


def bodies(direct: bool) -> list[bytes]:
    """What the client sends the gateway, or what the gateway then sends the provider."""
    out = []
    for prompt in PROMPTS:
        if direct:
            msgs = [{"role": "system", "content": "You MUST respond in 256 tokens or fewer."},
                    {"role": "user", "content": prompt}]
            out.append(json.dumps({"model": "up-large", "messages": msgs, "max_tokens": 256}))
        else:
            out.append(json.dumps({"model": "r2-auto",
                                   "messages": [{"role": "user", "content": prompt}]}))
    return [b.encode() for b in out]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def levels(args: argparse.Namespace, gw_port: int, up_port: int, pid: int) -> list[dict[str, Any]]:
    rows = []
    for c in args.concurrency:
        direct = asyncio.run(closed_loop("127.0.0.1", up_port, PATH, bodies(True), c,
                                         args.level_seconds))
        gw = asyncio.run(closed_loop("127.0.0.1", gw_port, PATH, bodies(False), c,
                                     args.level_seconds))
        d, g = direct.latencies(), gw.latencies()
        rows.append({
            "concurrency": c, "rps": round(gw.rps, 1), "direct_rps": round(direct.rps, 1),
            "non_2xx": gw.non_2xx(), "p50_ms": ms(percentile(g, 50)),
            "p99_ms": ms(percentile(g, 99)),
            "added_p50_ms": ms(percentile(g, 50) - percentile(d, 50)),
            "added_p99_ms": ms(percentile(g, 99) - percentile(d, 99)),
            "rss_mib": round(rss_mib(pid), 1),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def soak(args: argparse.Namespace, port: int, pid: int, rate: float) -> dict[str, Any]:
    warmup = min(60.0, max(5.0, args.soak_seconds * 0.1))
    asyncio.run(open_loop("127.0.0.1", port, PATH, bodies(False), rate, warmup))
    before = rss_mib(pid)
    result = asyncio.run(open_loop("127.0.0.1", port, PATH, bodies(False), rate,
                                   args.soak_seconds))
    after = rss_mib(pid)
    lat = result.latencies()
    return {"rate_rps": round(rate, 1), "seconds": args.soak_seconds,
            "requests": len(result.samples), "non_2xx": result.non_2xx(),
            "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
            "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "memory_growth_pct": round(100 * (after - before) / before, 2)}


def overload(args: argparse.Namespace, port: int, rate: float) -> dict[str, Any]:
    result: Result = asyncio.run(open_loop("127.0.0.1", port, PATH, bodies(False), rate,
                                           args.overload_seconds))
    ended = time.monotonic()
    recovered = None
    while recovered is None and time.monotonic() - ended < 30:
        resp = httpx.post(f"http://127.0.0.1:{port}{PATH}", content=bodies(False)[0],
                          headers={"content-type": "application/json"}, timeout=30)
        if resp.status_code == 200:
            recovered = time.monotonic() - ended
    shed = [s for s in result.samples if s.status in (429, 503)]
    return {"rate_rps": round(rate, 1), "seconds": args.overload_seconds,
            "requests": len(result.samples), "ok": result.count(200), "shed": len(shed),
            "shed_with_retry_after": sum(s.retry_after for s in shed),
            "other": len(result.samples) - result.count(200) - len(shed),
            "hung_or_failed": result.count(0),
            "shed_p50_ms": ms(percentile([s.seconds for s in shed], 50)),
            "shed_p99_ms": ms(percentile([s.seconds for s in shed], 99)),
            "ok_p99_ms": ms(percentile(result.latencies(), 99)),
            "recovered_after_s": None if recovered is None else round(recovered, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", default="local", choices=["local", "hash"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--level-seconds", type=float, default=10.0)
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="the gateway's admission limit (server.max_concurrency)")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--overload", action="store_true")
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--serve-standin", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    embedder = {"kind": "hash", "dim": 384} if args.embedder == "hash" else {"kind": "local"}
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), up_port, embedder, args.max_concurrency)
        try:
            procs.append(start([sys.executable, __file__, "--serve-standin", str(up_port)],
                               f"http://127.0.0.1:{up_port}/v1/models"))
            gw = start([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                        "--port", str(gw_port), "--log-level", "warning"],
                       f"http://127.0.0.1:{gw_port}/readyz")
            procs.append(gw)
            report: dict[str, Any] = {"embedder": args.embedder, "cpus": os.cpu_count(),
                                      "levels": levels(args, gw_port, up_port, gw.pid)}
            capacity = max(row["rps"] for row in report["levels"])
            report["capacity_rps"] = capacity
            if args.soak_seconds:
                report["soak"] = soak(args, gw_port, gw.pid, 0.8 * capacity)
                print(json.dumps(report["soak"]), flush=True)
            if args.overload:
                report["overload"] = overload(args, gw_port, 3 * capacity)
                print(json.dumps(report["overload"]), flush=True)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
