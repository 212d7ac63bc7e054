"""What the decision log costs: gateway throughput with the log on (SQLite) and off, and the
size of a million-request log and the time `r2 report` takes on it.

Throughput: one stand-in provider process and two `r2 serve` processes, identical but for
`log:` (a SQLite file in the run's temp dir, the defaults otherwise), both pinned to the same
(last) CPU, the stand-in and the load generator (`httpload.py`, closed loop) on the others.
Only one gateway is driven at a time, alternating off/on for `--rounds` rounds of `--seconds`
each, so that drift in the machine's load hits both alike; the ratio is of the medians. The
embedder is the hash stub by default (the cheapest request path, so the log's share of the
work is the largest it can be); `--embedder local` uses the real MiniLM. After the run the
log-on gateway's `/metrics` tell how many records were written and dropped.

Million-request log: rows written straight through the store (the same schema and insert
statement as the writer), with 384-d float16 embeddings (MiniLM), 5 candidates per record,
30% of records with feedback, and per-batch arm totals for 3 models x 4 policies; then the
file size and the wall time of `summarize` (what `r2 report` and the dashboard run) and of
the `r2 report` command as a process.

    python benchmarks/bench_decision_log.py                    # both parts, about 6 minutes
    python benchmarks/bench_decision_log.py --skip big --rounds 6 --seconds 10
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
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpload import closed_loop  # noqa: E402
from loadenv import (  # noqa: E402
    MODELS,
    ROOT,
    cpu_seconds,
    free_port,
    placement,
    start,
    stop_all,
    write_config,
)

PROMPTS = [f"Question {i}: explain topic number {i} in a few sentences." for i in range(64)]


def body(i: int) -> bytes:
    return json.dumps({"model": "r2-auto", "messages": [{"role": "user",
                                                         "content": PROMPTS[i % 64]}]}).encode()


def throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    harness, gateway_cpus = placement(not args.no_pin)
    embedder = {"kind": "hash", "dim": 384} if args.embedder == "hash" else {"kind": "local"}
    sport = free_port()
    procs: list[subprocess.Popen[Any]] = []
    try:
        procs.append(start([sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks');"
                            f" import loadenv; loadenv.serve_standin({sport})"],
                           f"http://127.0.0.1:{sport}/v1/models", harness))
        ports, pids = {}, {}
        for name in ("off", "on"):
            d = work / name
            d.mkdir()
            cfg_path = write_config(d, sport, embedder, max_concurrency=256)
            cfg = yaml.safe_load(cfg_path.read_text())
            if name == "on":
                cfg["log"] = {"path": str(d / "log.sqlite3")}
            cfg_path.write_text(yaml.safe_dump(cfg))
            ports[name] = free_port()
            procs.append(start([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                str(cfg_path), "--port", str(ports[name]), "--log-level",
                                "warning"], f"http://127.0.0.1:{ports[name]}/healthz",
                               gateway_cpus))
            pids[name] = procs[-1].pid
        bodies = [body(i) for i in range(64)]
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpu_ms: dict[str, list[float]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                cpu0 = cpu_seconds(pids[name])
                res = asyncio.run(closed_loop("127.0.0.1", ports[name], "/v1/chat/completions",
                                              bodies, args.concurrency, args.seconds,
                                              warmup_s=0.0))
                per = (cpu_seconds(pids[name]) - cpu0) * 1000 / max(1, len(res.samples))
                rates[name].append(res.rps)
                cpu_ms[name].append(per)
                print(f"  round {r + 1} log {name:<3} {res.rps:7.1f} req/s, {per:5.2f} ms CPU "
                      f"per request ({res.non_2xx()} non-2xx)", flush=True)
        metrics = httpx.get(f"http://127.0.0.1:{ports['on']}/metrics").text
        records = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("r2_decision_log_records_total{")}
        time.sleep(1.0)
        size = sum(p.stat().st_size for p in (work / "on").glob("log.sqlite3*"))
    finally:
        stop_all(procs)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cpu_off, cpu_on = statistics.median(cpu_ms["off"]), statistics.median(cpu_ms["on"])
    out = {"off_rps": off, "on_rps": on, "ratio": on / off, "rounds": rates,
           "cpu_ms_per_request": cpu_ms, "cpu_ratio": cpu_on / cpu_off,
           "records": records, "log_bytes": size, "concurrency": args.concurrency,
           "embedder": args.embedder}
    print(f"throughput at concurrency {args.concurrency} ({args.embedder} embedder): log off "
          f"{off:.1f} req/s, log on {on:.1f} req/s, ratio {on / off:.3f} (median of "
          f"{args.rounds} rounds); CPU per request {cpu_off:.2f} ms off, {cpu_on:.2f} ms on "
          f"(x{cpu_on / cpu_off:.3f}, capacity ratio x{cpu_off / cpu_on:.3f}); records "
          f"{records}; log {size / 1e6:.1f} MB")
    return out


def synthetic_log(path: Path, n: int, dim: int = 384, batch: int = 10_000) -> float:
    """Write `n` synthetic records (and arm totals) through the store; returns seconds."""
    from gateway.decisionlog import open_store
    from gateway.decisionlog.schema import INSERTED

    rng = np.random.default_rng(0)
    policies = ("64", "256", "1024", "unlimited")
    prices = {m: (3.0 / (i + 1), 12.0 / (i + 1)) for i, m in enumerate(MODELS)}
    store = open_store(str(path))
    start_ts = time.time() - 30 * 86400
    started = time.perf_counter()
    cols = len(INSERTED)
    for lo in range(0, n, batch):
        k = min(batch, n - lo)
        emb = rng.normal(0, 0.05, (k, dim)).astype("<f2")
        mi = rng.integers(0, len(MODELS), k)
        pj = rng.integers(0, len(policies), k)
        tin = rng.integers(20, 2000, k)
        tout = rng.integers(5, 1100, k)
        pred_out = tout * rng.uniform(0.7, 1.3, k)
        fb = rng.uniform(0, 1, k)
        has_fb = rng.uniform(0, 1, k) < 0.3
        rows = []
        for j in range(k):
            m, pol = MODELS[mi[j]], policies[pj[j]]
            pin, pout = prices[m]
            cost = (tin[j] * pin + tout[j] * pout) / 1e6
            pred = (tin[j] * pin + pred_out[j] * pout) / 1e6
            cands = json.dumps([{"model": MODELS[(mi[j] + c) % 3], "budget": policies[
                (pj[j] + c) % 4], "quality": 0.8 - 0.05 * c, "tokens": 200.0,
                "cost_usd": pred, "utility": 0.4 - 0.02 * c} for c in range(5)],
                separators=(",", ":"))
            row = [f"r2-{lo + j:016x}", start_ts + (lo + j) * 2.5, "key-0", "/v1/chat/completions",
                   m, pol, 0.5, None, int(tin[j]), 0.8, float(pred_out[j]), pred, cands, 0, 0.98,
                   m, pol, emb[j].tobytes(), "float16", 200, None,
                   "length" if tout[j] >= 1000 else "stop", int(tin[j]), int(tout[j]), cost,
                   150.0, None, int(tout[j] >= 1000), 0, 0, None, None]
            assert len(row) == cols
            rows.append(tuple(row))
        arms = []
        for a in range(0, k, 512):
            size = min(512, k - a)
            for i, m in enumerate(MODELS):
                for p in policies:
                    arms.append((start_ts + (lo + a + size) * 2.5, m, p, size,
                                 size * (0.9 - 0.1 * i), size * 0.002 / (i + 1)))
        store.write(rows, arms)
        # feedback as updates, as POST /v1/feedback makes them
        cur = store.conn.cursor()
        cur.executemany("UPDATE decisions SET feedback_score = ? WHERE request_id = ?",
                        [(float(fb[j]), f"r2-{lo + j:016x}") for j in range(k) if has_fb[j]])
        store.conn.commit()
        if (lo // batch) % 20 == 0:
            print(f"  {lo + k} records written", flush=True)
    store.close()
    return time.perf_counter() - started


def big(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from gateway.decisionlog import open_store
    from gateway.decisionlog.report import summarize

    path = work / "big.sqlite3"
    seconds = synthetic_log(path, args.records)
    size = sum(p.stat().st_size for p in work.glob("big.sqlite3*"))
    store = open_store(str(path))
    t0 = time.perf_counter()
    rep = summarize(store)
    in_process = time.perf_counter() - t0
    t0 = time.perf_counter()
    summarize(store, since=time.time() - 7 * 86400)
    week = time.perf_counter() - t0
    store.close()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gateway.cli", "report", "--log", str(path), "--json",
                    str(work / "big.json")], check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    command = time.perf_counter() - t0
    out = {"records": args.records, "bytes": size, "bytes_per_record": size / args.records,
           "write_s": seconds, "summarize_s": in_process, "summarize_last_7d_s": week,
           "r2_report_s": command, "requests_in_report": rep["requests"]}
    print(f"{args.records} records: {size / 1e6:.0f} MB on disk ({size / args.records:.0f} "
          f"bytes/record), written in {seconds:.0f} s; summarize {in_process:.2f} s (last 7 "
          f"days: {week:.2f} s); `r2 report` as a command {command:.2f} s")
    return out


def writer_cost(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """CPU seconds per record of the writer's work (conversion, arm totals, SQLite insert) for
    the published release's checkpoint (11 models x 16 policies, 1024-d): the cost the log
    adds to the gateway's process, off the event loop but on its CPU."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from gateway.decisionlog import DecisionLog, LogSettings
    from gateway.decisionlog.explore import KeepEmbedding
    from gateway.decisionlog.record import Finished, Trace
    from router_core import Scorer, load_checkpoint

    ckpt = load_checkpoint(ROOT / "checkpoints" / "r2-release")
    scorer = Scorer(ckpt)
    log = DecisionLog(LogSettings(path=str(work / "writer.sqlite3")), scorer,
                      CollectorRegistry())
    store = log.open()
    rng = np.random.default_rng(0)
    hook = KeepEmbedding()
    items = []
    for i in range(args.writer_records):
        emb = rng.normal(0, 1, ckpt.embedder.dim)
        emb /= np.linalg.norm(emb)
        decision = hook(scorer.decide(emb, 300.0, 0.9999), emb)
        outcome = SimpleNamespace(decision=decision, deployment=decision.model, lambda_=0.9999,
                                  tradeoff=None, fallback=None, request_id=f"r2-{i:016x}")
        trace = Trace(prompt_tokens=300, completion_tokens=120, cost_usd=1e-4,
                      finish_reason="stop")
        items.append(Finished(time.time(), f"r2-{i:016x}", None, "/v1/chat/completions",
                              outcome, trace, 200, None, 120.0))
    batch = 512
    cpu0 = time.process_time()
    for lo in range(0, len(items), batch):
        rows, arms = log._convert(items[lo:lo + batch])  # noqa: SLF001 - what the writer runs
        store.write(rows, arms)
    per = (time.process_time() - cpu0) / len(items)
    store.close()
    print(f"writer: {per * 1e6:.0f} us of CPU per record (release checkpoint, 187 arms, "
          f"1024-d; batches of {batch}, {len(items)} records)")
    return {"cpu_us_per_record": per * 1e6, "records": len(items)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--embedder", choices=["hash", "local"], default="hash")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--writer-records", type=int, default=5120)
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "writer", "big"])
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="r2-bench-log-") as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            results["throughput"] = throughput(args, work)
        if "writer" not in args.skip:
            results["writer"] = writer_cost(args, work)
        if "big" not in args.skip:
            results["big"] = big(args, work)
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
