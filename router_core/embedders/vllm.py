"""In-process vLLM pooling embedder (optional extra `r2-gateway[vllm]`), e.g. Qwen/Qwen3-0.6B.

Owns only the adaptation of `vllm.LLM(model=..., runner="pooling").embed(texts)` to the embedder
protocol: lazy import with a clear error, truncation, dimension and value checks. The release's
checkpoints were trained on these embeddings (served by `vllm serve --runner pooling`); the
`remote` embedder reaches the same model over HTTP without vLLM in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import EmbedderError
from .base import EmbeddingArray, clip_texts

_MISSING = ("the 'vllm' embedder needs vLLM in this process: pip install 'r2-gateway[vllm]' "
            "(or run `vllm serve MODEL --runner pooling` and use the 'remote' embedder)")


class VLLMEmbedder:
    """Embeds with an in-process `vllm.LLM` pooling engine; `engine_kwargs` go to `vllm.LLM`."""

    def __init__(self, model: str = "Qwen/Qwen3-0.6B", dim: int = 1024, max_chars: int = 8000,
                 **engine_kwargs: Any) -> None:
        if dim < 1 or max_chars < 1:
            raise ValueError("dim and max_chars must be positive")
        try:
            import vllm
        except ImportError as exc:
            raise EmbedderError(f"{_MISSING} ({exc})") from exc
        self.id = model
        self.model = model
        self.dim = dim
        # vLLM's embedding pooler L2-normalises unless the pooler config turns it off.
        self.normalized = True
        self.max_chars = max_chars
        self._llm: Any = vllm.LLM(model=model, runner="pooling", **engine_kwargs)

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        clipped = clip_texts(texts, self.max_chars, closed=self._llm is None)
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        outputs = self._llm.embed(clipped, use_tqdm=False)
        if len(outputs) != len(texts):
            raise EmbedderError(f"vLLM returned {len(outputs)} embeddings for {len(texts)} texts")
        try:
            arr = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        except (AttributeError, TypeError, ValueError):
            raise EmbedderError("vLLM returned embeddings that are not numeric vectors") from None
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise EmbedderError(f"vLLM model {self.model} gives embeddings of shape {arr.shape}, "
                                f"expected [n, {self.dim}]")
        if not np.all(np.isfinite(arr)):
            raise EmbedderError(f"vLLM model {self.model} returned non-finite values")
        return arr

    def close(self) -> None:
        self._llm = None
