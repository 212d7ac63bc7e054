"""Embedders behind one protocol, built from a config mapping by `make_embedder`.

Kinds: `local-q8` (the offline default: all-MiniLM-L6-v2 with integer arithmetic and fused
attention on ONNX Runtime, derived once from `local`'s file; a quarter to a third of its CPU),
`local` (the same model as shipped: int8 weights computed in fp32), `local-st` (the same
model in fp32 on sentence-transformers/torch, extra `r2-gateway[torch]`), `remote` (any
OpenAI-compatible `/v1/embeddings`, e.g. vLLM serving Qwen3-0.6B with `--runner pooling`),
`vllm` (in-process vLLM pooling, extra `r2-gateway[vllm]`), `static-minilm` (the fast offline
option: token vectors distilled from MiniLM, no model run; see docs/embedders.md), `hash`
(deterministic, for tests).
Implementations are imported only when chosen.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidInputError
from .base import Embedder, EmbeddingArray, describe
from .hashing import HashEmbedder

__all__ = ["Embedder", "EmbeddingArray", "HashEmbedder", "check_options", "describe",
           "make_embedder", "serving_config"]

KINDS = ("hash", "local", "local-q8", "local-st", "remote", "static-minilm", "vllm")
#: The kind a config without one gets (issue 19: within 0.005 test AUDC of `local` on every
#: shared dataset, a quarter to a third of its CPU per text; docs/embedders.md).
DEFAULT_KIND = "local-q8"


def _embedder_class(kind: Any) -> type:
    if kind == "hash":
        return HashEmbedder
    if kind == "local":
        from .local_onnx import OnnxMiniLMEmbedder

        return OnnxMiniLMEmbedder
    if kind == "local-q8":
        from .local_q8 import OnnxMiniLMQ8Embedder

        return OnnxMiniLMQ8Embedder
    if kind == "local-st":
        from .local_st import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder
    if kind == "static-minilm":
        from .static import StaticEmbedder

        return StaticEmbedder
    if kind == "remote":
        from .remote import RemoteEmbedder

        return RemoteEmbedder
    if kind == "vllm":
        from .vllm import VLLMEmbedder

        return VLLMEmbedder
    raise InvalidInputError(f"unknown embedder kind {kind!r}; expected one of {KINDS}",
                            param="embedder.kind")


def check_options(config: Mapping[str, Any] | None) -> None:
    """Refuse an unknown kind or an option the kind does not take (a mistyped key), naming
    it, before anything is built. Loads no model."""
    cfg = dict(config or {})
    cls = _embedder_class(cfg.pop("kind", DEFAULT_KIND))
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in cfg:
        if key not in params:
            raise InvalidInputError(
                f"unknown option {key!r} for this embedder kind; expected one of "
                f"{sorted(k for k in params if k != 'self')}", param=f"embedder.{key}")


def serving_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`config` as a serving gateway builds it: the local embedder's ONNX Runtime threads, when
    not set, sized by `local_onnx.serving_threads` (one CPU fewer than the process may use)."""
    cfg = dict(config or {})
    if cfg.get("kind", DEFAULT_KIND) in ("local", "local-q8") and cfg.get("threads") is None:
        from .local_onnx import serving_threads

        cfg["threads"] = serving_threads()
    return cfg


def make_embedder(config: Mapping[str, Any] | None = None) -> Embedder:
    """Build the embedder a config names; `None` or `{}` gives the offline default."""
    check_options(config)
    cfg = dict(config or {})
    cls = _embedder_class(cfg.pop("kind", DEFAULT_KIND))
    try:
        embedder: Embedder = cls(**cfg)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid embedder options: {exc}", param="embedder") from None
    return embedder
