"""Where the local embedder's time goes, and the two fixes of issue 19, before and after in one run.

In one process, on the real all-MiniLM-L6-v2 int8 ONNX embedder (`OnnxMiniLMEmbedder`):

1. **Stages**: tokenisation, the ONNX run and pooling, in ms of wall time per text, with CPU per
   text, for short (~10 wordpieces), medium (~35) and long (~250) prompts, one at a time and in
   batches of 16.
2. **Padding**: micro-batches of mixed lengths (15 short prompts and one long one; and a mix of
   all three) embedded as before (one run padded to the batch's longest text) and as now (one
   run per length bucket, `local_onnx.length_buckets`): CPU per text, the ratio, and the largest
   difference between the two sets of vectors.
3. **Spinning**: ONNX Runtime with 2 intra-op threads, texts one at a time with a 5 ms idle gap
   (as at concurrency 1, where LiteLLM runs between embeddings), with the thread pool spinning
   (ONNX Runtime's default, before) and not spinning (now); 1 thread for reference.
4. **local vs local-q8** (`--only q8` runs just this): CPU per text of the `local` embedder and
   of `local-q8` (the same MiniLM dynamically quantised to int8, `local_q8.py`), both on one
   thread, by prompt length and batch size, alternating; the ratio q8/local and the cosine of
   their vectors.

5. **local-q8 v1 vs v2** (`--only fuse` runs just this): the derived graph as first shipped
   (v1: the export quantised as it was, served with ONNX Runtime's SkipLayerNormalization
   fusion), the same graph with that fusion off, and v2 (attention and GELU fused into contrib
   ops before quantising, `onnx_fuse.py`, SkipLayerNormalization fusion off): CPU per text, one
   text per run (as `local-q8` embeds), one thread, alternating; ratios to v1 and the least
   cosine of v2's vectors to v1's (the quantiser's dynamic scales see different fp32 rounding,
   which is why v2 has its own id and checkpoints).

6. **Pooling and the interpreter lock** (`--only gil`): `local-q8` embedding the medium prompts
   on a worker thread (as the gateway's batcher does) while the main thread either sleeps or
   runs pure-Python work without pause (as a loaded event loop does), with pooling in numpy
   after the run (before) and inside the ONNX graph (now, `local_onnx.pooled_graph`): texts
   embedded per second by the worker, and the main thread's work done per second, alternating.
   numpy gives up the interpreter lock inside each ufunc on arrays this size; taking it back from
   a thread that never blocks waits up to the switch interval (5 ms).

Rows alternate before/after `--rounds` times; ratios are within the run. The machine is shared:
compare the ratios, not the absolute numbers across runs.

    python benchmarks/bench_embed_stages.py --rounds 3
    python benchmarks/bench_embed_stages.py --only q8 --rounds 5
    python benchmarks/bench_embed_stages.py --only fuse --rounds 5
    python benchmarks/bench_embed_stages.py --only gil --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from router_core.embedders.local_q8 import OnnxMiniLMQ8Embedder

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHORT = ["What is the capital of France?", "hi", "Translate 'good morning' to Spanish.",
         "What's 17 * 23?", "Tell me a joke.", "Who wrote Hamlet?", "Define entropy.",
         "Is a tomato a fruit?", "Convert 100 F to C.", "Name three primes.", "What is TCP?",
         "Recommend a book.", "Spell 'necessary'.", "Is 91 prime?", "Say hello.", "Why?"]
MEDIUM = [f"Question {i}: explain, in plain words and with one example, how {t} works, why it "
          f"matters and what people most often get wrong about it." for i, t in enumerate(
              ("photosynthesis", "a hash map", "TCP congestion control", "inflation",
               "vaccination", "a compiler", "the tides", "public-key cryptography"))]
LONG = [("You are a careful coding agent. Read the repository, run the tests, keep changes "
         "small, never push to main, explain each step and ask before deleting files. ") * 6
        + f"Task {i}: fix the failing test." for i in range(4)]


def cpu_per_text(fn: Callable[[], Any], texts: int, min_s: float = 1.0) -> tuple[float, float]:
    """(CPU ms per text, wall ms per text) of calling `fn` repeatedly for about `min_s`."""
    fn()
    calls, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < min_s or calls < 3:
        fn()
        calls += 1
    return ((time.process_time() - cpu0) / calls / texts * 1000,
            (time.perf_counter() - wall0) / calls / texts * 1000)


def padded_per_batch(emb: Any, texts: list[str]) -> np.ndarray:
    """The embedder as before: one run, every row padded to the batch's longest text."""
    rows = [e.ids for e in emb._tokenizer.encode_batch(texts)]
    emb._stages = {"tokenize": 0.0, "onnx": 0.0}
    return np.asarray(emb._run(rows))


