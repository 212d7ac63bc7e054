"""A deterministic, dependency-free embedder for tests and the stub-embedder benchmark.

Hashes word unigrams into `dim` buckets (signed), then L2-normalises. It is not a semantic
model; it is stable across runs and machines, which is what tests need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .base import EmbeddingArray


class HashEmbedder:
    def __init__(self, dim: int = 384, id: str = "hash", max_chars: int = 8192) -> None:
        self.id = id
        self.dim = dim
        self.normalized = True
        self.max_chars = max_chars

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text[: self.max_chars].lower().split():
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm > 0 else 1.0 / np.sqrt(self.dim)
        return out

    def close(self) -> None:
        return None
