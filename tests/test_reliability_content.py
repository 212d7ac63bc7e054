"""Request content that used to fail inside the gateway: non-finite numbers anywhere in the body,
lone surrogates sent as raw bytes, and one bad text failing every request of its embedding batch.
A local failure must never be charged to a deployment (no failure count, no cooldown)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.app import build_app
from gateway.config import ConfigError, parse_settings
from router_core import HashEmbedder

HEAD = b'{"model":"r2-auto","messages":[{"role":"user","content":"hi"}],'
LAMBDA0 = {"x-r2-lambda": "0", "content-type": "application/json"}


def post(gw: Any, raw: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", content=raw, headers=LAMBDA0, timeout=30)


NON_FINITE = [
    (HEAD + b'"frequency_penalty":NaN}', "frequency_penalty"),
    (HEAD + b'"presence_penalty":-Infinity}', "presence_penalty"),
    (HEAD + b'"seed":1e400}', "seed"),
    (HEAD + b'"logit_bias":{"50256":Infinity}}', "logit_bias.50256"),
    (HEAD + b'"extra_body":{"top_k":NaN}}', "extra_body.top_k"),
    (HEAD + b'"my_unknown_field":[1,2,-1e999]}', "my_unknown_field[2]"),
    (b'{"model":"r2-auto","messages":[{"role":"user","content":[{"type":"text","text":"hi",'
     b'"weight":NaN}]}]}', "messages[0].content[0].weight"),
]


@pytest.mark.parametrize(("raw", "param"), NON_FINITE, ids=[p for _, p in NON_FINITE])
def test_non_finite_number_anywhere_is_400_naming_it_and_never_charges_a_deployment(
        make_gateway: Any, standin: Any, raw: bytes, param: str) -> None:
    gw = make_gateway(server={"cooldown": {"allowed_fails": 1}})
    for _ in range(3):
        resp = post(gw, raw)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param
        assert resp.json()["error"]["code"] == "invalid_number"
    assert standin.received == []
    assert gw.service.upstream.cooldowns.cooling() == set()
    assert gw.service.upstream.cooldowns.recent_failures() == {}
    ok = post(gw, HEAD + b'"temperature":0.5}')  # lambda 0 still goes to the best model
    assert (ok.status_code, ok.headers["x-r2-model"]) == (200, "strong")


def test_error_raised_before_a_byte_was_sent_is_not_charged_to_the_deployment(
        make_gateway: Any, standin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should validation ever miss a value that cannot be encoded, the failure is local: the
    deployment keeps its health and later requests still go to the best model."""
    from gateway import protocol

    monkeypatch.setattr(protocol, "_check_finite", lambda body: None)
    gw = make_gateway(server={"cooldown": {"allowed_fails": 1}})
    resp = post(gw, HEAD + b'"seed":NaN}')
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error"
    assert "upstream error" not in resp.json()["error"]["message"]
    assert standin.received == []
    assert gw.service.upstream.cooldowns.cooling() == set()
    assert gw.service.upstream.cooldowns.recent_failures() == {}
    ok = post(gw, HEAD + b'"seed":1}')
    assert (ok.status_code, ok.headers["x-r2-model"]) == (200, "strong")


@pytest.mark.parametrize("raw", [
    HEAD[:-1] + b',"user":"\xed\xa0\x80"}',  # a lone high surrogate as raw bytes
    b'{"model":"r2-auto","messages":[{"role":"user","content":"x\xed\xb0\x80y"}]}',
    b'{"model":"r2-auto","messages":[{"role":"user","content":"\xc3"}]}',  # truncated UTF-8
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
def test_invalid_utf8_bytes_are_400_and_reach_neither_embedder_nor_upstream(
        make_gateway: Any, standin: Any, raw: bytes, path: str) -> None:
    gw = make_gateway()
    resp = post(gw, raw, path)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_unicode"
    assert standin.received == []


class PoisonedEmbedder(HashEmbedder):
    """Raises, like a tokenizer given text it cannot encode, for any batch holding POISON."""

    POISON = "poison-pill"

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM, max_chars=8192)
        self.batches: list[int] = []

    def embed(self, texts: Sequence[str]) -> Any:
        self.batches.append(len(texts))
        if any(self.POISON in t for t in texts):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
        return super().embed(texts)


def test_one_bad_text_fails_alone_not_its_whole_embedding_batch(
        tmp_path: Path, standin: Any, serve_app: Any) -> None:
    embedder = PoisonedEmbedder()
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                embed_batch_window_ms=20, embed_max_batch=32,
                                max_concurrency=512)
    gw = serve_app(build_app(parse_settings(settings), embedder=embedder))

    def send(i: int) -> int:
        text = PoisonedEmbedder.POISON if i % 10 == 0 else f"innocent question {i}"
        body = {"model": "r2-auto", "messages": [{"role": "user", "content": text}]}
        return httpx.post(f"{gw.url}/v1/route", content=json.dumps(body), headers=LAMBDA0,
                          timeout=60).status_code

    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(send, range(300)))
    poisoned = statuses[::10]
    innocent = [s for i, s in enumerate(statuses) if i % 10]
    assert max(embedder.batches) > 1  # requests really were batched together
    assert all(s == 500 for s in poisoned)
    assert innocent.count(200) == len(innocent), sorted(set(innocent))


def test_batch_of_innocent_texts_is_embedded_once(tmp_path: Path) -> None:
    """Isolation costs nothing when nothing fails: one call per batch."""
    import asyncio

    from gateway.batching import MicroBatcher

    embedder = PoisonedEmbedder()

    async def run() -> list[Any]:
        batcher = MicroBatcher(embedder, window_s=0.01, max_batch=8)
        batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.embed(f"t{i}") for i in range(8)),
                                             return_exceptions=True))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert all(isinstance(r, np.ndarray) for r in results)
    assert sum(embedder.batches) == 8


@pytest.mark.parametrize("key", ["", " ", "\t\n"])
def test_empty_or_whitespace_api_key_stops_startup(tmp_path: Path, key: str) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), "http://127.0.0.1:9/v1",
                                api_keys=["real-key", key])
    with pytest.raises(ConfigError, match=r"^server\.api_keys: .*empty or whitespace"):
        parse_settings(settings)
