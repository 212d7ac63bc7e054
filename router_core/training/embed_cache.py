"""Embedding prompts once: an on-disk cache keyed by content hash and embedder id.

A prompt is truncated exactly as the router truncates it when serving (`text.truncate` to the
embedder's `max_chars`), then keyed by `sha256(embedder id, dim, truncated text)`, so a
second `r2 train` or `r2 eval` over the same data embeds nothing. The cache lives in
`$R2_CACHE_DIR` or `~/.cache/r2-gateway/embeddings`, one folder per embedder, as `.npz` shards
(`keys` as fixed-width bytes, `vectors` float32) written atomically and read with
`allow_pickle=False`. A shard that cannot be read is skipped and its prompts are re-embedded.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..embedders.base import Embedder
from ..text import truncate

F32 = npt.NDArray[np.float32]
SHARD_ROWS = 512


def default_cache_dir() -> Path:
    env = os.environ.get("R2_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "r2-gateway" / "embeddings"


def content_key(embedder_id: str, dim: int, text: str) -> bytes:
    digest = hashlib.sha256(f"{embedder_id}\0{dim}\0".encode() + text.encode("utf-8"))
    return digest.hexdigest().encode("ascii")


class EmbeddingCache:
    """Vectors of one embedder (`embedder_id`, `dim`) stored under `root`."""

    def __init__(self, root: str | Path, embedder_id: str, dim: int) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", embedder_id) or "embedder"
        self.directory = Path(root) / f"{safe}-{dim}"
        self.dim = dim
        self._vectors: dict[bytes, F32] | None = None

    def _load(self) -> dict[bytes, F32]:
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.directory.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as data:
                        keys, vectors = data["keys"], data["vectors"]
                except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                    continue
                if vectors.ndim == 2 and vectors.shape == (len(keys), self.dim):
                    self._vectors.update(zip((bytes(k) for k in keys),
                                             vectors.astype(np.float32), strict=True))
        return self._vectors

    def get(self, keys: Sequence[bytes]) -> dict[bytes, F32]:
        stored = self._load()
        return {k: stored[k] for k in keys if k in stored}

    def put(self, keys: Sequence[bytes], vectors: F32) -> None:
        if not keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}"
        tmp = self.directory / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.array(list(keys), dtype="S64"),
                 vectors=np.asarray(vectors, dtype=np.float32))
        os.replace(tmp, self.directory / f"{name}.npz")
        self._load().update(zip(keys, np.asarray(vectors, dtype=np.float32), strict=True))


def embed_texts(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None = None,
                progress: bool = False, batch_size: int = 64) -> F32:
    """`[len(texts), dim]` embeddings; only texts not in `cache` are sent to the embedder."""
    clipped = [truncate(t, embedder.max_chars) for t in texts]
    keys = [content_key(embedder.id, embedder.dim, t) for t in clipped]
    found = cache.get(keys) if cache is not None else {}
    todo: dict[bytes, str] = {}
    for key, text in zip(keys, clipped, strict=True):
        if key not in found and key not in todo:
            todo[key] = text
    if todo:
        from tqdm.auto import tqdm

        pending = list(todo.items())
        bar = tqdm(total=len(pending), desc=f"embedding ({embedder.id})", unit="prompt",
                   disable=not progress)
        done_keys: list[bytes] = []
        done_vecs: list[F32] = []
        for start in range(0, len(pending), batch_size):
            chunk = pending[start: start + batch_size]
            vecs = np.asarray(embedder.embed([t for _, t in chunk]), dtype=np.float32)
            found.update(zip((k for k, _ in chunk), vecs, strict=True))
            done_keys.extend(k for k, _ in chunk)
            done_vecs.append(vecs)
            bar.update(len(chunk))
            if cache is not None and len(done_keys) >= SHARD_ROWS:
                cache.put(done_keys, np.concatenate(done_vecs))
                done_keys, done_vecs = [], []
        bar.close()
        if cache is not None and done_keys:
            cache.put(done_keys, np.concatenate(done_vecs))
    if not keys:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32)
