"""Where routing time goes, and what the local embedder no longer wastes (issue 19): padding per
length bucket instead of per batch, stage timings in `/metrics` through the real OpenAI SDK."""

from __future__ import annotations

import itertools
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from faults import Vectors
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.app import build_app
from gateway.config import ConfigError, parse_settings
from router_core import HashEmbedder
from router_core.embedders.local_onnx import (
    POOLED_OUTPUT,
    OnnxMiniLMEmbedder,
    length_buckets,
    mean_pool_normalize,
)


def _cost(groups: Sequence[Sequence[int]], lengths: Sequence[int], overhead: int) -> int:
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)


def _brute_force(lengths: Sequence[int], overhead: int) -> int:
    """Least cost over every way to cut the sorted lengths into contiguous groups."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = 1 << 62
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, cur = [], [order[0]]
        for idx, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(idx)
        groups.append(cur)
        best = min(best, _cost(groups, lengths, overhead))
    return best


@pytest.mark.parametrize("lengths", [[10] * 15 + [256], [5, 200, 7, 180, 6], [34, 35, 36, 33],
                                     [1], [256, 256, 3], [9, 40, 41, 120, 119, 8, 250]])
def test_length_buckets_cover_every_text_once_at_least_cost(lengths: list[int]) -> None:
    groups = length_buckets(lengths, overhead=14)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert _cost(groups, lengths, 14) == _brute_force(lengths, 14)


def test_one_long_prompt_no_longer_pads_a_batch_of_short_ones() -> None:
    groups = length_buckets([10] * 15 + [256], overhead=14)
    assert sorted(map(sorted, groups)) == [list(range(15)), [15]]
    assert length_buckets([30, 31, 32], overhead=14) == [[0, 1, 2]]  # similar: one run
    assert length_buckets([]) == []


@pytest.fixture(scope="module")
def onnx() -> Any:
    emb = OnnxMiniLMEmbedder(threads=1)
    yield emb
    emb.close()


def test_mixed_length_batch_rows_equal_each_text_alone(onnx: OnnxMiniLMEmbedder) -> None:
    texts = ["hi", "What is 2+2?", " ".join(["the router picks a model"] * 60),
             "Translate 'good morning' to Spanish.", " ".join(["budget"] * 300)]
    together = onnx.embed(texts)
    alone = np.concatenate([onnx.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert set(onnx.last_stages) == {"tokenize", "onnx"}
    assert onnx.last_stages["onnx"] > 0


def test_the_graph_pools_and_normalises_as_sentence_transformers_does(
        onnx: OnnxMiniLMEmbedder) -> None:
    # Pooling moved into the ONNX graph (one hand-back of the interpreter lock per run instead
    # of one per numpy step): the same masked mean and unit norm, padded rows included.
    texts = ["hi", "What is 2+2?", " ".join(["the router picks a model"] * 20)]
    rows = [e.ids for e in onnx._tokenizer.encode_batch(texts)]
    feeds = onnx._feeds(rows)
    assert len({len(r) for r in rows}) == 3  # padded: the mask matters
    hidden, pooled = onnx._session.run(["last_hidden_state", POOLED_OUTPUT], feeds)
    np.testing.assert_allclose(pooled, mean_pool_normalize(hidden, feeds["attention_mask"]),
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-6)


def test_serving_sets_the_interpreter_switch_interval_and_puts_it_back(
        tmp_path: Path, standin: Any, serve_app: Any) -> None:
    before = sys.getswitchinterval()
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                gil_switch_interval_ms=0.5)
    gw = serve_app(build_app(parse_settings(settings)))
    assert gw.client().chat.completions.create(
        model="r2-auto", messages=[{"role": "user", "content": "hello"}]).choices
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    # A second gateway in the same process, stopped first: the first one still serves.
    second = serve_app(build_app(parse_settings(gateway_settings(
        tiny_checkpoint(tmp_path / "ck3"), standin.base_url, gil_switch_interval_ms=2))))
    assert sys.getswitchinterval() == pytest.approx(0.002)
    gw.server.stop()
    assert sys.getswitchinterval() == pytest.approx(0.002)
    second.server.stop()
    assert sys.getswitchinterval() == pytest.approx(before)
    with pytest.raises(ConfigError, match="gil_switch_interval_ms"):
        parse_settings(gateway_settings(tiny_checkpoint(tmp_path / "ck2"), standin.base_url,
                                        gil_switch_interval_ms=0))


class StagedEmbedder(HashEmbedder):
    """The hash embedder, reporting stage times as the local embedder does."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.last_stages: dict[str, float] = {}

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.last_stages = {"tokenize": 0.001, "onnx": 0.002}
        return super().embed(texts)


