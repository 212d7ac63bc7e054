"""Does one 400k-character request slow down the small requests next to it?

Starts the stand-in upstream and `r2 serve` as processes (see `loadenv`), then runs four phases
per round, in the same run, in an order that alternates from round to round:

- `alone`: small `r2-auto` requests from `--concurrency` closed-loop clients;
- `with_large`: the same, with one extra client that always has a 400k-character request in
  flight (closed loop);
- `with_small_extra` (the control): the same, with one extra client that sends a small request
  at the large client's cadence (one per median large-request time, measured in the same run),
  so both "with" phases have the same number of clients and the same request rate;
- `with_window_extra` (the window control): as the control, but its request goes where the
  large one goes and carries a `--window-chars` (2,000) character document: a routing text as
  long as the large request's (the routing window), so its embedding costs the same and only
  what grows with the body's size (reading, parsing, counting, forwarding 400 KB) differs.

The report is the small requests' p50 and p99 per phase, `p99_ratio` (with_large / alone, the
old figure, which also counts the fifth client) and `p99_ratio_vs_control` (with_large /
with_small_extra: what the large request costs over a small one), and `p99_ratio_vs_window`
(with_large / with_window_extra: what the body's size alone costs; 1.0: nothing). With
`--large-path route` the large request goes to `POST /v1/route` (parse, routing text, count,
embed, score: the routing work alone); with `chat` it is also forwarded through LiteLLM to the
stand-in.

    python benchmarks/bench_large_request.py --rounds 4 --requests 150 --large-path chat \
        --base /tmp/base10 --json out.json

`--base DIR` also serves a checkout of another commit (its `gateway` and `router_core` first on
the path) beside this one, and alternates the two gateways round by round under the same
stand-in and load, so before and after are measured in the same run.

The gateway runs with its embedding cache off (`loadenv.write_config`), so every large request
embeds its routing text; `--distinct` sends a different document each time, for runs with the
cache on.

`--loop` measures the event loop itself instead, in one process (hash embedder, in-process ASGI
client, the stand-in as its own process): for small and 400k-character requests on
`--large-path`, the loop thread's CPU time per request (`time.thread_time`: what ran on the loop)
and the longest and p99 gap of a 1 ms ticker; for the large body with its CPU work off the loop
(as served), then on it (parsing and counting inline: the behaviour before), then off again. It
also times each size-dependent step on the large body by itself (`stages`), naming the thread
that runs it when served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import percentile  # noqa: E402
from loadenv import (  # noqa: E402
    MODELS,
    free_port,
    placement,
    serve_standin,
    start,
    stop_all,
    write_checkpoint,
    write_config,
)

HOST = "127.0.0.1"
SMALL = {"model": "r2-auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}
PHASES = ("alone", "with_large", "with_small_extra", "with_window_extra")


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


async def control_loop(client: httpx.AsyncClient, url: str, body: bytes, period: float,
                       stop: asyncio.Event) -> None:
    """A control's extra client: `body` every `period` seconds (the large one's cadence), or
    back to back when one takes longer."""
    while not stop.is_set():
        start = time.perf_counter()
        r = await client.post(url, content=body, headers={"content-type": "application/json"})
        r.raise_for_status()
        wait = period - (time.perf_counter() - start)
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass


class Gateway:
    """One gateway under test and what was measured on it."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.phases: dict[str, list[float]] = {p: [] for p in PHASES}
        self.large: list[float] = []
        self.rounds: list[dict[str, float]] = []

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def run_phase(self, client: httpx.AsyncClient, phase: str,
                        args: argparse.Namespace) -> list[float]:
        url = self.url("/v1/chat/completions")
        large_url = url if args.large_path == "chat" else self.url("/v1/route")
        stop = asyncio.Event()
        extra: asyncio.Future[None] | None = None
        if phase == "with_large":
            extra = asyncio.ensure_future(large_loop(client, large_url, args, stop, self.large))
        elif phase in ("with_small_extra", "with_window_extra"):
            period = statistics.median(self.large) if self.large else 0.0
            # The small control goes where the small requests go; the window control where the
            # large one goes, with a routing text as long as the large one's (the embedder's
            # window), so that only what grows with the body's size differs.
            target, body = ((url, json.dumps(SMALL).encode()) if phase == "with_small_extra"
                            else (large_url, json.dumps(large_body(args.window_chars)).encode()))
            extra = asyncio.ensure_future(control_loop(client, target, body, period, stop))
        if extra is not None:
            await asyncio.sleep(0.05)  # the extra client's first request is in flight
        try:
            return await small_phase(client, url, args.requests, args.concurrency)
        finally:
            stop.set()
            if extra is not None:
                await extra

    async def run_round(self, client: httpx.AsyncClient, index: int,
                        args: argparse.Namespace) -> None:
        # The control needs the large request's cadence: it never runs before a large phase.
        order = PHASES if index % 2 == 0 or not self.large else tuple(reversed(PHASES))
        p99: dict[str, float] = {}
        for phase in order:
            latencies = await self.run_phase(client, phase, args)
            self.phases[phase] += latencies
            p99[phase] = percentile(latencies, 99) * 1000
        self.rounds.append({"p99_ratio": p99["with_large"] / p99["alone"],
                            "p99_ratio_vs_control": p99["with_large"] / p99["with_small_extra"],
                            "p99_ratio_vs_window": p99["with_large"] / p99["with_window_extra"]})

    def report(self, args: argparse.Namespace) -> dict[str, Any]:
        out: dict[str, Any] = {p: {"n": len(v), "p50_ms": percentile(v, 50) * 1000,
                                   "p99_ms": percentile(v, 99) * 1000}
                               for p, v in self.phases.items()}
        out["large_requests"] = {"n": len(self.large), "chars": args.chars,
                                 "path": args.large_path, "distinct": args.distinct,
                                 "p50_ms": percentile(self.large, 50) * 1000}
        for q in ("p99", "p50"):
            out[f"{q}_ratio"] = out["with_large"][f"{q}_ms"] / out["alone"][f"{q}_ms"]
            out[f"{q}_ratio_vs_control"] = (out["with_large"][f"{q}_ms"]
                                            / out["with_small_extra"][f"{q}_ms"])
            out[f"{q}_ratio_vs_window"] = (out["with_large"][f"{q}_ms"]
                                           / out["with_window_extra"][f"{q}_ms"])
        out["per_round"] = self.rounds
        return out


