"""Does one 400k-character request slow down the small requests next to it?

Starts the stand-in upstream and `r2 serve` as processes (see `loadenv`), then alternates two
phases in the same run: small `r2-auto` requests from `--concurrency` closed-loop clients
alone, and the same with one 400k-character request always in flight beside them. The report
is the small requests' p50 and p99 in each phase and the ratio with/without (1.0: no effect).
Token counting of the large request runs off the event loop (`Service.route`). With
`--large-path route` the large request goes to `POST /v1/route` (parse, routing text, count,
embed, score: the routing work alone); with `chat` it is also forwarded through LiteLLM, whose
serialisation of a 400k-character body runs on the loop.

    python benchmarks/bench_large_request.py --rounds 3 --requests 200 --json out.json

The gateway runs with its embedding cache off (`loadenv.write_config`), so every large request
embeds its routing text; `--distinct` sends a different document each time, for runs with the
cache on.

`--loop` measures the event loop itself instead, in one process (hash embedder, in-process
ASGI client): the longest and p99 gap of a 1 ms ticker while 400k-character requests are routed,
with large requests counted off the loop (as served) and, in the same run, on it (the
behaviour before); the gap is how long every other request on the loop had to wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import percentile  # noqa: E402
from loadenv import free_port, placement, serve_standin, start, stop_all, write_config  # noqa: E402

HOST = "127.0.0.1"
SMALL = {"model": "r2-auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}


def large_body(chars: int, serial: int | None = None) -> dict[str, Any]:
    head = "" if serial is None else f"Document {serial}: "
    text = (head + "The quarterly report lists revenue, costs and margins for every region. "
            * (chars // 70 + 1))[:chars]
    return {"model": "r2-auto", "messages": [
        {"role": "system", "content": "Summarise the document."},
        {"role": "user", "content": text}]}


async def small_phase(client: httpx.AsyncClient, url: str, requests: int,
                      concurrency: int) -> list[float]:
    latencies: list[float] = []
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            r = await client.post(url, json=SMALL)
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def large_loop(client: httpx.AsyncClient, url: str, args: argparse.Namespace,
                     stop: asyncio.Event, done: list[float]) -> None:
    body = json.dumps(large_body(args.chars)).encode()
    while not stop.is_set():
        if args.distinct:  # a different document each time: the embedding cache misses
            body = json.dumps(large_body(args.chars, len(done))).encode()
        start = time.perf_counter()
        r = await client.post(url, content=body, headers={"content-type": "application/json"})
        r.raise_for_status()
        done.append(time.perf_counter() - start)


async def measure(port: int, args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://{HOST}:{port}/v1/chat/completions"
    large_url = url if args.large_path == "chat" else f"http://{HOST}:{port}/v1/route"
    phases: dict[str, list[float]] = {"alone": [], "with_large": []}
    large_times: list[float] = []
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await small_phase(client, url, 20, args.concurrency)  # warm-up
        for _ in range(args.rounds):
            phases["alone"] += await small_phase(client, url, args.requests, args.concurrency)
            stop = asyncio.Event()
            big = asyncio.ensure_future(large_loop(client, large_url, args, stop, large_times))
            await asyncio.sleep(0.05)  # the first large request is in flight
            phases["with_large"] += await small_phase(client, url, args.requests,
                                                      args.concurrency)
            stop.set()
            await big
    out: dict[str, Any] = {name: {"n": len(v), "p50_ms": percentile(v, 50) * 1000,
                                  "p99_ms": percentile(v, 99) * 1000}
                           for name, v in phases.items()}
    out["large_requests"] = {"n": len(large_times), "chars": args.chars,
                             "path": args.large_path, "distinct": args.distinct,
                             "p50_ms": percentile(large_times, 50) * 1000}
    out["p99_ratio"] = out["with_large"]["p99_ms"] / out["alone"]["p99_ms"]
    out["p50_ratio"] = out["with_large"]["p50_ms"] / out["alone"]["p50_ms"]
    return out


async def loop_gaps(app: Any, body: bytes, requests: int) -> dict[str, float]:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60) as c:
        ticker = asyncio.ensure_future(tick())
        start = time.perf_counter()
        for _ in range(requests):
            r = await c.post("/v1/route", content=body,
                             headers={"content-type": "application/json"})
            r.raise_for_status()
        elapsed = time.perf_counter() - start
        stop.set()
        await ticker
    return {"max_gap_ms": max(gaps) * 1000, "p99_gap_ms": percentile(gaps, 99) * 1000,
            "per_request_ms": elapsed / requests * 1000}


def run_loop(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from loadenv import MODELS, write_checkpoint
    from standin import start_standin

    import gateway.service as service
    from gateway.app import build_app
    from gateway.config import parse_settings

    state, server = start_standin()
    try:
        write_checkpoint(work / "ckpt", {"kind": "hash", "dim": 384})
        settings = parse_settings({
            "checkpoint": str(work / "ckpt"), "embedder": {"kind": "hash", "dim": 384},
            "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": state.base_url}
                            for n in MODELS]})
        app = build_app(settings)
        body = json.dumps(large_body(args.chars)).encode()

        async def both() -> dict[str, Any]:
            async with app.router.lifespan_context(app):
                await loop_gaps(app, body, 1)  # warm-up
                out = {}
                for name, limit in (("off_loop", service.OFFLOAD_CHARS), ("on_loop", 1 << 62),
                                    ("off_loop_again", service.OFFLOAD_CHARS)):
                    service.OFFLOAD_CHARS = limit
                    out[name] = await loop_gaps(app, body, args.requests // 20 or 1)
                return out

        report = asyncio.run(both())
        report["max_gap_ratio_off_vs_on"] = (report["off_loop"]["max_gap_ms"]
                                             / report["on_loop"]["max_gap_ms"])
        return report
    finally:
        server.stop()


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    harness, gateway = placement(not args.no_pin)
    embedder: dict[str, Any] = ({"kind": "hash", "dim": 384} if args.embedder == "hash"
                                else {"kind": "local"})
    up, gw = free_port(), free_port()
    config = write_config(work, up, embedder, 256)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([sys.executable, __file__, "--serve-standin", str(up)],
                           f"http://{HOST}:{up}/v1/models", harness, args.start_timeout))
        procs.append(start([sys.executable, "-m", "gateway.cli", "serve", "--config",
                            str(config), "--port", str(gw), "--log-level", "warning"],
                           f"http://{HOST}:{gw}/readyz", gateway, args.start_timeout))
        report = asyncio.run(measure(gw, args))
        report["embedder"] = embedder
        return report
    finally:
        stop_all(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="local", choices=["local", "hash"])
    parser.add_argument("--chars", type=int, default=400_000)
    parser.add_argument("--large-path", default="route", choices=["route", "chat"])
    parser.add_argument("--distinct", action="store_true",
                        help="a different large document each time (the embedding cache misses)")
    parser.add_argument("--loop", action="store_true",
                        help="measure event-loop gaps in one process (see the docstring)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--start-timeout", type=float, default=300,
                        help="seconds to wait for the processes to be ready")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON")
    parser.add_argument("--serve-standin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        report = run_loop(args, Path(tmp)) if args.loop else run(args, Path(tmp))
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