def _stage_count(text: str, stage: str) -> float:
    found = re.search(rf'^r2_stage_seconds_count{{stage="{stage}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_stage_timings_reach_metrics(tmp_path: Path, standin: Any, serve_app: Any) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                embed_cache_size=0)
    gw = serve_app(build_app(parse_settings(settings), embedder=StagedEmbedder()))
    for question in ("explain photosynthesis", "explain the tides"):
        answer = gw.client().chat.completions.create(
            model="r2-auto", messages=[{"role": "user", "content": question}])
        assert answer.choices
    text = httpx.get(f"{gw.url}/metrics").text
    for stage in ("route_embed", "route_count", "route_score"):
        assert _stage_count(text, stage) == 2.0, stage
    # the gateway's own warm-up embedding goes through the batcher too
    for stage in ("embed_queue", "embed_tokenize", "embed_onnx"):
        assert _stage_count(text, stage) >= 2.0, stage


class InlineEmbedder(HashEmbedder):
    """A microsecond embedder that says so (`inline`), recording the threads it ran on."""

    inline = True

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.threads: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.threads.append(threading.current_thread().name)
        return super().embed(texts)


def test_an_inline_embedder_is_called_on_the_loop_not_the_batch_thread(
        tmp_path: Path, standin: Any, serve_app: Any) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                embed_cache_size=0)
    embedder = InlineEmbedder()
    gw = serve_app(build_app(parse_settings(settings), embedder=embedder))
    answer = gw.client().chat.completions.create(
        model="r2-auto", messages=[{"role": "user", "content": "explain photosynthesis"}])
    assert answer.choices and answer.model in ("strong", "weak")
    assert embedder.threads and not any(t.startswith("r2-embed") for t in embedder.threads)
    text = httpx.get(f"{gw.url}/metrics").text
    assert _stage_count(text, "embed_queue") == 0.0  # never queued for the batch thread


class OrderEmbedder(HashEmbedder):
    """Records the batches it is given."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.batches: list[list[int]] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append([len(t) for t in texts])
        return super().embed(texts)


async def test_short_texts_of_a_batch_are_embedded_before_its_long_ones() -> None:
    import asyncio

    from gateway.batching import LONG_CHARS, MicroBatcher

    embedder = OrderEmbedder()
    batcher = MicroBatcher(embedder, window_s=0.01)
    batcher.start()
    try:
        texts = ["a" * (LONG_CHARS + 500), "short one", "b" * (LONG_CHARS + 1), "short two"]
        vectors = await asyncio.gather(*(batcher.embed(t) for t in texts))
    finally:
        await batcher.stop()
    # the two groups run on two workers: in either order
    assert sorted(embedder.batches) == [[9, 9], [LONG_CHARS + 500, LONG_CHARS + 1]]
    np.testing.assert_allclose(np.stack(vectors), embedder.embed(texts), atol=1e-6)


class SlowLongEmbedder(HashEmbedder):
    """Holds every long text until released; records the nice value of the thread it ran on."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.release = threading.Event()
        self.nice: dict[str, int] = {}

    def embed(self, texts: Sequence[str]) -> Vectors:
        import os

        from gateway.batching import LONG_CHARS

        kind = "long" if max(len(t) for t in texts) > LONG_CHARS else "short"
        self.nice[kind] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        if kind == "long" and not self.release.wait(10):
            raise RuntimeError("never released")
        return super().embed(texts)


async def test_short_texts_do_not_wait_for_a_long_one_on_a_low_priority_worker() -> None:
    import asyncio
    import os

    from gateway.batching import LONG_CHARS, MicroBatcher
    from gateway.lowprio import NICE_DELTA

    embedder = SlowLongEmbedder()
    batcher = MicroBatcher(embedder, window_s=0.001)
    batcher.start()
    try:
        long = asyncio.ensure_future(batcher.embed("x " * LONG_CHARS))
        await asyncio.sleep(0.05)  # the long text is being embedded, and stays so
        shorts = await asyncio.wait_for(
            asyncio.gather(*(batcher.embed(f"short {i}") for i in range(5))), 5)
        assert not long.done()
        embedder.release.set()
        vector = await asyncio.wait_for(long, 5)
    finally:
        embedder.release.set()
        await batcher.stop()
    np.testing.assert_allclose(np.stack(shorts), embedder.embed([f"short {i}" for i in range(5)]),
                               atol=1e-6)
    assert vector.shape == (HASH_DIM,)
    if hasattr(os, "setpriority"):  # per-thread nice values: Linux
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert embedder.nice["short"] == base
        assert embedder.nice["long"] == min(19, base + NICE_DELTA)
