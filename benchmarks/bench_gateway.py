"""What the gateway costs: the same stand-in provider called directly, through bare LiteLLM, and
through the gateway; plus the micro-batcher's gain and a per-call profile of LiteLLM.

One run, one HTTP stand-in provider (tests/standin.py under uvicorn) on 127.0.0.1. Each row is a
closed loop of C workers sending chat completions back to back for `--seconds` (or at most
`--max-requests`), after a one-second warm-up; a row gives requests per second and the latency
p50/p99 its callers saw. Scenarios:

- `direct`: the lean keep-alive HTTP/1.1 client of `httpload.py` straight to the stand-in (the
  floor: the provider plus one client). Every HTTP scenario uses that client, one connection per
  worker (httpx's connection pool costs O(connections) per request: ~6 ms of CPU a request at 64).
- `litellm-default`: a `litellm.Router` over the deployment, LiteLLM untuned (as imported).
- `litellm-gateway-cfg`: the gateway's own `Upstream(settings, prices).router`, so the same
  `configure_litellm()` and the same `Router(...)` arguments (deployment prices included) as the
  gateway, without the gateway.
- `gateway-named`: HTTP to `r2 serve` naming a deployment (no routing): the HTTP hop and LiteLLM.
- `gateway-hash`: the same server with model `r2-auto` and the hash (stub) embedder: HTTP,
  micro-batched embedding, the routing decision, the rewrite and LiteLLM.
- `gateway-local`: the same with the real local embedder (all-MiniLM-L6-v2 int8, ONNX), its
  ONNX Runtime threads set to every CPU the gateway may use (the default before the serving rule).
- `gateway-local-serving`: the same with `threads` unset, so the serving rule applies (one CPU
  fewer than the gateway may use, at least one; `router_core.embedders.serving_config`).
- `gateway-local-cache`: `gateway-local-serving` with the embedding cache on. The twelve prompts
  repeat, so after the first round every routing text is a hit: the cache's ceiling, not a
  typical hit rate. Every other gateway runs with `embed_cache_size: 0`, so they measure the
  embedder on every request as before the cache.

Every scenario runs in its own process (LiteLLM's configuration is process-global). The process
that talks to the provider (the HTTP client, the LiteLLM caller or the gateway) is pinned to the
last CPU; the stand-in and the gateway's load generator share the first. So on a 2-CPU machine the
thing measured has one core to itself, and in every scenario it is one Python process on one core.
`--no-pin` leaves placement to the kernel. Other work on the machine still competes: the load
average is printed before and after.

Next to requests per second, each row gives the CPU time per request of the process under test
(all its threads, from /proc): on a shared machine that is steadier than the rates, and on one
core the capacity is its inverse.

The batcher section drives `gateway.batching.MicroBatcher` over the real local embedder
(`make_embedder({"kind": "local"})`, unpinned; ONNX Runtime on all CPUs, its default, and on
one thread) with 16 concurrent callers, for short chat prompts and for the load
section's longer ones: one at a time (window 0, max batch 1) against micro-batching (window
2 ms, max batch 32: the gateway's defaults) and window 0 with max batch 32 (no waiting; a batch
is whatever queued while the previous one ran).

The profile section times and cProfiles serial calls through a bare Router: untuned LiteLLM, the
gateway's configuration, and the gateway's configuration with message redaction switched back on
(what `configure_litellm()` did before it was measured); then the gateway app itself
(`served-named`, `served-hash`), run in the profiled process and driven over HTTP by a client
process. Python function calls per request are counted, so that section does not depend on the
machine's load.

    python benchmarks/bench_gateway.py                       # everything, about 13 minutes
    python benchmarks/bench_gateway.py --seconds 3 --concurrency 1 16 --skip batcher profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("direct", "litellm-default", "litellm-gateway-cfg", "gateway-named", "gateway-hash",
             "gateway-local", "gateway-local-serving", "gateway-local-cache")
#: The gateways behind the scenarios (`gateway-named` is served by `gateway-hash`'s).
GATEWAYS = ("hash", "local", "local-serving", "local-cache")
SECTIONS = ("load", "batcher", "profile")
MODELS = ("large", "medium", "small")
REQUEST_TIMEOUT_S = 30.0
TOPICS = ("photosynthesis", "a hash map", "TCP congestion control", "inflation", "vaccination",
          "a compiler", "the tides", "public-key cryptography", "garbage collection",
          "the French revolution", "plate tectonics", "a transformer network")
PROMPTS = [f"Question {i}: explain, in plain words and with one example, how {topic} works, "
           f"why it matters and what people most often get wrong about it."
           for i, topic in enumerate(TOPICS)]
SHORT_PROMPTS = ["What is the capital of France?", "hi", "Translate 'good morning' to Spanish.",
                 "What's 17 * 23?", "Tell me a joke.", "Who wrote Hamlet?",
                 "Define entropy.", "Is a tomato a fruit?", "Convert 100 F to C.",
                 "Name three primes.", "What is TCP?", "Recommend a book."]
INSTRUCTION = "You MUST respond in 256 tokens or fewer."
Send = Callable[[int], Awaitable[bool]]


# -- small helpers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """On uvloop when installed, as `r2 serve` (uvicorn's `loop="auto"`) would be."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def placement(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(harness CPUs, CPUs of the process under test); None: not pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def spawn(cmd: list[str], cpus: set[int] | None, log: Path | None = None,
          capture: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    with open(log or os.devnull, "a") as sink:
        return subprocess.Popen(
            cmd, env=env, cwd=ROOT, text=True, stderr=sink,
            stdout=subprocess.PIPE if capture else sink,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def wait_ready(proc: subprocess.Popen[str], url: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{url} never became ready; log tail:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the systems under test ---------------------------------------------------------------------
def serve_standin(port: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import uvicorn
    from standin import StandIn, build_app

    uvicorn.run(build_app(StandIn(port=port)), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def write_gateway_config(work: Path, name: str, upstream_port: int, embedder: dict[str, Any],
                         window_ms: float | None = None, cache_size: int = 0) -> Path:
    """A three-model checkpoint with random linear heads for `embedder`, and its gateway.yaml."""
    from loadenv import write_checkpoint

    write_checkpoint(work / f"ckpt-{name}", embedder, input_tokens="words1.3")
    config: dict[str, Any] = {
        "checkpoint": str(work / f"ckpt-{name}"), "embedder": embedder, "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}",
                         "api_base": f"http://127.0.0.1:{upstream_port}/v1"} for n in MODELS],
        "server": {"max_concurrency": 256, "request_timeout_s": REQUEST_TIMEOUT_S,
                   "embed_cache_size": cache_size},
    }
    if window_ms is not None:
        config["server"]["embed_batch_window_ms"] = window_ms
    path = work / f"gateway-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# -- load generation (runs inside a client process) --------------------------------------------
async def closed_loop(send: Send, concurrency: int, seconds: float,
                      max_requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors, issued
        while time.perf_counter() < deadline and issued < max_requests:
            i = issued
            issued += 1
            start = time.perf_counter()
            try:
                ok = await asyncio.wait_for(send(i), REQUEST_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - counted, the loop goes on
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"rps": len(latencies) / elapsed, "p50_ms": pct(latencies, 50) * 1000,
            "p99_ms": pct(latencies, 99) * 1000, "ok": len(latencies), "errors": errors}


def upstream_messages(i: int) -> list[dict[str, str]]:
    """What the gateway sends the provider for prompt i: its budget instruction, then the user."""
    return [{"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def gateway_upstream(config: str) -> Any:
    """The gateway's `Upstream` for `config`, built as `Service` builds it (with its prices)."""
    from gateway.config import load_settings
    from gateway.service import apply_prices, make_upstream
    from router_core.checkpoint import load_checkpoint

    settings = load_settings(config)
    return make_upstream(settings, apply_prices(load_checkpoint(settings.checkpoint), settings))


def make_sender(scenario: str, target: str, stack: list[Any]) -> Send:
    if scenario == "direct" or scenario.startswith("gateway-"):
        # The lean keep-alive client from httpload.py, one connection per worker: httpx's pool
        # costs O(connections) per request (about 6 ms of CPU a request at 64 connections,
        # measured with py-spy), so at high concurrency it measured itself and, sharing a core
        # with the stand-in, slowed the provider for every scenario behind it.
        from httpload import Conn

        url = urllib.parse.urlsplit(target)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        idle: list[Conn] = []
        stack.append(idle)
        routed = scenario not in ("direct", "gateway-named")
        model = {"direct": "up-large", "gateway-named": "large"}.get(scenario, "r2-auto")
        path = "/v1/chat/completions"

        async def send_http(i: int) -> bool:
            body: dict[str, Any]
            if routed:
                body = {"model": model, "messages": [
                    {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            else:
                body = {"model": model, "messages": upstream_messages(i), "max_tokens": 256}
            conn = idle.pop() if idle else Conn(host, port)
            try:
                status, _ = await conn.post(path, json.dumps(body).encode())
            except BaseException:
                conn.close()
                raise
            idle.append(conn)
            return status == 200 and bool(json.loads(conn.body)["choices"])
        return send_http

    if scenario == "litellm-default":
        # Untuned; LITELLM_LOCAL_MODEL_COST_MAP (set by `spawn`) only keeps the import offline.
        litellm: Any = importlib.import_module("litellm")
        router = litellm.Router(model_list=[{"model_name": "large", "litellm_params": {
            "model": "openai/up-large", "api_base": target, "api_key": "no-key"}}])
    else:
        router = gateway_upstream(target).router

    async def send_router(i: int) -> bool:
        response = await router.acompletion(model="large", messages=upstream_messages(i),
                                            max_tokens=256)
        return bool(response.choices)
    return send_router


async def client_main(scenario: str, target: str, levels: list[int], seconds: float,
                      max_requests: int, sut_pid: int) -> None:
    """Rows for one scenario; `cpu_ms` is the CPU per request of the process under test."""
    stack: list[Any] = []
    send = make_sender(scenario, target, stack)
    try:
        for c in levels:
            await closed_loop(send, c, min(1.0, seconds), max_requests)  # warm-up
            cpu = cpu_seconds(sut_pid)
            row = await closed_loop(send, c, seconds, max_requests)
            row["cpu_ms"] = (cpu_seconds(sut_pid) - cpu) / max(row["ok"], 1) * 1000
            print(json.dumps({"scenario": scenario, "concurrency": c, **row}), flush=True)
    finally:
        for conns in stack:
            for conn in conns:
                conn.close()


# -- the micro-batcher ---------------------------------------------------------------------------
async def batcher_main(seconds: float, concurrency: int, threads: list[int]) -> None:
    for n in threads:
        await batcher_rows(seconds, concurrency, n)


async def batcher_rows(seconds: float, concurrency: int, threads: int) -> None:
    from gateway.batching import MicroBatcher
    from router_core import make_embedder

    embedder = make_embedder({"kind": "local", **({"threads": threads} if threads else {})})
    prompt_sets = {"short": [f"{q} ({k})" for k in range(4) for q in SHORT_PROMPTS],
                   "medium": [f"{p} ({k})" for k in range(4) for p in PROMPTS]}
    for name, texts in prompt_sets.items():
        embedder.embed(texts[:32])  # warm-up: ONNX Runtime allocates on first use
        tokens = float(np.mean([len(embedder._tokenizer.encode(t).ids)  # type: ignore[attr-defined]
                                for t in texts]))
        for label, window_ms, max_batch in (("one at a time", 0.0, 1), ("window 2 ms", 2.0, 32),
                                            ("window 0", 0.0, 32)):
            sizes: list[int] = []

            def observe(_seconds: float, n: int, out: list[int] = sizes) -> None:
                out.append(n)

            batcher = MicroBatcher(embedder, window_ms / 1000, max_batch,
                                   timeout_s=REQUEST_TIMEOUT_S, observe=observe)
            batcher.start()

            async def send(i: int, b: MicroBatcher = batcher, t: list[str] = texts) -> bool:
                return len(await b.embed(t[i % len(t)])) > 0

            await closed_loop(send, concurrency, min(1.0, seconds), 10**6)
            sizes.clear()
            cpu = time.process_time()
            row = await closed_loop(send, concurrency, seconds, 10**6)
            row["cpu_ms"] = (time.process_time() - cpu) / max(row["ok"], 1) * 1000
            await batcher.stop()
            print(json.dumps({"prompts": name, "tokens": tokens, "batcher": label,
                              "window_ms": window_ms, "max_batch": max_batch,
                              "concurrency": concurrency, "threads": embedder.threads,  # type: ignore[attr-defined]
                              "mean_batch": float(np.mean(sizes)) if sizes else 0.0, **row}),
                  flush=True)
    embedder.close()


# -- the LiteLLM profile ---------------------------------------------------------------------------
HOT_SPOTS = {  # (file suffix, function): what the profile reports per request
    "cost calc": ("litellm_logging.py", "response_cost_calculator"),
    "success log": ("litellm_logging.py", "async_success_handler"),
    "redaction": ("redact_messages.py", "perform_redaction"),
    "openai SDK post": ("openai/_base_client.py", "post"),
}


async def profile_main(variant: str, target: str, requests: int) -> None:
    """Serial requests, timed and then cProfiled on the event-loop thread.

    `served-*` runs the gateway app here (uvicorn, same event loop) and drives it from a client
    process, so its rows count the gateway's own work (HTTP, routing) next to LiteLLM's.
    """
    stop: Callable[[], Awaitable[None]] | None = None
    if variant.startswith("served-"):
        batch, stop = await serve_for_profile(variant, target)
    else:
        if variant == "litellm-default":
            litellm: Any = importlib.import_module("litellm")
            router = litellm.Router(model_list=[{"model_name": "large", "litellm_params": {
                "model": "openai/up-large", "api_base": target, "api_key": "no-key"}}])
        else:
            upstream = gateway_upstream(target)
            router = upstream.router
            if variant == "gateway-cfg+redaction":
                upstream.litellm.turn_off_message_logging = True

        async def batch(n: int) -> int:
            for i in range(n):
                await router.acompletion(model="large", messages=upstream_messages(i),
                                         max_tokens=256)
            await asyncio.sleep(0.2)  # LiteLLM logs success in a background task
            return n

    await batch(30)
    cpu = time.process_time()
    done = await batch(requests)
    cpu_ms = (time.process_time() - cpu) / done * 1000
    profiler = cProfile.Profile()
    cpu = time.process_time()
    profiler.enable()
    done = await batch(requests)
    profiler.disable()
    profiled_ms = (time.process_time() - cpu) / done * 1000
    if stop is not None:
        await stop()
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    spots = {name: sum(v[3] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == fn)
             for name, (suffix, fn) in HOT_SPOTS.items()}
    print(json.dumps({"variant": variant, "cpu_ms": cpu_ms,
                      "calls": stats.total_calls / done,  # type: ignore[attr-defined]
                      "profiled_ms": profiled_ms,
                      **{k: v / done * 1000 for k, v in spots.items()}}), flush=True)


async def serve_for_profile(
    variant: str, config: str
) -> tuple[Callable[[int], Awaitable[int]], Callable[[], Awaitable[None]]]:
    """The gateway app on uvicorn in this process; `batch(n)` has a client process send n."""
    import uvicorn

    from gateway.app import build_app
    from gateway.config import load_settings

    app = build_app(load_settings(config))
    served = 0

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        nonlocal served
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            served += 1
        await app(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(counted, host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    scenario = "gateway-named" if variant == "served-named" else "gateway-hash"
    others = set(range(os.cpu_count() or 1)) - os.sched_getaffinity(0)

    async def batch(n: int) -> int:
        before = served
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", scenario, f"http://127.0.0.1:{port}",
            "--concurrency", "1", "--seconds", "60", "--max-requests", str(n),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, others)) if others else None)
        await proc.wait()
        await asyncio.sleep(0.2)
        return served - before

    async def stop() -> None:
        server.should_exit = True
        await task

    return batch, stop


# -- the orchestrator ---------------------------------------------------------------------------
def run_client(args: list[str], cpus: set[int] | None, log: Path, timeout: float) -> list[Any]:
    proc = spawn([sys.executable, __file__, *args], cpus, log, capture=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        print(f"  client {args[:2]} exited {proc.returncode}; see {log}", file=sys.stderr)
    return rows


def print_load(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'scenario':21} {'conc':>4} {'req/s':>7} {'(min-max)':>15} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'SUT cpu ms/req':>14} {'ok':>6} {'err':>4}")
    for r in rows:
        spread = f"({r['rps_min']:.0f}-{r['rps_max']:.0f})"
        print(f"{r['scenario']:21} {r['concurrency']:>4} {r['rps']:>7.1f} {spread:>15} "
              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['cpu_ms']:>14.2f} {r['ok']:>6} "
              f"{r['errors']:>4}")
    by = {(r["scenario"], r["concurrency"]): r for r in rows}
    base = "litellm-gateway-cfg"
    print(f"\nagainst {base}, bare LiteLLM configured as the gateway configures it (targets for "
          "gateway-hash:\nthroughput x0.80 or more, p50 at most +3 ms at concurrency 1); "
          "cpu: CPU per request of the process under test")
    for scenario in SCENARIOS[3:]:
        for c in sorted({r["concurrency"] for r in rows}):
            a, b = by.get((scenario, c)), by.get((base, c))
            if a and b:
                print(f"  {scenario:21} c={c:<3} throughput x{a['rps'] / b['rps']:.2f}   "
                      f"p50 {a['p50_ms'] - b['p50_ms']:+7.2f} ms   "
                      f"cpu x{a['cpu_ms'] / b['cpu_ms']:.2f}")
    print("\nagainst gateway-local (ONNX Runtime threads = every CPU the gateway may use)")
    for scenario in ("gateway-local-serving", "gateway-local-cache"):
        for c in sorted({r["concurrency"] for r in rows}):
            a, b = by.get((scenario, c)), by.get(("gateway-local", c))
            if a and b:
                print(f"  {scenario:21} c={c:<3} throughput x{a['rps'] / b['rps']:.2f}   "
                      f"p50 {a['p50_ms'] - b['p50_ms']:+7.2f} ms   "
                      f"cpu x{a['cpu_ms'] / b['cpu_ms']:.2f}")


def print_batcher(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(f"\nMicroBatcher over the local embedder, {rows[0]['concurrency']} concurrent callers, "
          f"ONNX Runtime threads {rows[0]['threads']}, not pinned")
    print(f"{'prompts':16} {'batching':34} {'embeds/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'mean batch':>10} {'cpu ms/embed':>12}")
    for r in rows:
        label = f"{r['batcher']} (window {r['window_ms']:g} ms, max {r['max_batch']})"
        prompts = f"{r['prompts']} ({r['tokens']:.0f} tok)"
        print(f"{prompts:16} {label:34} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['mean_batch']:>10.1f} {r['cpu_ms']:>12.2f}")
    for name in dict.fromkeys(r["prompts"] for r in rows):
        mine = {r["batcher"]: r for r in rows if r["prompts"] == name}
        one, w2, w0 = mine.get("one at a time"), mine.get("window 2 ms"), mine.get("window 0")
        if one and w2 and w0:
            print(f"  {name}: throughput x{w2['rps'] / one['rps']:.2f} with a 2 ms window, "
                  f"x{w0['rps'] / one['rps']:.2f} with window 0, against one at a time; CPU per "
                  f"embed x{w2['cpu_ms'] / one['cpu_ms']:.2f} and "
                  f"x{w0['cpu_ms'] / one['cpu_ms']:.2f}")


def print_profile(rows: list[dict[str, Any]]) -> None:
    spots = list(HOT_SPOTS)
    print(f"\n{'serial requests (c=1)':22} {'calls':>6} {'cpu ms':>7} {'profiled':>8} "
          + " ".join(f"{s:>15}" for s in spots))
    for r in rows:
        print(f"{r['variant']:22} {r['calls']:>6.0f} {r['cpu_ms']:>7.2f} {r['profiled_ms']:>8.2f} "
              + " ".join(f"{r[s]:>15.2f}" for s in spots))
    print("  calls: Python function calls per request on the event-loop thread; cpu ms: process "
          "CPU per request\n  (all threads) without the profiler; profiled: the same under "
          "cProfile; then inclusive ms per\n  request under cProfile. served-*: the gateway app "
          "in the profiled process, driven over HTTP.")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds of each (scenario, concurrency): rows of a busy machine are noisy."""
    out = []
    keys = dict.fromkeys((r["scenario"], r["concurrency"]) for r in rows)
    for scenario, c in keys:
        mine = [r for r in rows if r["scenario"] == scenario and r["concurrency"] == c]
        rps = [r["rps"] for r in mine]
        out.append({"scenario": scenario, "concurrency": c, "rounds": len(mine),
                    "rps": float(np.median(rps)), "rps_min": min(rps), "rps_max": max(rps),
                    "p50_ms": float(np.median([r["p50_ms"] for r in mine])),
                    "p99_ms": float(np.median([r["p99_ms"] for r in mine])),
                    "cpu_ms": float(np.median([r["cpu_ms"] for r in mine])),
                    "ok": sum(r["ok"] for r in mine), "errors": sum(r["errors"] for r in mine)})
    return out


def start_servers(work: Path, scenarios: list[str], harness: set[int] | None,
                  sut: set[int] | None, window_ms: float | None, log: Path,
                  procs: list[subprocess.Popen[str]]) -> dict[str, str]:
    """The stand-in on the harness CPUs, each gateway needed (`r2 serve`) on the SUT CPU."""
    up_port = free_port()
    procs.append(spawn([sys.executable, __file__, "--serve-standin", str(up_port)], harness, log))
    wait_ready(procs[-1], f"http://127.0.0.1:{up_port}/v1/models", log)
    upstream = f"http://127.0.0.1:{up_port}"
    threads = len(sut) if sut else len(os.sched_getaffinity(0))
    embedders = {"hash": {"kind": "hash", "dim": 384},
                 "local": {"kind": "local", "threads": threads},
                 "local-serving": {"kind": "local"}, "local-cache": {"kind": "local"}}
    targets = {"direct": upstream, "litellm-default": f"{upstream}/v1"}
    for kind in GATEWAYS:
        wanted = {f"gateway-{kind}"} | ({"gateway-named"} if kind == "hash" else set())
        if kind != "hash" and not wanted & set(scenarios):
            continue
        config = write_gateway_config(work, kind, up_port, embedders[kind], window_ms,
                                      cache_size=4096 if kind == "local-cache" else 0)
        if kind == "hash":
            targets["litellm-gateway-cfg"] = str(config)
        if not wanted & set(scenarios):
            continue
        port = free_port()
        procs.append(spawn([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
                            "--port", str(port), "--log-level", "info"], sut, log))
        wait_ready(procs[-1], f"http://127.0.0.1:{port}/readyz", log)
        targets[f"gateway-{kind}"] = f"http://127.0.0.1:{port}"
        targets[f"gateway-{kind}-pid"] = str(procs[-1].pid)
        if kind == "hash":
            targets["gateway-named"] = targets["gateway-hash"]
            targets["gateway-named-pid"] = targets["gateway-hash-pid"]
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per row (max 60)")
    parser.add_argument("--max-requests", type=int, default=5000, help="per row")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds over the scenarios; the table gives medians")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--skip", nargs="*", choices=SECTIONS, default=[])
    parser.add_argument("--embed-window-ms", type=float,
                        help="the gateways' server.embed_batch_window_ms (default: theirs)")
    parser.add_argument("--batcher-concurrency", type=int, default=16)
    parser.add_argument("--batcher-threads", type=int, nargs="+", default=[0, 1],
                        help="ONNX Runtime threads in the batcher section, one table each "
                             "(0: the embedder's default, all CPUs)")
    parser.add_argument("--profile-requests", type=int, default=300)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, help="also write all rows here")
    parser.add_argument("--serve-standin", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=2, metavar=("SCENARIO", "TARGET"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--sut-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batcher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", nargs=2, metavar=("VARIANT", "TARGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 0.5), 60.0)
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    if args.client:
        run_async(client_main(args.client[0], args.client[1], args.concurrency, seconds,
                              args.max_requests, args.sut_pid or os.getpid()))
        return 0
    if args.batcher:
        run_async(batcher_main(seconds, args.batcher_concurrency, args.batcher_threads))
        return 0
    if args.profile:
        run_async(profile_main(args.profile[0], args.profile[1], args.profile_requests))
        return 0

    harness, sut = placement(not args.no_pin)
    common = ["--seconds", str(seconds), "--max-requests", str(args.max_requests),
              "--concurrency", *map(str, args.concurrency)]
    timeout = len(args.concurrency) * (seconds + 1.0) * 3 + 120
    print(f"bench_gateway: {len(os.sched_getaffinity(0))} CPUs; "
          + (f"stand-in and load generator on CPU {sorted(harness)}, the process under test on "
             f"CPU {sorted(sut)}" if harness and sut else "not pinned")
          + f"; event loop {loop_name()}; {seconds:g} s per row after 1 s of warm-up, at most "
          f"{args.max_requests} requests; {max(args.rounds, 1)} rounds; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    report: dict[str, Any] = {"load_rounds": [], "load": [], "batcher": [], "profile": []}
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        log = work / "processes.log"
        try:
            targets = start_servers(work, args.scenarios, harness, sut, args.embed_window_ms,
                                    log, procs)
            if "load" not in args.skip:
                for rnd in range(max(args.rounds, 1)):
                    for scenario in args.scenarios:
                        print(f"  round {rnd + 1}: {scenario}", file=sys.stderr, flush=True)
                        gateway = scenario.startswith("gateway")
                        pid = ["--sut-pid", targets[f"{scenario}-pid"]] if gateway else []
                        report["load_rounds"] += run_client(
                            ["--client", scenario, targets[scenario], *pid, *common],
                            harness if gateway else sut, log, timeout)
                report["load"] = aggregate(report["load_rounds"])
                print_load(report["load"])
            if "batcher" not in args.skip:
                report["batcher"] = run_client(
                    ["--batcher", *common, "--batcher-threads", *map(str, args.batcher_threads),
                     "--batcher-concurrency", str(args.batcher_concurrency)], None, log,
                    6 * len(args.batcher_threads) * (seconds + 1) + 120)
                for n in dict.fromkeys(r["threads"] for r in report["batcher"]):
                    print_batcher([r for r in report["batcher"] if r["threads"] == n])
            if "profile" not in args.skip:
                for variant in ("litellm-default", "gateway-cfg+redaction", "gateway-cfg",
                                "served-named", "served-hash"):
                    target = targets["litellm-default" if variant == "litellm-default"
                                     else "litellm-gateway-cfg"]
                    report["profile"] += run_client(
                        ["--profile", variant, target, "--profile-requests",
                         str(args.profile_requests)], sut, log, 300)
                print_profile(report["profile"])
        finally:
            for proc in reversed(procs):
                stop(proc)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
