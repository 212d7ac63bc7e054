"""Scale-out benchmark (issue 14): worker processes and Redis-shared state, one run.

Starts the HTTP stand-in provider (instant answers), a redis-server, and three gateways, all
on 127.0.0.1 with the hash embedder (a stub: no model on the CPU, so the gateway's own work is
what is measured) and the same features on: sticky sessions (the `user` body field, 100
sessions) and a per-key rate limit (never reached):

- `1w`: `r2 serve` with one process, state in the process;
- `2w`: `r2 serve --workers 2`, state in each process;
- `1w+redis`: one process, state in Redis (`state.redis_url`).

Measured in alternating rounds (so that drift on a shared machine hits all three alike):

1. throughput (closed loop, `--concurrency` clients): the `2w / 1w` ratio;
2. latency at concurrency 1: p50 of `1w+redis` minus p50 of `1w` (the added cost of the shared
   state per request);
3. Redis round trips per request: Redis's own command counters (INFO commandstats) over the
   `1w+redis` rounds, split into request-path commands and the replica's background sync.

    python benchmarks/bench_scale.py [--seconds 8] [--rounds 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from httpload import Result, closed_loop, percentile
from loadenv import MODELS, ROOT, free_port, serve_standin, start, stop_all, write_checkpoint

EMBEDDER = {"kind": "hash", "dim": 64}
#: Commands of the replica's background sync (cooldown mirror, reconnect pings).
SYNC_COMMANDS = {"mget", "ping"}
#: Commands that run inside the rate limiter's script (counted by Redis, not round trips).
IN_SCRIPT = {"incr", "pttl", "pexpire"}


def write_config(work: Path, name: str, standin: int, redis_url: str | None) -> Path:
    config: dict[str, Any] = {
        "checkpoint": str(work / "ckpt"), "embedder": EMBEDDER, "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}",
                         "api_base": f"http://127.0.0.1:{standin}/v1"} for n in MODELS],
        "server": {"max_concurrency": 256, "embed_cache_size": 0,
                   "rate_limits": {"requests": 10**9, "window_s": 60}},
        "sessions": {"body_field": "user", "ttl_s": 600},
    }
    if redis_url:
        config["state"] = {"redis_url": redis_url}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bodies() -> list[bytes]:
    return [json.dumps({"model": "r2-auto", "user": f"session-{i % 100}", "messages": [
        {"role": "user", "content": f"Question {i}: how do I scale a gateway to {i} users?"}]}
    ).encode() for i in range(400)]


def redis_calls(port: int) -> dict[str, int]:
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(stats.split(",")[0].split("=")[1])
    return calls


def served(port: int) -> int:
    """Chat requests the gateway has answered so far (its own counter, warm-up included)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('r2_requests_total{endpoint="/v1/chat/completions"')))


def redis_errors(port: int) -> float:
    """Redis calls the gateway gave up on (timeouts under load count here)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("r2_state_redis_errors_total "))


def run(port: int, concurrency: int, seconds: float) -> Result:
    return asyncio.run(closed_loop("127.0.0.1", port, "/v1/chat/completions", bodies(),
                                   concurrency, seconds, warmup_s=1.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--serve-standin", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (scripts/install.sh)")
    work = Path(tempfile.mkdtemp(prefix="r2-bench-scale-"))
    write_checkpoint(work / "ckpt", EMBEDDER, input_tokens="words1.3")
    up, rport = free_port(), free_port()
    ports = {"1w": free_port(), "2w": free_port(), "1w+redis": free_port()}
    procs: list[subprocess.Popen[Any]] = []
    try:
        procs.append(subprocess.Popen([redis_server, "--port", str(rport), "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL))
        procs.append(start([sys.executable, __file__, "--serve-standin", str(up)],
                           f"http://127.0.0.1:{up}/v1/models"))
        for name, port in ports.items():
            cfg = write_config(work, name, up,
                               f"redis://127.0.0.1:{rport}/0" if "redis" in name else None)
            extra = ["--workers", "2"] if name == "2w" else []
            procs.append(start([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                str(cfg), "--port", str(port), "--log-level", "warning",
                                *extra], f"http://127.0.0.1:{port}/readyz", timeout_s=240))
        rps: dict[str, list[float]] = {n: [] for n in ports}
        lat: dict[str, list[float]] = {"1w": [], "1w+redis": []}
        request_calls = sync_calls = requests = 0
        by_command: dict[str, int] = {}
        redis_seconds = 0.0
        for _ in range(args.rounds):
            for name, port in ports.items():
                before, t0 = redis_calls(rport), time.perf_counter()
                served_before = served(port)
                result = run(port, args.concurrency, args.seconds)
                rps[name].append(result.rps)
                if name in lat:
                    low = run(port, 1, args.seconds)
                    lat[name] += low.latencies()
                    result.samples += low.samples
                if name == "1w+redis":
                    after = redis_calls(rport)
                    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                    for k in ("info", *IN_SCRIPT):
                        delta.pop(k, None)
                    sync_calls += sum(v for k, v in delta.items() if k in SYNC_COMMANDS)
                    request_calls += sum(v for k, v in delta.items() if k not in SYNC_COMMANDS)
                    requests += served(port) - served_before
                    for k, v in delta.items():
                        by_command[k] = by_command.get(k, 0) + v
                    redis_seconds += time.perf_counter() - t0
        ok = {n: sum(v) / len(v) for n, v in rps.items()}
        p50 = {n: percentile(v, 50) * 1000 for n, v in lat.items()}
        print(f"machine: {os.cpu_count()} CPUs, shared with other work (numbers are noisy; "
              "ratios are within this run)")
        print(f"throughput at concurrency {args.concurrency} (req/s, mean of {args.rounds} "
              "rounds): " + ", ".join(f"{n} {v:.0f}" for n, v in ok.items()))
        print(f"workers: 2w / 1w = {ok['2w'] / ok['1w']:.2f}x")
        print(f"redis state: 1w+redis / 1w throughput = {ok['1w+redis'] / ok['1w']:.2f}x")
        print(f"p50 at concurrency 1: 1w {p50['1w']:.2f} ms, 1w+redis {p50['1w+redis']:.2f} ms "
              f"(added {p50['1w+redis'] - p50['1w']:+.2f} ms)")
        print(f"redis round trips per request: {request_calls / requests:.2f} on the request "
              f"path ({requests} requests), plus background sync "
              f"{sync_calls / redis_seconds:.1f}/s per replica")
        print(f"redis calls given up (timeout_s, under this machine's load): "
              f"{redis_errors(ports['1w+redis']):.0f}")
        print("redis round trips by command (request path and sync): " + ", ".join(
            f"{k} {v}" for k, v in sorted(by_command.items(), key=lambda kv: -kv[1])))
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.exit(main())
