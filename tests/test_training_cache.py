"""The embedding cache: embed once per (embedder id, text), survive bad shards, honour env."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from router_core import HashEmbedder
from router_core.training import EmbeddingCache, default_cache_dir, embed_texts


class CountingEmbedder(HashEmbedder):
    """The hash embedder, recording every text it is asked to embed."""

    def __init__(self, id: str = "counting", max_chars: int = 8192) -> None:
        super().__init__(dim=16, id=id, max_chars=max_chars)
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return super().embed(texts)


def test_second_run_embeds_nothing(tmp_path: Path) -> None:
    texts = ["alpha beta", "gamma", "alpha beta", "delta"]
    first = CountingEmbedder()
    a = embed_texts(first, texts, EmbeddingCache(tmp_path, first.id, first.dim))
    assert sorted(first.seen) == ["alpha beta", "delta", "gamma"]  # duplicates embedded once
    again = CountingEmbedder()
    b = embed_texts(again, texts, EmbeddingCache(tmp_path, again.id, again.dim))
    assert again.seen == []
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 16) and a.dtype == np.float32


def test_cache_is_per_embedder_and_uses_served_truncation(tmp_path: Path) -> None:
    embed_texts(CountingEmbedder("one"), ["text"], EmbeddingCache(tmp_path, "one", 16))
    other = CountingEmbedder("two")
    embed_texts(other, ["text"], EmbeddingCache(tmp_path, "two", 16))
    assert other.seen == ["text"]
    short = CountingEmbedder("short", max_chars=4)
    embed_texts(short, ["abcdefgh", "abcdXYZ"], EmbeddingCache(tmp_path, "short", 16))
    assert short.seen == ["abcd"]  # both truncate to the same text: one embedding


def test_unreadable_shard_is_skipped(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path, emb.id, emb.dim)
    embed_texts(emb, ["x y"], cache)
    (cache.directory / "shard-broken.npz").write_bytes(b"not a zip")
    again = CountingEmbedder()
    embed_texts(again, ["x y", "z"], EmbeddingCache(tmp_path, emb.id, emb.dim))
    assert again.seen == ["z"]


def test_no_cache_and_empty_input(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    assert embed_texts(emb, [], None).shape == (0, 16)
    embed_texts(emb, ["a"], None)
    embed_texts(emb, ["a"], None)
    assert emb.seen == ["a", "a"]


def test_default_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("R2_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("R2_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "r2-gateway" / "embeddings"
