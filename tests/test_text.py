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
    routing_text,
    token_counter,
    unlimited_policy,
    words_token_count,
)
from router_core import text as text_mod
from router_core.embedders.base import EmbeddingArray
from router_core.text import COMPOSITIONS, count_message_tokens


# -- routing_text ---------------------------------------------------------------------------
def test_a_single_user_message_routes_on_exactly_its_text() -> None:
    prompt = "  What is 2+2?\n"
    assert routing_text([{"role": "user", "content": prompt}]) == prompt


def test_latest_user_turn_first_then_earlier_turns_no_system_by_default() -> None:
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "tool", "content": "TOOL"},
        {"role": "developer", "content": "DEV"},
        {"role": "user", "content": "Q2"},
    ]
    assert routing_text(messages) == "Q2\n\nQ1\n\nSYS\n\nDEV"
    assert routing_text(messages, composition="latest") == "Q2"
    assert routing_text(messages, composition="latest+history") == "Q2\n\nQ1"
    assert routing_text(messages, composition="latest+history+system") == "Q2\n\nQ1\n\nSYS\n\nDEV"
    assert routing_text(messages, composition="in-order") == "SYS\n\nQ1\n\nDEV\n\nQ2"


def test_a_long_system_prompt_never_displaces_the_question() -> None:
    system = "You are a helpful assistant for Acme Corp. " * 200
    question = "Prove there are infinitely many primes."
    for comp in COMPOSITIONS:
        if comp == "in-order":
            continue
        text = routing_text([{"role": "system", "content": system},
                             {"role": "user", "content": question}],
                            max_chars=2000, composition=comp)
        assert text.startswith("Prove there are infinitely many primes.")
        assert len(text) <= 2000


def test_the_latest_turn_is_kept_whole_up_to_the_window_then_history_fills_the_rest() -> None:
    first = "x" * 1500
    messages = [{"role": "user", "content": first}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and in Python?"}]
    text = routing_text(messages, max_chars=1000)
    assert text.startswith("and in Python?\n\n")
    assert len(text) == 1000
    assert routing_text([{"role": "user", "content": "y" * 5000}], max_chars=1000) == "y" * 1000


def test_the_system_prompt_gets_at_most_its_share_of_the_window() -> None:
    text = routing_text([{"role": "system", "content": "s" * 5000},
                         {"role": "user", "content": "q" * 100}], max_chars=2000)
    assert text == "q" * 100 + "\n\n" + "s" * 254


def test_only_system_text_routes_on_the_system_prompt() -> None:
    assert routing_text([{"role": "system", "content": "Translate to French."}]) == \
        "Translate to French."


def test_list_content_keeps_text_parts_and_skips_multimodal_parts() -> None:
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "BBBB", "format": "wav"}},
        {"type": "text", "text": "and this"},
        {"type": "text"},
    ]}]
    assert routing_text(messages) == "look at this\nand this"


def test_empty_and_missing_contents_are_skipped() -> None:
    messages = [{"role": "system", "content": None}, {"role": "user", "content": "hi"},
                {"role": "user", "content": "   "}, {"role": "user"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]
    assert routing_text(messages) == "hi"


def test_content_that_is_neither_string_nor_list_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as err:
        routing_text([{"role": "user", "content": 42}])
    assert err.value.param == "messages.content"


def test_message_tokens_count_every_role_and_the_chat_template_like_litellm() -> None:
    import litellm

    messages = [{"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]}]
    ours = count_message_tokens(messages, cl100k_token_count)
    assert ours == litellm.token_counter(model="gpt-4", messages=messages)
    assert ours > sum(cl100k_token_count(t) for t in ("You are helpful.", "What is 2+2?",
                                                      "4", "And 3+3?"))


def test_route_messages_routes_the_question_not_the_system_prompt() -> None:
    spy = _Spy(64)
    router = Router(_checkpoint("hash", 64), spy)
    d = router.route_messages([{"role": "system", "content": "Be exact."},
                               {"role": "user", "content": [{"type": "text", "text": "2+2?"}]}],
                              lambda_=0.5)
    assert d.model in router.models
    assert spy.seen == ["2+2?\n\nBe exact."]


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
    assert d.input_tokens == count_message_tokens([{"role": "user", "content": prompt}],
                                                  cl100k_token_count) > 30_000
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
