"""Write `router_core/embedders/data/local-q8-probes.npz`: the probe texts and the vectors the
`local-q8` embedder gives them, which every later load must reproduce (cosine >=
`local_q8.PROBE_MIN_COSINE`).

Run once when the derivation recipe (`local_q8.DERIVATION_VERSION`) changes, with the
onnxruntime the checkpoints are trained with; it derives into a temporary cache directory, so
the probes come from a fresh derivation, never a stale cached file. No network.

    python scripts/make_local_q8_probes.py
"""

from __future__ import annotations

import tempfile

import numpy as np
import onnxruntime as ort

from router_core.embedders import local_q8

PROBES = [
    "",
    "hi",
    "What is the capital of France?",
    "Translate 'good morning' into German and Japanese.",
    "Write a Python function that returns the n-th Fibonacci number using memoisation.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Solve for x: 3x^2 - 12x + 9 = 0. Show each step.",
    "Which of the following is a prime number? (A) 21 (B) 27 (C) 29 (D) 33",
    "Résumé des événements: la tempête a coupé l'électricité à Zürich et à Genève.",
    "東京の天気は明日どうなりますか？",
    "Summarise the main causes of the First World War in three bullet points.",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 10;",
    "I feel anxious before exams. Any advice on how to prepare calmly?",
    "Explain the difference between TCP and UDP to a ten-year-old.",
    "The patient presents with fever, cough and shortness of breath for three days. " * 4,
    # Longer than the 256-wordpiece truncation: checks the cut as well.
    " ".join(f"Sentence {i} of a long passage about rivers, tides and estuaries."
             for i in range(60)),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        emb = local_q8.OnnxMiniLMQ8Embedder.__new__(local_q8.OnnxMiniLMQ8Embedder)
        # Build without the probe check (there is no reference yet): the parent's constructor.
        emb.cache_dir = tmp
        super(local_q8.OnnxMiniLMQ8Embedder, emb).__init__(threads=1)
        vectors = emb.embed(PROBES)
        emb.close()
    np.savez_compressed(local_q8.probe_file(), texts=np.array(PROBES), vectors=vectors,
                        onnxruntime=np.array(ort.__version__))
    print(f"wrote {local_q8.probe_file()}: {len(PROBES)} probes, onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