def stages(emb: Any, rounds: int) -> list[dict[str, Any]]:
    out = []
    for name, texts in (("short", SHORT), ("medium", MEDIUM), ("long", LONG)):
        for bs in (1, 16):
            batch = (texts * 16)[:bs]
            totals: dict[str, list[float]] = {"tokenize": [], "onnx": []}
            cpu = []
            for _ in range(rounds):
                c, _ = cpu_per_text(lambda b=batch: emb.embed(b), bs, 0.5)
                cpu.append(c)
                for k, v in emb.last_stages.items():
                    totals[k].append(v / bs * 1000)
            tokens = float(np.mean([len(e.ids) for e in emb._tokenizer.encode_batch(batch)]))
            out.append({"prompts": name, "batch": bs, "tokens": tokens,
                        "cpu_ms_per_text": statistics.median(cpu),
                        **{f"{k}_ms_per_text": statistics.median(v) for k, v in totals.items()}})
    return out


def padding(emb: Any, rounds: int) -> list[dict[str, Any]]:
    out = []
    mixes = {"15 short + 1 long": SHORT[:15] + LONG[:1],
             "mixed (6 short, 6 medium, 4 long)": SHORT[:6] + MEDIUM[:6] + LONG[:4]}
    for name, texts in mixes.items():
        before, after = [], []
        for _ in range(rounds):
            before.append(cpu_per_text(lambda t=texts: padded_per_batch(emb, t), len(texts))[0])
            after.append(cpu_per_text(lambda t=texts: emb.embed(t), len(texts))[0])
        diff = float(np.abs(padded_per_batch(emb, texts) - emb.embed(texts)).max())
        b, a = statistics.median(before), statistics.median(after)
        out.append({"batch": name, "before_cpu_ms_per_text": b, "after_cpu_ms_per_text": a,
                    "ratio": a / b, "max_abs_diff": diff})
    return out


def spinning(rounds: int) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from router_core.embedders.local_onnx import OnnxMiniLMEmbedder, _model_file

    def spinning_session(threads: int) -> Any:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(_model_file()[0]), sess_options=opts,
                                    providers=["CPUExecutionProvider"])

    variants = {"2 threads, spinning (before)": OnnxMiniLMEmbedder(threads=2),
                "2 threads, no spinning (now)": OnnxMiniLMEmbedder(threads=2),
                "1 thread": OnnxMiniLMEmbedder(threads=1)}
    variants["2 threads, spinning (before)"]._session = spinning_session(2)
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    wall: dict[str, list[float]] = {k: [] for k in variants}

    for _ in range(rounds):
        for name, emb in variants.items():
            def one(e: Any = emb) -> None:
                for i in range(8):
                    e.embed([MEDIUM[i]])
                    time.sleep(0.005)
            c, w = cpu_per_text(one, 8)
            cpu[name].append(c)
            wall[name].append(w - 5.0)
    base = statistics.median(cpu["2 threads, spinning (before)"])
    return [{"session": k, "cpu_ms_per_text": statistics.median(cpu[k]),
             "wall_ms_per_text": statistics.median(wall[k]),
             "cpu_ratio_vs_spinning": statistics.median(cpu[k]) / base} for k in variants]


def q8_vs_local(rounds: int) -> list[dict[str, Any]]:
    from router_core.embedders.local_onnx import OnnxMiniLMEmbedder

    pair = {"local": OnnxMiniLMEmbedder(threads=1), "local-q8": OnnxMiniLMQ8Embedder(threads=1)}
    out = []
    for name, texts in (("short", SHORT), ("medium", MEDIUM), ("long", LONG)):
        for bs in (1, 16):
            batch = (texts * 16)[:bs]
            cpu: dict[str, list[float]] = {k: [] for k in pair}
            for _ in range(rounds):
                for k, emb in pair.items():
                    cpu[k].append(cpu_per_text(lambda b=batch, e=emb: e.embed(b), bs, 0.5)[0])
            cos = np.sum(pair["local"].embed(batch) * pair["local-q8"].embed(batch), axis=1)
            tokens = float(np.mean([len(e.ids) for e in
                                    pair["local"]._tokenizer.encode_batch(batch)]))
            local, q8 = statistics.median(cpu["local"]), statistics.median(cpu["local-q8"])
            out.append({"prompts": name, "batch": bs, "tokens": tokens,
                        "local_cpu_ms_per_text": local, "q8_cpu_ms_per_text": q8,
                        "ratio_q8_over_local": q8 / local, "min_cosine": float(cos.min())})
    for emb in pair.values():
        emb.close()
    return out


