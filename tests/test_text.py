"""What is routed from a request: the conversation text, truncation of huge prompts before
embedding, and the input-token counters (cl100k offline, the release's words*1.3)."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from router_core import (
    Checkpoint,
    EmbedderSpec,
    InvalidInputError,
    ModelSpec,
    Router,
    budget_policy,
    cl100k_token_count,
    messages_text,
    token_counter,
    unlimited_policy,
    words_token_count,
)
from router_core import text as text_mod
from router_core.embedders.base import EmbeddingArray


# -- messages_text --------------------------------------------------------------------------
def test_only_system_developer_and_user_turns_are_routed_in_order() -> None:
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "tool", "content": "TOOL"},
        {"role": "developer", "content": "DEV"},
        {"role": "user", "content": "Q2"},
    ]
    assert messages_text(messages) == "SYS\n\nQ1\n\nDEV\n\nQ2"


def test_list_content_keeps_text_parts_and_skips_multimodal_parts() -> None:
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "BBBB", "format": "wav"}},
        {"type": "text", "text": "and this"},
        {"type": "text"},
    ]}]
    assert messages_text(messages) == "look at this\nand this"


def test_empty_and_missing_contents_are_skipped() -> None:
    messages = [{"role": "system", "content": None}, {"role": "user", "content": "   "},
                {"role": "user"}, {"role": "user", "content": "hi"}]
    assert messages_text(messages) == "hi"


def test_content_that_is_neither_string_nor_list_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as err:
        messages_text([{"role": "user", "content": 42}])
    assert err.value.param == "messages.content"


def test_route_messages_routes_the_extracted_text() -> None:
    spy = _Spy(64)
    router = Router(_checkpoint("hash", 64), spy)
    d = router.route_messages([{"role": "system", "content": "Be exact."},
                               {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}],
                              lambda_=0.5)
    assert d.model in router.models
    assert spy.seen == ["Be exact.\n\n2+2?"]


def test_routing_an_empty_conversation_is_invalid_input() -> None:
    router = Router(_checkpoint("hash", 64), _Spy(64))
    with pytest.raises(InvalidInputError):
        router.route_messages([{"role": "assistant", "content": "only me"}])


# -- huge prompts ---------------------------------------------------------------------------
class _Spy:
    """Wraps an embedder and records the texts it was asked to embed."""

    def __init__(self, dim: int, inner: Any = None) -> None:
        self.inner = inner
        self.id = inner.id if inner is not None else "hash"
        self.dim = dim
        self.normalized = True
        self.max_chars = inner.max_chars if inner is not None else 1000
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        self.seen.extend(texts)
        if self.inner is not None:
            return np.asarray(self.inner.embed(texts), dtype=np.float32)
        return np.ones((len(texts), self.dim), np.float32) / np.sqrt(self.dim)

    def close(self) -> None:
        return None


def _checkpoint(embedder_id: str, dim: int) -> Checkpoint:
    rng = np.random.default_rng(0)
    policies = (budget_policy(100), unlimited_policy())
    return Checkpoint(
        embedder=EmbedderSpec(embedder_id, dim, True),
        models=(ModelSpec("a", "a", 1.0, 2.0), ModelSpec("b", "b", 0.1, 0.2)),
        policies=policies,
        arrays={"quality_coef": rng.normal(0, 0.1, (2, 2, dim)).astype(np.float32),
                "quality_intercept": np.full((2, 2), 0.5, np.float32),
                "tokens_coef": np.zeros((2, 2, dim), np.float32),
                "tokens_intercept": np.full((2, 2), 300.0, np.float32)},
        input_tokens="cl100k",
    )


@pytest.fixture(scope="module")
def onnx_embedder() -> Iterator[Any]:
    from router_core.embedders.local_onnx import OnnxMiniLMEmbedder

    emb = OnnxMiniLMEmbedder(max_chars=2000)
    yield emb
    emb.close()


def test_200k_char_prompt_routes_with_the_local_embedder_truncated(onnx_embedder: Any) -> None:
    spy = _Spy(384, onnx_embedder)
    router = Router(_checkpoint(onnx_embedder.id, 384), spy)
    prompt = ("Explain the history of the Roman empire in detail. " * 4000)[:200_000]
    assert len(prompt) == 200_000
    d = router.route(prompt, lambda_=0.5)
    assert d.model in ("a", "b")
    assert [len(t) for t in spy.seen] == [2000]
    # Input tokens are counted on the whole prompt (it is sent whole), not the embedded head.
    assert d.input_tokens == cl100k_token_count(prompt) > 30_000
    head = router.route(prompt[:2000], lambda_=0.5, input_tokens=d.input_tokens)
    assert (head.model, head.budget) == (d.model, d.budget)
    assert head.chosen.predicted_quality == pytest.approx(d.chosen.predicted_quality, abs=1e-6)


# -- token counters -------------------------------------------------------------------------
def test_cl100k_counts_loads_offline_from_the_bundled_bpe_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken.registry

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    text_mod._cl100k.cache_clear()
    try:
        assert cl100k_token_count("hello world") == 2
        assert cl100k_token_count("The quick brown fox jumps over the lazy dog.") == 10
    finally:
        text_mod._cl100k.cache_clear()


def test_cl100k_counts_special_token_text_as_plain_text() -> None:
    assert cl100k_token_count("<|endoftext|>") > 1


def test_cl100k_extrapolates_beyond_max_chars() -> None:
    text = "word " * 10_000
    exact = cl100k_token_count(text)
    estimate = cl100k_token_count(text, max_chars=5_000)
    assert estimate == pytest.approx(exact, rel=0.01)


@pytest.mark.parametrize(("text", "expected"), [
    ("", 1), ("one", 1), ("one two", 2), ("a b c", 3), (" ".join(["w"] * 10), 13),
    ("tabs\tand\nnewlines count as spaces", 7),
])
def test_words13_is_the_release_estimate(text: str, expected: int) -> None:
    assert words_token_count(text) == expected
    assert token_counter("words1.3")(text) == expected


def test_token_counter_names() -> None:
    assert token_counter("cl100k") is cl100k_token_count
    assert token_counter("tokenizer") is cl100k_token_count
    with pytest.raises(InvalidInputError) as err:
        token_counter("bpe-of-my-own")
    assert err.value.param == "input_tokens"
