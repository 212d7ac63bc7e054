"""The embedder seam: one protocol, implementations chosen by config.

An embedder turns texts into an `[N, dim]` float32 array. It has a stable `id` (checkpoints
record the id they were trained with and refuse another), a `dim`, whether it returns unit
vectors, and `max_chars`: the longest text it embeds (longer texts are truncated first, so a
200k-character prompt costs no more than a short one). An embedder may also set `inline = True`
when a text costs it microseconds: the gateway then calls it on the event loop instead of
through its batching thread (`gateway/batching.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .._errors import EmbedderError
from ..text import truncate

EmbeddingArray = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    id: str
    dim: int
    normalized: bool
    max_chars: int

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        """Embed `texts` (already truncated or not); returns `[len(texts), dim]` float32."""
        ...

    def close(self) -> None:
        """Release clients, sessions and threads."""
        ...


def describe(embedder: Embedder) -> dict[str, Any]:
    return {"id": embedder.id, "dim": embedder.dim, "normalized": embedder.normalized}


def clip_texts(texts: Sequence[str], max_chars: int, closed: bool = False) -> list[str]:
    """The checks every `embed()` starts with, then each text cut to `max_chars`."""
    if closed:
        raise EmbedderError("embedder is closed")
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not one str")
    return [truncate(t, max_chars) for t in texts]


def in_batches(embed_batch: Callable[[list[str]], EmbeddingArray], texts: list[str],
               batch_size: int) -> EmbeddingArray:
    """`embed_batch` over slices of at most `batch_size` texts, rows in order."""
    out = [embed_batch(texts[i: i + batch_size]) for i in range(0, len(texts), batch_size)]
    return np.concatenate(out, axis=0) if len(out) > 1 else out[0]