class GraphEmbedder(OnnxMiniLMQ8Embedder):
    """`local-q8`'s pipeline (one thread) on a given derived graph, with the given ONNX Runtime
    optimisers off and no probe check (a benchmark variant has no shipped reference)."""

    def __init__(self, model: Path, model_id: str = OnnxMiniLMQ8Embedder.model_id,
                 disabled: tuple[str, ...] = OnnxMiniLMQ8Embedder.disabled_optimizers) -> None:
        self._path, self.model_id, self.disabled_optimizers = model, model_id, disabled
        super().__init__(threads=1)

    def _model_path(self) -> Path:
        return self._path

    def _check_probes(self) -> None:
        pass


def fuse_v1_v2(rounds: int) -> list[dict[str, Any]]:
    import tempfile

    from router_core.embedders.local_onnx import verified_model_file
    from router_core.embedders.local_q8 import derive

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = Path(tmp) / "v1.onnx", Path(tmp) / "v2.onnx"
        derive(verified_model_file()[0], v1, fuse=False)
        derive(verified_model_file()[0], v2)
        graphs = {"v1": GraphEmbedder(v1, disabled=()), "v1-noSLN": GraphEmbedder(v1),
                  "v2": GraphEmbedder(v2)}
        for name, texts in (("short", SHORT), ("medium", MEDIUM), ("long", LONG)):
            cpu: dict[str, list[float]] = {k: [] for k in graphs}
            for _ in range(rounds):
                for k, emb in graphs.items():
                    cpu[k].append(cpu_per_text(
                        lambda t=texts, e=emb: [e.embed([x]) for x in t], len(texts), 0.5)[0])
            cos = np.sum(graphs["v1"].embed(texts) * graphs["v2"].embed(texts), axis=1)
            med = {k: statistics.median(v) for k, v in cpu.items()}
            out.append({"prompts": name, "cpu_ms_per_text": med,
                        "ratio_to_v1": {k: v / med["v1"] for k, v in med.items()},
                        "min_cosine_v2_v1": float(cos.min())})
        for emb in graphs.values():
            emb.close()
    return out


class NumpyPooledQ8(OnnxMiniLMQ8Embedder):
    """`local-q8` as it pooled before: the graph's `last_hidden_state`, pooled in numpy."""

    def _run(self, rows: list[list[int]]) -> np.ndarray:
        from router_core.embedders.local_onnx import mean_pool_normalize

        feeds = self._feeds(rows)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return mean_pool_normalize(np.asarray(hidden, dtype=np.float32), feeds["attention_mask"])


def _python_work() -> int:
    """About 20-40 us of pure-Python work that never releases the interpreter lock."""
    return sum(len(str(i)) for i in range(200))


def gil(rounds: int, seconds: float = 3.0) -> list[dict[str, Any]]:
    import threading

    variants = {"numpy pooling (before)": NumpyPooledQ8(threads=1),
                "pooling in the graph (now)": OnnxMiniLMQ8Embedder(threads=1)}
    a, b = (e.embed(MEDIUM) for e in variants.values())
    cosine = float(np.min(np.sum(a * b, axis=1)))
    samples: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, emb in variants.items():
            for busy in (False, True):
                stop, done = threading.Event(), [0]

                def worker(e: Any = emb, d: list[int] = done, s: threading.Event = stop) -> None:
                    while not s.is_set():
                        e.embed(MEDIUM)
                        d[0] += len(MEDIUM)

                thread = threading.Thread(target=worker)
                start = time.perf_counter()
                thread.start()
                work = 0
                while time.perf_counter() - start < seconds:
                    if busy:
                        _python_work()
                        work += 1
                    else:
                        time.sleep(0.01)
                stop.set()
                thread.join()
                wall = time.perf_counter() - start
                samples.setdefault((name, busy), []).append((done[0] / wall, work / wall))
    for emb in variants.values():
        emb.close()
    return [{"variant": name, "main_thread": "busy" if busy else "idle",
             "texts_per_s": statistics.median(t for t, _ in v),
             "main_work_per_s": statistics.median(w for _, w in v),
             "min_cosine_to_other": cosine} for (name, busy), v in samples.items()]


def print_gil(rows: list[dict[str, Any]]) -> None:
    print("\nlocal-q8 on a worker thread, medium prompts; main thread idle or busy with Python")
    base = {r["main_thread"]: r for r in rows if "before" in r["variant"]}
    for r in rows:
        ref = base[r["main_thread"]]
        work = r["main_work_per_s"] / max(ref["main_work_per_s"], 1e-9)
        print(f"  {r['variant']:<28} main {r['main_thread']:<5} {r['texts_per_s']:8.1f} texts/s "
              f"(x{r['texts_per_s'] / ref['texts_per_s']:.2f})  main work "
              f"{r['main_work_per_s']:9.0f}/s (x{work:.2f})")
    least = rows[0]["min_cosine_to_other"]
    print(f"  least cosine between the two variants' vectors: {least:.7f}")


