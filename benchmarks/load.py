"""Load test of the gateway against the HTTP stand-in provider, all on 127.0.0.1.

Starts the stand-in (tests/standin.py) and `r2 serve` as separate processes, then:

1. levels: at concurrency 1, 16 and 64, with an instant stand-in: requests per second, the
   latency the gateway adds (p50/p99 of `r2-auto` through the gateway minus the same of the
   stand-in called directly with the request the gateway sends) and the gateway's memory;
2. capacity: throughput at the admission limit (`--max-concurrency` clients) with the stand-in
   answering in `--upstream-ms`, as a provider would;
3. `--soak-seconds S`: S seconds at 80 % of that capacity (open loop): non-2xx count and memory
   growth after warm-up;
4. `--overload`: `--overload-seconds` at 3x the capacity: how much was shed (503 + Retry-After)
   and how fast, whether anything hung, and how long until a request is served again.

Everything is bounded: a fixed duration per phase, a 30 s client timeout, at most 1024
connections, 127.0.0.1 only. Examples::

    python benchmarks/load.py                                  # levels and capacity, ~2 min
    python benchmarks/load.py --soak-seconds 600 --overload    # the full reliability run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from httpload import Conn, Result, closed_loop, open_loop, percentile
from loadenv import (
    cpu_seconds,
    free_port,
    placement,
    rss_mib,
    serve_standin,
    set_upstream_delay,
    start,
    stop_all,
    write_config,
)

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
PROMPTS = [f"Question {i}: explain, in plain words, how {topic} works and why it matters."
           for i, topic in enumerate(["photosynthesis", "a hash map", "TCP congestion control",
                                      "inflation", "vaccination", "a compiler", "tides",
                                      "public-key cryptography"])]


def bodies(direct: bool) -> list[bytes]:
    """What a client sends the gateway, or (direct) what the gateway then sends the provider."""
    out = []
    for prompt in PROMPTS:
        if direct:
            msgs = [{"role": "system", "content": "You MUST respond in 256 tokens or fewer."},
                    {"role": "user", "content": prompt}]
            out.append({"model": "up-large", "messages": msgs, "max_tokens": 256})
        else:
            out.append({"model": "r2-auto", "messages": [{"role": "user", "content": prompt}]})
    return [json.dumps(b).encode() for b in out]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def levels(args: argparse.Namespace, gw: int, up: int, pid: int) -> list[dict[str, Any]]:
    set_upstream_delay(up, 0)
    asyncio.run(closed_loop(HOST, gw, PATH, bodies(False), 4, 2.0))  # warm-up, not reported
    rows = []
    for c in args.concurrency:
        direct = asyncio.run(closed_loop(HOST, up, PATH, bodies(True), c, args.level_seconds))
        cpu = cpu_seconds(pid)
        through = asyncio.run(closed_loop(HOST, gw, PATH, bodies(False), c, args.level_seconds,
                                          warmup_s=0.0))
        cpu = cpu_seconds(pid) - cpu
        d, g = direct.latencies(), through.latencies()
        rows.append({
            "concurrency": c, "rps": round(through.rps, 1), "direct_rps": round(direct.rps, 1),
            # steadier than rates on a shared machine; one idle core serves 1000 / this per s
            "gateway_cpu_ms_per_request": round(1000 * cpu / max(1, len(through.samples)), 1),
            "non_2xx": through.non_2xx(), "p50_ms": ms(percentile(g, 50)),
            "p99_ms": ms(percentile(g, 99)),
            "added_p50_ms": ms(percentile(g, 50) - percentile(d, 50)),
            "added_p99_ms": ms(percentile(g, 99) - percentile(d, 99)),
            "rss_mib": round(rss_mib(pid), 1),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def capacity(args: argparse.Namespace, gw: int, up: int) -> dict[str, Any]:
    set_upstream_delay(up, args.upstream_ms)
    result = asyncio.run(closed_loop(HOST, gw, PATH, bodies(False), args.max_concurrency,
                                     args.level_seconds))
    lat = result.latencies()
    return {"upstream_ms": args.upstream_ms, "concurrency": args.max_concurrency,
            "rps": round(result.rps, 1), "non_2xx": result.non_2xx(),
            "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99))}


def soak(args: argparse.Namespace, gw: int, pid: int, rate: float) -> dict[str, Any]:
    warmup = min(60.0, max(5.0, args.soak_seconds * 0.1))
    asyncio.run(open_loop(HOST, gw, PATH, bodies(False), rate, warmup))
    before = rss_mib(pid)
    result = asyncio.run(open_loop(HOST, gw, PATH, bodies(False), rate, args.soak_seconds))
    after = rss_mib(pid)
    lat = result.latencies()
    return {"rate_rps": round(rate, 1), "seconds": args.soak_seconds,
            "requests": len(result.samples), "non_2xx": result.non_2xx(),
            "failures": result.failures(),
            "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
            "rss_before_mib": round(before, 1), "rss_after_mib": round(after, 1),
            "memory_growth_pct": round(100 * (after - before) / before, 2)}


async def _overload(gw: int, rate: float, seconds: float) -> tuple[Result, float | None]:
    """Offer `rate` for `seconds`; as soon as arrivals stop, probe until one is served."""
    load = asyncio.create_task(open_loop(HOST, gw, PATH, bodies(False), rate, seconds))
    await asyncio.sleep(seconds)
    ended, recovered, probe = time.perf_counter(), None, Conn(HOST, gw)
    while recovered is None and time.perf_counter() - ended < 30:
        sent = time.perf_counter()
        status, _ = await probe.post(PATH, bodies(False)[0])
        if status == 200:
            recovered = sent - ended  # admitted from then on (its answer takes upstream-ms)
        else:
            await asyncio.sleep(0.05)
    probe.close()
    return await load, recovered


def overload(args: argparse.Namespace, gw: int, rate: float) -> dict[str, Any]:
    result, recovered = asyncio.run(_overload(gw, rate, args.overload_seconds))
    shed = [s for s in result.samples if s.status in (429, 503)]
    shed_s = [s.seconds for s in shed]
    return {"rate_rps": round(rate, 1), "seconds": args.overload_seconds,
            "requests": len(result.samples), "ok": result.count(200), "shed": len(shed),
            "shed_with_retry_after": sum(s.retry_after for s in shed),
            "other_status": len(result.samples) - result.count(200) - len(shed),
            "hung_or_failed": result.count(0), "failures": result.failures(),
            "shed_p50_ms": ms(percentile(shed_s, 50)), "shed_p99_ms": ms(percentile(shed_s, 99)),
            "ok_p99_ms": ms(percentile(result.latencies(), 99)),
            "recovered_after_s": None if recovered is None else round(recovered, 2)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    harness, gateway = placement(not args.no_pin)
    embedder: dict[str, Any] = {"kind": "hash", "dim": 384}
    if args.embedder == "local":
        # ONNX Runtime sizes its pool by os.cpu_count(), not the CPUs the process may use:
        # pinned to one CPU, two spinning threads would fight the event loop for it.
        threads = args.embedder_threads or (len(gateway) if gateway else None)
        embedder = {"kind": "local", **({"threads": threads} if threads else {})}
    up, gw = free_port(), free_port()
    config = write_config(work, up, embedder, args.max_concurrency, args.embed_cache_size)
    if harness:
        os.sched_setaffinity(0, harness)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([sys.executable, __file__, "--serve-standin", str(up)],
                           f"http://{HOST}:{up}/v1/models", harness))
        procs.append(start([sys.executable, "-m", "gateway.cli", "serve", "--config",
                            str(config), "--port", str(gw), "--log-level", "warning"],
                           f"http://{HOST}:{gw}/readyz", gateway))
        pid = procs[-1].pid
        report: dict[str, Any] = {"embedder": embedder, "cpus": os.cpu_count(),
                                  "gateway_cpus": sorted(gateway) if gateway else "any",
                                  "loadavg_before": os.getloadavg()[0]}
        report["levels"] = levels(args, gw, up, pid)
        report["capacity"] = capacity(args, gw, up)
        print(json.dumps(report["capacity"]), flush=True)
        rps = report["capacity"]["rps"]
        if args.soak_seconds:
            report["soak"] = soak(args, gw, pid, 0.8 * rps)
            print(json.dumps(report["soak"]), flush=True)
        if args.overload:
            report["overload"] = overload(args, gw, 3 * rps)
            print(json.dumps(report["overload"]), flush=True)
        report["loadavg_after"] = os.getloadavg()[0]
        return report
    finally:
        stop_all(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load test of the gateway (see the docstring).")
    parser.add_argument("--embedder", default="local", choices=["local", "hash"])
    parser.add_argument("--embedder-threads", type=int,
                        help="ONNX Runtime threads of the local embedder (default: the "
                        "gateway's CPUs when pinned, else all)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--level-seconds", type=float, default=10.0)
    parser.add_argument("--max-concurrency", type=int, default=64,
                        help="the gateway's admission limit (server.max_concurrency)")
    parser.add_argument("--upstream-ms", type=float, default=1000.0,
                        help="stand-in answer time for the capacity, soak and overload phases")
    parser.add_argument("--embed-cache-size", type=int, default=0,
                        help="server.embed_cache_size (default 0: the benchmark's prompts "
                             "repeat, so a cache would measure hits, not the embedder)")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--overload", action="store_true")
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--serve-standin", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