async def measure(gateways: list[Gateway], args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for gw in gateways:
            await small_phase(client, gw.url("/v1/chat/completions"), 20, args.concurrency)
        for index in range(args.rounds):  # gateways alternate too: A B, then B A
            for gw in (gateways if index % 2 == 0 else list(reversed(gateways))):
                await gw.run_round(client, index, args)
    return {gw.name: gw.report(args) for gw in gateways}


# -- the event loop itself (--loop) ---------------------------------------------------------

@asynccontextmanager
async def ticker(interval: float) -> AsyncIterator[list[float]]:
    """A task that sleeps `interval` at a time on the running loop; yields the gaps it saw
    between wake-ups (filled in as it runs, complete on exit)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(interval)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.ensure_future(tick())
    try:
        yield gaps
    finally:
        stop.set()
        await task


async def loop_gaps(client: httpx.AsyncClient, path: str, body: bytes,
                    requests: int) -> dict[str, float]:
    async with ticker(0.001) as gaps:
        cpu, start = time.thread_time(), time.perf_counter()
        for _ in range(requests):
            r = await client.post(path, content=body,
                                  headers={"content-type": "application/json"})
            r.raise_for_status()
        cpu, elapsed = time.thread_time() - cpu, time.perf_counter() - start
    return {"loop_cpu_ms": cpu / requests * 1000, "per_request_ms": elapsed / requests * 1000,
            "max_gap_ms": max(gaps) * 1000, "p99_gap_ms": percentile(gaps, 99) * 1000}


def _median_ms(fn: Callable[[], Any], n: int = 15) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def stages(svc: Any, body: dict[str, Any], raw: bytes) -> dict[str, dict[str, Any]]:
    """Each size-dependent step of serving the large body, timed alone (median ms), and the
    thread it runs on when served."""
    from gateway.app import PARSE_INLINE_BYTES, parse_request
    from gateway.protocol import validate_chat_body
    from gateway.rewrite import apply_policy
    from router_core import budget_policy
    from router_core.text import routing_text

    messages = body["messages"]
    off = len(raw) > PARSE_INLINE_BYTES
    steps: dict[str, tuple[Callable[[], Any], str]] = {
        "parse and validate the body": (lambda: parse_request(raw, 1000, validate_chat_body),
                                        "parse thread" if off else "loop"),
        "routing text": (lambda: routing_text(messages, svc.embedder.max_chars), "loop"),
        "count input tokens": (lambda: svc.token_counter.count(messages), "cpu thread"),
        "rewrite (model, cap, instruction)": (lambda: apply_policy(body, "large",
                                                                   budget_policy(256)), "loop"),
    }
    try:  # the OpenAI SDK's encoding of the upstream body (LiteLLM's `openai` provider)
        from openai._utils._json import openapi_dumps

        upstream = {k: v for k, v in body.items() if k != "model"}
        steps["upstream body JSON (OpenAI SDK)"] = (lambda: openapi_dumps(upstream), "loop")
    except ImportError:
        pass
    return {name: {"median_ms": _median_ms(fn), "runs_on": where}
            for name, (fn, where) in steps.items()}


async def thread_gaps(work: Callable[[], Any], runs: int = 10) -> dict[str, float]:
    """The loop's longest gap while `work` runs in a worker thread, against `work`'s own time:
    work that holds the interpreter lock throughout (a C call such as `json.dumps` of one long
    string) stalls the loop for all of it even off the loop."""
    took: list[float] = []

    def timed() -> None:
        start = time.perf_counter()
        work()
        took.append(time.perf_counter() - start)

    loop = asyncio.get_running_loop()
    async with ticker(0.0005) as gaps:
        for _ in range(runs):
            await loop.run_in_executor(None, timed)
            await asyncio.sleep(0.005)
    return {"work_median_ms": statistics.median(took) * 1000, "max_gap_ms": max(gaps) * 1000}


def run_loop(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import gateway.app as app_module
    import gateway.service as service
    from gateway.app import build_app
    from gateway.config import parse_settings

    up = free_port()
    standin = start([sys.executable, __file__, "--serve-standin", str(up)],
                    f"http://{HOST}:{up}/v1/models", None, args.start_timeout)
    try:
        write_checkpoint(work / "ckpt", {"kind": "hash", "dim": 384})
        settings = parse_settings({
            "checkpoint": str(work / "ckpt"), "embedder": {"kind": "hash", "dim": 384},
            "server": {"embed_cache_size": 0},
            "deployments": [{"name": n, "model": f"openai/up-{n}",
                             "api_base": f"http://{HOST}:{up}/v1"} for n in MODELS]})
        app = build_app(settings)
        path = "/v1/chat/completions" if args.large_path == "chat" else "/v1/route"
        large = large_body(args.chars)
        raw = json.dumps(large).encode()
        small = json.dumps(large_body(100)).encode()
        offload = (service.OFFLOAD_CHARS, app_module.PARSE_INLINE_BYTES)
        n = max(1, args.requests // 10)

        def set_offload(on: bool) -> None:
            service.OFFLOAD_CHARS, app_module.PARSE_INLINE_BYTES = (
                offload if on else (1 << 62, 1 << 62))

        async def measure_all() -> dict[str, Any]:
            out: dict[str, Any] = {"path": path, "chars": args.chars}
            transport = httpx.ASGITransport(app=app)
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=transport, base_url="http://gw", timeout=60) as c:
                await loop_gaps(c, path, raw, 2)  # warm-up
                await loop_gaps(c, path, small, 2)
                for name, body, on in (("small", small, True), ("large_off_loop", raw, True),
                                       ("large_on_loop", raw, False),
                                       ("large_off_loop_again", raw, True),
                                       ("small_again", small, True)):
                    set_offload(on)
                    out[name] = await loop_gaps(c, path, body, n)
                set_offload(True)
                out["stages"] = stages(app.state.service, large, raw)
                # x10 the body, so that the encoding is long against the ticker's resolution
                doc = large_body(10 * args.chars)
                out["json_encode_x10_in_a_thread"] = await thread_gaps(
                    lambda: json.dumps(doc, ensure_ascii=False))
            return out

        report = asyncio.run(measure_all())
        small_cpu = (report["small"]["loop_cpu_ms"] + report["small_again"]["loop_cpu_ms"]) / 2
        for name in ("large_off_loop", "large_on_loop", "large_off_loop_again"):
            report[name]["loop_cpu_over_small_ms"] = report[name]["loop_cpu_ms"] - small_cpu
        report["max_gap_ratio_off_vs_on"] = (report["large_off_loop"]["max_gap_ms"]
                                             / report["large_on_loop"]["max_gap_ms"])
        return report
    finally:
        stop_all([standin])


# -- end to end -----------------------------------------------------------------------------

def start_gateway(config: Path, port: int, cpus: set[int] | None, timeout: float,
                  code: Path | None = None) -> subprocess.Popen[bytes]:
    """`r2 serve` from this checkout, or with `code`'s packages first on the path."""
    cmd = [sys.executable, "-m", "gateway.cli"]
    if code is not None:
        cmd = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
               "from gateway.cli import main; raise SystemExit(main())", str(code)]
    return start([*cmd, "serve", "--config", str(config), "--port", str(port),
                  "--log-level", "warning"], f"http://{HOST}:{port}/readyz", cpus, timeout)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    harness, gateway_cpus = placement(not args.no_pin)
    embedder: dict[str, Any] = ({"kind": "hash", "dim": 384} if args.embedder == "hash"
                                else {"kind": "local"})
    up = free_port()
    config = write_config(work, up, embedder, 256)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start([sys.executable, __file__, "--serve-standin", str(up)],
                           f"http://{HOST}:{up}/v1/models", harness, args.start_timeout))
        gateways = []
        for name, code in (("head", None), ("base", args.base)):
            if name == "base" and code is None:
                continue
            port = free_port()
            procs.append(start_gateway(config, port, gateway_cpus, args.start_timeout, code))
            gateways.append(Gateway(name, port))
        report = asyncio.run(measure(gateways, args))
        report["embedder"] = embedder
        report["load_average_at_end"] = os.getloadavg()
        if args.base is not None:
            report["base"]["code"] = str(args.base)
        return report
    finally:
        stop_all(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="local", choices=["local", "hash"])
    parser.add_argument("--chars", type=int, default=400_000)
    parser.add_argument("--window-chars", type=int, default=2000,
                        help="size of the window control's request: the routing text's "
                             "window (2,000 characters), so its embedding costs the same")
    parser.add_argument("--large-path", default="route", choices=["route", "chat"])
    parser.add_argument("--distinct", action="store_true",
                        help="a different large document each time (the embedding cache misses)")
    parser.add_argument("--loop", action="store_true",
                        help="measure event-loop gaps in one process (see the docstring)")
    parser.add_argument("--base", type=Path, metavar="DIR",
                        help="also serve the checkout in DIR, alternating with this one")
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
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        report.update(run_loop(args, Path(tmp)) if args.loop else run(args, Path(tmp)))
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
