"""An embedder behind any OpenAI-compatible `POST {url}/embeddings` (e.g. vLLM `--runner pooling`).

Owns the HTTP side: one sync `httpx.Client`, batching, an overall per-request deadline, ordering
results by `index`, and turning failures into the core's errors: unreachable, timed out, 429 or
5xx is `EmbedderUnavailableError`; any other bad answer (4xx, wrong count or dimension,
non-numeric values) is `EmbedderError`. Messages name the URL (credentials stripped) and never the
API key or the texts. The dimension, when not configured, is probed once on first use.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np

from .._errors import EmbedderError, EmbedderUnavailableError
from .base import EmbeddingArray, clip_texts, in_batches

_PROBE_TEXT = "dimension probe"


def redact_url(url: str) -> str:
    """`url` without user:password, so it can appear in errors and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RemoteEmbedder:
    """Embeddings from an OpenAI-compatible server; `url` is the API base, e.g. `http://h:8000/v1`."""

    def __init__(self, url: str, model: str, dim: int | None = None, normalized: bool = False,
                 api_key_env: str | None = None, timeout_s: float = 10.0, batch_size: int = 64,
                 max_chars: int = 8000, id: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if timeout_s <= 0 or batch_size < 1 or max_chars < 1 or (dim is not None and dim < 1):
            raise ValueError("timeout_s, batch_size, max_chars and dim must be positive")
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/embeddings"
        self.model = model
        self.id = id or model
        self.normalized = normalized
        self.timeout_s = float(timeout_s)
        self.batch_size = batch_size
        self.max_chars = max_chars
        self._dim = dim
        self._where = redact_url(self.endpoint)
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise EmbedderError(f"environment variable {api_key_env} (the embedder's API key) "
                                    "is not set")
            headers["Authorization"] = f"Bearer {key}"
        self._client: httpx.Client | None = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout_s), follow_redirects=False)

    @property
    def dim(self) -> int:
        """The embedding dimension; probed with one request the first time if not configured."""
        if self._dim is None:
            self._dim = int(self._request([_PROBE_TEXT], None).shape[1])
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        self._dim = int(value)

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        # A closed client is reported by `_post`, after the empty-input shortcut.
        clipped = clip_texts(texts, self.max_chars)
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        return in_batches(self._embed_batch, clipped, self.batch_size)

    def _embed_batch(self, texts: list[str]) -> EmbeddingArray:
        batch = self._request(texts, self._dim)
        if self._dim is None:
            self._dim = int(batch.shape[1])
        return batch

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- one HTTP round trip -------------------------------------------------------------------
    def _request(self, texts: list[str], dim: int | None) -> EmbeddingArray:
        body = self._post({"model": self.model, "input": texts, "encoding_format": "float"})
        return self._parse(body, len(texts), dim)

    def _post(self, payload: dict[str, Any]) -> bytes:
        if self._client is None:
            raise EmbedderError("embedder is closed")
        # httpx timeouts are per phase (connect, each read); the deadline bounds the whole call.
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._client.stream("POST", self.endpoint, json=payload) as resp:
                status = resp.status_code
                if status == 429 or status >= 500:
                    raise EmbedderUnavailableError(
                        f"embedder at {self._where} unavailable: HTTP {status}")
                if status != 200:
                    raise EmbedderError(f"embedder at {self._where} refused the request: "
                                        f"HTTP {status}")
                chunks = []
                for chunk in resp.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline exceeded")
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise EmbedderUnavailableError(
                f"embedder at {self._where} timed out after {self.timeout_s:g}s") from None
        except httpx.TransportError as exc:
            raise EmbedderUnavailableError(
                f"embedder at {self._where} unreachable: {type(exc).__name__}") from None

    def _parse(self, body: bytes, n: int, dim: int | None) -> EmbeddingArray:
        bad = f"embedder at {self._where} sent a bad response"
        try:
            data = json.loads(body)["data"]
            items = sorted(data, key=lambda d: int(d["index"]))
            indices = [int(d["index"]) for d in items]
            vectors = [d["embedding"] for d in items]
        except (ValueError, KeyError, TypeError):
            raise EmbedderError(f"{bad}: not an OpenAI embeddings object") from None
        if indices != list(range(n)):
            raise EmbedderError(f"{bad}: expected indices 0..{n - 1}, got {len(indices)} items")
        if not all(isinstance(v, list) and all(_is_number(x) for x in v) for v in vectors):
            raise EmbedderError(f"{bad}: embeddings must be lists of numbers")
        lengths = {len(v) for v in vectors}
        if len(lengths) != 1 or 0 in lengths:
            raise EmbedderError(f"{bad}: embeddings have unequal or zero length")
        got = lengths.pop()
        if dim is not None and got != dim:
            raise EmbedderError(f"{bad}: {got}-d embeddings, expected {dim}-d")
        arr = np.asarray(vectors, dtype=np.float32)
        if not np.all(np.isfinite(arr)):
            raise EmbedderError(f"{bad}: non-finite values")
        return arr


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
