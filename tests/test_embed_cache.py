"""The embedding cache: through the real OpenAI SDK against the gateway (a repeated conversation
skips the embedder, a different one does not, `/metrics` counts both, the size bound evicts, a
failed embedding is not kept), single flight for concurrent misses, and the serving thread rule.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from faults import Vectors
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.app import build_app
from gateway.config import parse_settings
from gateway.embed_cache import EmbeddingCache
from router_core import EmbedderUnavailableError, HashEmbedder
from router_core.embedders import serving_config
from router_core.embedders.local_onnx import serving_threads

PROBES = ("warm-up", "ready")  # the gateway's own embeddings, which bypass the cache


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting the routing texts it embeds; `broken` makes it fail as an
    unreachable remote embedder does; `gate` (when set) holds every call until opened."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.texts: list[str] = []
        self.broken = False
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.texts.extend(t for t in texts if t not in PROBES)
        if self.broken:
            raise EmbedderUnavailableError("embedder at http://embedder.invalid unreachable")
        return super().embed(texts)

    def count(self, word: str) -> int:
        return sum(word in t for t in self.texts)


def start(tmp_path: Path, standin: Any, serve_app: Any, embedder: CountingEmbedder,
          **server: Any) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url, **server)
    return serve_app(build_app(parse_settings(settings), embedder=embedder))


def ask(gw: Any, question: str) -> Any:
    return gw.client().chat.completions.create(
        model="r2-auto", messages=[{"role": "user", "content": question}])


def metric(gw: Any, name: str) -> float:
    text = httpx.get(f"{gw.url}/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def counters(gw: Any) -> tuple[float, float]:
    return metric(gw, "r2_embed_cache_hits_total"), metric(gw, "r2_embed_cache_misses_total")


def test_repeated_conversation_hits_and_a_different_one_misses(
        tmp_path: Path, standin: Any, serve_app: Any) -> None:
    embedder = CountingEmbedder()
    gw = start(tmp_path, standin, serve_app, embedder)
    first = ask(gw, "alpha: explain photosynthesis")
    again = ask(gw, "alpha: explain photosynthesis")
    assert first.model == again.model and first.choices and again.choices
    assert embedder.count("alpha") == 1  # the second turn never reached the embedder
    assert counters(gw) == (1.0, 1.0)
    ask(gw, "beta: explain the tides")
    assert embedder.count("beta") == 1
    assert counters(gw) == (1.0, 2.0)
    assert metric(gw, "r2_embed_cache_entries") == 2.0
    assert metric(gw, "r2_embed_cache_hit_ratio") == pytest.approx(1 / 3)
    assert len(standin.received) == 3  # every request was still forwarded


def test_size_bound_evicts_the_least_recently_used(tmp_path: Path, standin: Any,
                                                   serve_app: Any) -> None:
    embedder = CountingEmbedder()
    gw = start(tmp_path, standin, serve_app, embedder, embed_cache_size=2)
    for question in ("alpha one", "beta two", "alpha one", "gamma three"):
        ask(gw, question)  # alpha was used after beta: gamma evicts beta
    assert metric(gw, "r2_embed_cache_entries") == 2.0
    ask(gw, "alpha one")
    assert embedder.count("alpha") == 1
    ask(gw, "beta two")
    assert embedder.count("beta") == 2
    assert counters(gw) == (2.0, 4.0)


def test_zero_size_disables_the_cache(tmp_path: Path, standin: Any, serve_app: Any) -> None:
    embedder = CountingEmbedder()
    gw = start(tmp_path, standin, serve_app, embedder, embed_cache_size=0)
    ask(gw, "alpha again and again")
    ask(gw, "alpha again and again")
    assert embedder.count("alpha") == 2
    assert counters(gw) == (0.0, 0.0)
    assert metric(gw, "r2_embed_cache_entries") == 0.0


def test_a_failed_embedding_is_not_cached(tmp_path: Path, standin: Any, serve_app: Any) -> None:
    embedder = CountingEmbedder()
    gw = start(tmp_path, standin, serve_app, embedder)
    embedder.broken = True
    with pytest.raises(openai.APIStatusError) as err:
        ask(gw, "alpha while the embedder is down")
    assert err.value.status_code == 503
    embedder.broken = False
    assert ask(gw, "alpha while the embedder is down").choices
    assert embedder.count("alpha") >= 2  # embedded again, not served from a cached failure
    assert metric(gw, "r2_embed_cache_entries") == 1.0
    assert ask(gw, "alpha while the embedder is down").choices
    assert counters(gw) == (1.0, 2.0)


def test_concurrent_identical_misses_share_one_embedding(tmp_path: Path, standin: Any,
                                                         serve_app: Any) -> None:
    embedder = CountingEmbedder()
    gw = start(tmp_path, standin, serve_app, embedder)
    ask(gw, "warming the gateway up")
    embedder.gate = threading.Event()
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ask, gw, "alpha asked six times at once") for _ in range(6)]
        # Until the first is inside the embedder and the other five wait on its flight.
        for _ in range(200):
            if metric(gw, "r2_embed_cache_hits_total") >= 5:
                break
            time.sleep(0.025)
        embedder.gate.set()
        results = [f.result(timeout=30) for f in futures]
    assert all(r.choices for r in results)
    assert embedder.count("alpha") == 1
    assert counters(gw) == (5.0, 2.0)


# -- the cache itself ---------------------------------------------------------------------
def test_single_flight_failure_reaches_every_waiter_and_is_retried() -> None:
    calls: list[str] = []

    async def embed(text: str) -> Vectors:
        calls.append(text)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ValueError("the embedder cannot take this text")
        return np.ones(4, np.float32)

    async def main() -> None:
        cache = EmbeddingCache(embed, size=8)
        results = await asyncio.gather(*(cache.embed("x") for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert len(cache) == 0 and calls == ["x"]
        vector = await cache.embed("x")
        assert calls == ["x", "x"] and len(cache) == 1
        assert (await cache.embed("x")) is not vector  # the stored copy, not the batch row
        assert not (await cache.embed("x")).flags.writeable
        assert (cache.hits, cache.misses) == (4, 2)

    asyncio.run(main())


def test_a_flight_every_waiter_left_is_cancelled_and_not_cached() -> None:
    started = 0

    async def embed(text: str) -> Vectors:
        nonlocal started
        started += 1
        await asyncio.sleep(10)
        return np.ones(4, np.float32)

    async def main() -> None:
        cache = EmbeddingCache(embed, size=8)
        waiters = [asyncio.ensure_future(cache.embed("x")) for _ in range(2)]
        await asyncio.sleep(0.01)
        waiters[0].cancel()
        await asyncio.sleep(0.01)
        assert cache._flights  # one waiter left: the embedding goes on for it
        waiters[1].cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(0)
        assert not cache._flights and len(cache) == 0 and started == 1

    asyncio.run(main())


def test_negative_size_is_refused_at_config_load(tmp_path: Path) -> None:
    from gateway.config import ConfigError

    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), "http://127.0.0.1:9/v1",
                                embed_cache_size=-1)
    with pytest.raises((ConfigError, ValueError), match="embed_cache_size"):
        parse_settings(settings)


# -- thread sizing --------------------------------------------------------------------------
@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_serving_threads_leave_a_cpu_to_the_loop_and_litellm(cpus: int, threads: int) -> None:
    assert serving_threads(cpus) == threads


def test_serving_config_sizes_only_an_unset_local_embedder() -> None:
    assert serving_config(None)["threads"] == serving_threads()
    assert serving_config({"kind": "local"})["threads"] == serving_threads()
    assert serving_config({"kind": "local", "threads": 2})["threads"] == 2
    assert serving_config({"kind": "hash", "dim": 8}) == {"kind": "hash", "dim": 8}
