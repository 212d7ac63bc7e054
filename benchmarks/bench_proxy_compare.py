"""The gateway against the LiteLLM proxy server, side by side in one run (issue 19).

Starts, as child processes of this one: the fast HTTP stand-in provider (`tests/standin.py`,
answering at once), the LiteLLM proxy server (`litellm --config`, as `litellm[proxy]` installs
it: one uvicorn worker, uvloop, httptools, no database, no master key), and `r2 serve` once per
embedder (each with a checkpoint of random linear heads over that embedder's space, embedding
cache off). Then, for each pass, each concurrency and each scenario in turn, a closed loop of C
keep-alive HTTP/1.1 clients (`httpload.Conn`, about 0.1 ms of CPU a request) sends chat
completions for `--seconds` after a one-second warm-up:

- `direct`: the stand-in itself (the floor: "added" latency is measured against it);
- `litellm-proxy`: the LiteLLM proxy naming the deployment;
- `gateway-named`: our gateway naming the deployment (plain proxying, no routing);
- `r2-auto/<embedder>`: our gateway routing with that embedder (`--embedders`; an embedder that
  is not registered in `router_core.embedders` is skipped with a note);
- `r2-auto/<embedder>+cache` (`--cache-row`): the same with the embedding cache on. The prompts
  repeat, so after the first few requests every routing text is a hit: the cache's ceiling.

Every request carries the same user prompt (one of twelve ~35-token questions) and no other
field; routed requests get the policy's instruction and cap from the gateway. CPU per request is
the server's process tree (all threads, from /proc) over the requests it answered; `cores` is
that CPU over the row's wall time. Ratios are taken within a pass (the machine is shared and
noisy: never compare numbers across runs) and printed as the range over passes.

    python benchmarks/bench_proxy_compare.py --passes 2 --seconds 10 --json out.json
    python benchmarks/bench_proxy_compare.py --embedders local static-minilm --cache-row
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import PROMPTS, run_async  # noqa: E402
from httpload import closed_loop, percentile  # noqa: E402
from loadenv import (  # noqa: E402
    MODELS,
    cpu_seconds,
    free_port,
    serve_standin,
    start,
    stop_all,
    write_checkpoint,
)

HOST = "127.0.0.1"


def tree_cpu_seconds(pid: int) -> float:
    """CPU (user + system, all threads) of `pid` and its descendants, from /proc."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            total += cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def registered(kind: str) -> bool:
    from router_core import InvalidInputError
    from router_core.embedders import check_options

    try:
        check_options({"kind": kind})
    except InvalidInputError:
        return False
    return True


def write_gateway(work: Path, name: str, up: int, kind: str, cache: int,
                  server: dict[str, Any] | None = None) -> Path:
    embedder = {"kind": kind}
    write_checkpoint(work / f"ckpt-{name}", embedder, input_tokens="tokenizer")
    config = {
        "checkpoint": str(work / f"ckpt-{name}"), "embedder": embedder, "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}",
                         "api_base": f"http://{HOST}:{up}/v1"} for n in MODELS],
        "server": {"max_concurrency": 1024, "request_timeout_s": 30,
                   "embed_cache_size": cache, **(server or {})},
    }
    path = work / f"gateway-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_proxy(work: Path, up: int) -> Path:
    config = {"model_list": [{"model_name": n, "litellm_params": {
        "model": f"openai/up-{n}", "api_base": f"http://{HOST}:{up}/v1", "api_key": "no-key"}}
        for n in MODELS], "litellm_settings": {"telemetry": False}}
    path = work / "litellm-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def litellm_version() -> str:
    from importlib.metadata import version

    return version("litellm")


class Target:
    def __init__(self, name: str, port: int, model: str, proc: subprocess.Popen[bytes]) -> None:
        self.name, self.port, self.model, self.proc = name, port, model, proc