def print_fuse(rows: list[dict[str, Any]]) -> None:
    print("\nlocal-q8 v1 vs v2, one text per run, 1 thread: CPU ms per text (median of rounds)")
    print(f"{'prompts':<8}{'v1':>8}{'v1-noSLN':>10}{'v2':>8}{'v2/v1':>8}{'min cos v2/v1':>15}")
    for r in rows:
        c, q = r["cpu_ms_per_text"], r["ratio_to_v1"]
        print(f"{r['prompts']:<8}{c['v1']:>8.2f}{c['v1-noSLN']:>10.2f}{c['v2']:>8.2f}"
              f"{q['v2']:>8.2f}{r['min_cosine_v2_v1']:>15.4f}")


def print_q8(rows: list[dict[str, Any]]) -> None:
    print("\nlocal vs local-q8, 1 thread: CPU ms per text (median of rounds)")
    print(f"{'prompts':<8}{'batch':>6}{'tokens':>8}{'local':>9}{'q8':>8}{'q8/local':>10}"
          f"{'min cos':>9}")
    for r in rows:
        print(f"{r['prompts']:<8}{r['batch']:>6}{r['tokens']:>8.0f}"
              f"{r['local_cpu_ms_per_text']:>9.2f}{r['q8_cpu_ms_per_text']:>8.2f}"
              f"{r['ratio_q8_over_local']:>10.2f}{r['min_cosine']:>9.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--only", choices=["all", "q8", "fuse", "gil"], default="all",
                        help="q8: only the local vs local-q8 comparison (section 4); fuse: "
                             "only local-q8 v1 vs v2 (section 5); gil: only pooling and the "
                             "interpreter lock (section 6)")
    args = parser.parse_args(argv)
    from router_core.embedders.local_onnx import OnnxMiniLMEmbedder

    load0 = os.getloadavg()[0]
    print(f"bench_embed_stages: {len(os.sched_getaffinity(0))} CPUs, load average {load0:.2f}")
    sections = {"q8": (q8_vs_local, print_q8), "fuse": (fuse_v1_v2, print_fuse),
                "gil": (gil, print_gil)}
    if args.only in sections:
        measure, show = sections[args.only]
        rows = measure(args.rounds)
        show(rows)
        print(f"\nload average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        if args.json:
            Path(args.json).write_text(json.dumps({args.only: rows}, indent=1) + "\n")
        return 0
    emb = OnnxMiniLMEmbedder(threads=1)
    report: dict[str, Any] = {"stages": stages(emb, args.rounds),
                              "padding": padding(emb, args.rounds)}
    print("\n1 thread: ms per text by stage (wall), CPU ms per text")
    print(f"{'prompts':<8}{'batch':>6}{'tokens':>8}{'tokenize':>10}{'onnx+pool':>10}"
          f"{'cpu':>8}")
    for r in report["stages"]:
        print(f"{r['prompts']:<8}{r['batch']:>6}{r['tokens']:>8.0f}"
              f"{r['tokenize_ms_per_text']:>10.3f}{r['onnx_ms_per_text']:>10.2f}"
              f"{r['cpu_ms_per_text']:>8.2f}")
    print("\npadding: CPU ms per text, one run padded to the longest (before) vs length buckets")
    for r in report["padding"]:
        print(f"  {r['batch']:<36} before {r['before_cpu_ms_per_text']:6.2f}  after "
              f"{r['after_cpu_ms_per_text']:6.2f}  x{r['ratio']:.2f}  max |diff| "
              f"{r['max_abs_diff']:.1e}")
    emb.close()
    if len(os.sched_getaffinity(0)) >= 2:
        report["spinning"] = spinning(args.rounds)
        print("\nspinning: one medium text at a time with 5 ms idle gaps (as at concurrency 1)")
        for r in report["spinning"]:
            print(f"  {r['session']:<32} cpu {r['cpu_ms_per_text']:6.2f} ms/text  wall "
                  f"{r['wall_ms_per_text']:6.2f} ms/text  cpu x{r['cpu_ratio_vs_spinning']:.2f}")
    report["q8"] = q8_vs_local(args.rounds)
    print_q8(report["q8"])
    report["fuse"] = fuse_v1_v2(args.rounds)
    print_fuse(report["fuse"])
    report["loadavg"] = [load0, os.getloadavg()[0]]
    print(f"\nload average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
