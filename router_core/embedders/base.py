"""The embedder seam: one protocol, implementations chosen by config.

An embedder turns texts into an `[N, dim]` float32 array. It has a stable `id` (checkpoints
record the id they were trained with and refuse another), a `dim`, whether it returns unit
vectors, and `max_chars`: the longest text it embeds (longer texts are truncated first, so a
200k-character prompt costs no more than a short one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

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