def start_servers(work: Path, args: argparse.Namespace,
                  procs: list[subprocess.Popen[bytes]]) -> list[Target]:
    up = free_port()
    standin = start([sys.executable, __file__, "--serve-standin", str(up)],
                    f"http://{HOST}:{up}/v1/models", None, args.start_timeout)
    procs.append(standin)
    targets = [Target("direct", up, "up-large", standin)]
    port = free_port()
    env_bin = Path(sys.executable).parent / "litellm"
    os.environ["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
    proxy = start([str(env_bin), "--config", str(write_proxy(work, up)), "--host", HOST,
                   "--port", str(port), "--num_workers", "1"],
                  f"http://{HOST}:{port}/health/liveliness", None, args.start_timeout)
    procs.append(proxy)
    targets.append(Target("litellm-proxy", port, "large", proxy))
    rows = [(kind, 0) for kind in args.embedders]
    if args.cache_row:
        rows.append((args.embedders[0], 4096))
    for i, (kind, cache) in enumerate(rows):
        name = f"r2-auto/{kind}" + ("+cache" if cache else "")
        port = free_port()
        gw = start([sys.executable, "-m", "gateway.cli", "serve", "--config",
                    str(write_gateway(work, f"{kind}-{cache}", up, kind, cache,
                                      args.server_option)),
                    "--port", str(port), "--log-level", "warning"],
                   f"http://{HOST}:{port}/readyz", None, args.start_timeout)
        procs.append(gw)
        if cache:  # every prompt once, so the measured rows see the cache's ceiling
            for prompt in PROMPTS:
                httpx.post(f"http://{HOST}:{port}/v1/chat/completions", timeout=60, json={
                    "model": "r2-auto", "messages": [{"role": "user", "content": prompt}]})
        if i == 0:  # plain proxying through the first gateway (no embedding on that path)
            targets.append(Target("gateway-named", port, "large", gw))
        targets.append(Target(name, port, "r2-auto", gw))
    return targets


async def measure(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    bodies = [json.dumps({"model": target.model,
                          "messages": [{"role": "user", "content": p}]}).encode()
              for p in PROMPTS]
    path = "/v1/chat/completions"
    await closed_loop(HOST, target.port, path, bodies, concurrency, 1.0, warmup_s=0.0)
    cpu0, wall0 = tree_cpu_seconds(target.proc.pid), time.perf_counter()
    result = await closed_loop(HOST, target.port, path, bodies, concurrency, seconds,
                               warmup_s=0.0)
    cpu, wall = tree_cpu_seconds(target.proc.pid) - cpu0, time.perf_counter() - wall0
    lat = result.latencies()
    ok = len(lat)
    return {"scenario": target.name, "concurrency": concurrency, "rps": result.rps,
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "ok": ok, "errors": result.non_2xx(),
            "cpu_ms_per_req": cpu / max(ok, 1) * 1000, "cores": cpu / wall}


async def run_passes(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in range(args.passes):
        for c in args.concurrency:
            for target in targets:
                load = os.getloadavg()[0]
                row = await measure(target, c, args.seconds)
                row.update({"pass": p, "loadavg": load})
                rows.append(row)
                print(f"  pass {p} c={c:<3} {target.name:<24} {row['rps']:8.1f} req/s  p50 "
                      f"{row['p50_ms']:7.2f} ms  cpu {row['cpu_ms_per_req']:6.2f} ms/req  "
                      f"cores {row['cores']:.2f}  err {row['errors']}  load {load:.1f}",
                      flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    by = {(r["pass"], r["concurrency"], r["scenario"]): r for r in rows}
    names = list(dict.fromkeys(r["scenario"] for r in rows))
    loads = [r["loadavg"] for r in rows]
    out = ["", f"median over {args.passes} passes (load average {min(loads):.1f}-"
           f"{max(loads):.1f} on {len(os.sched_getaffinity(0))} CPUs)",
           f"{'scenario':<26}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
           f"{'cpu ms/req':>12}{'cores':>7}{'err':>5}"]
    for c in args.concurrency:
        for n in names:
            rs = [by[(p, c, n)] for p in range(args.passes) if (p, c, n) in by]
            med = {k: statistics.median(r[k] for r in rs)
                   for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "cores")}
            out.append(f"{n:<26}{c:>5}{med['rps']:>9.1f}{med['p50_ms']:>9.2f}"
                       f"{med['p99_ms']:>9.1f}{med['cpu_ms_per_req']:>12.2f}{med['cores']:>7.2f}"
                       f"{sum(r['errors'] for r in rs):>5}")

    def span(values: list[float], fmt: str) -> str:
        lo, hi = min(values), max(values)
        return fmt.format(lo) if abs(hi - lo) < 1e-9 else f"{fmt.format(lo)}..{fmt.format(hi)}"

    out += ["", "same-pass ratios (range over passes): throughput vs the LiteLLM proxy and vs "
            "gateway-named; CPU per request vs the LiteLLM proxy"]
    for n in names:
        if n in ("direct", "litellm-proxy"):
            continue
        cells = []
        for c in args.concurrency:
            passes = [p for p in range(args.passes)
                      if all((p, c, k) in by for k in (n, "litellm-proxy", "gateway-named"))]
            vs_proxy = [by[(p, c, n)]["rps"] / by[(p, c, "litellm-proxy")]["rps"] for p in passes]
            vs_named = [by[(p, c, n)]["rps"] / by[(p, c, "gateway-named")]["rps"] for p in passes]
            cpu = [by[(p, c, n)]["cpu_ms_per_req"] / by[(p, c, "litellm-proxy")]["cpu_ms_per_req"]
                   for p in passes]
            cells.append(f"c={c}: x{span(vs_proxy, '{:.2f}')} proxy, x{span(vs_named, '{:.2f}')} "
                         f"named, cpu x{span(cpu, '{:.2f}')}")
        out.append(f"  {n:<24} " + "; ".join(cells))
    if 1 in args.concurrency:
        out += ["", "added p50 at c=1 over `direct` (same pass), and cores used at c=1"]
        for n in names:
            if n == "direct":
                continue
            added = [by[(p, 1, n)]["p50_ms"] - by[(p, 1, "direct")]["p50_ms"]
                     for p in range(args.passes) if (p, 1, n) in by]
            cores = [by[(p, 1, n)]["cores"] for p in range(args.passes) if (p, 1, n) in by]
            out.append(f"  {n:<24} +{span(added, '{:.2f}')} ms   cores {span(cores, '{:.2f}')}")
    return out


def stage_report(targets: list[Target]) -> list[str]:
    """Mean time per routing stage and the embedding batch sizes, from each routed gateway's
    `/metrics` (all passes and concurrencies together)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = ["", "where the time goes (gateway /metrics over the whole run): mean ms per stage; "
           "embedding batch sizes"]
    for t in targets:
        if t.model != "r2-auto":
            continue
        text = httpx.get(f"http://{HOST}:{t.port}/metrics", timeout=30).text
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        batches: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "r2_stage_seconds_sum":
                    sums[sample.labels["stage"]] = sample.value
                elif sample.name == "r2_stage_seconds_count":
                    counts[sample.labels["stage"]] = sample.value
                elif sample.name == "r2_embedding_batch_size_bucket":
                    batches[sample.labels["le"]] = sample.value
        means = "  ".join(f"{k} {sums[k] / counts[k] * 1000:.2f}" for k in sums if counts.get(k))
        hist, prev = [], 0.0
        for le, cum in batches.items():  # cumulative buckets, in order
            if cum > prev:
                hist.append(f"<={le}: {int(cum - prev)}")
            prev = cum
        out.append(f"  {t.name:<24} {means}")
        out.append(f"  {'':<24} batches {', '.join(hist)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", nargs="+", default=["local-q8", "local", "static-minilm"],
                        help="embedder kinds for r2-auto rows; the first is the default one")
    parser.add_argument("--cache-row", action="store_true",
                        help="also r2-auto with the first embedder and the cache on")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="per row, after warm-up")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--json", metavar="OUT", help="write every row as JSON")
    parser.add_argument("--server-option", metavar="KEY=VALUE", action="append", default=[],
                        help="a `server:` setting for every gateway of the run (named and "
                             "r2-auto alike), e.g. gil_switch_interval_ms=5; repeatable")
    parser.add_argument("--serve-standin", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.server_option = {k: yaml.safe_load(v) for k, _, v in
                          (o.partition("=") for o in args.server_option)}
    if args.serve_standin:
        serve_standin(args.serve_standin)
        return 0
    skipped = [k for k in args.embedders if not registered(k)]
    args.embedders = [k for k in args.embedders if k not in skipped]
    if not args.embedders:
        raise SystemExit(f"no registered embedder among {skipped}")
    print(f"bench_proxy_compare: litellm {litellm_version()}, {len(os.sched_getaffinity(0))} "
          f"CPUs, load average {os.getloadavg()[0]:.2f}; embedders {args.embedders}"
          + (f" (not registered, skipped: {skipped})" if skipped else ""), flush=True)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            targets = start_servers(Path(tmp), args, procs)
            rows = run_async(run_passes(targets, args))
            stages = stage_report(targets)
        finally:
            stop_all(list(reversed(procs)))
    for line in summarise(rows, args) + stages:
        print(line)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
