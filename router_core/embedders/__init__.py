"""Embedders behind one protocol, built from a config mapping by `make_embedder`.

Kinds: `local` (the offline default, all-MiniLM-L6-v2 int8 on ONNX Runtime), `local-st`
(the same model in fp32 on sentence-transformers/torch, extra `r2-gateway[torch]`), `remote`
(any OpenAI-compatible `/v1/embeddings`, e.g. vLLM serving Qwen3-0.6B with `--runner pooling`),
`vllm` (in-process vLLM pooling, extra `r2-gateway[vllm]`), `hash` (deterministic, for tests).
Implementations are imported only when chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._errors import InvalidInputError
from .base import Embedder, EmbeddingArray, describe
from .hashing import HashEmbedder

__all__ = ["Embedder", "EmbeddingArray", "HashEmbedder", "describe", "make_embedder"]

KINDS = ("hash", "local", "local-st", "remote", "vllm")


def make_embedder(config: Mapping[str, Any] | None = None) -> Embedder:
    """Build the embedder a config names; `None` or `{}` gives the offline default."""
    cfg = dict(config or {})
    kind = cfg.pop("kind", "local")
    if kind == "hash":
        return HashEmbedder(**cfg)
    if kind == "local":
        from .local_onnx import OnnxMiniLMEmbedder

        return OnnxMiniLMEmbedder(**cfg)
    if kind == "local-st":
        from .local_st import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(**cfg)
    if kind == "remote":
        from .remote import RemoteEmbedder

        return RemoteEmbedder(**cfg)
    if kind == "vllm":
        from .vllm import VLLMEmbedder

        return VLLMEmbedder(**cfg)
    raise InvalidInputError(f"unknown embedder kind {kind!r}; expected one of {KINDS}",
                            param="embedder.kind")
