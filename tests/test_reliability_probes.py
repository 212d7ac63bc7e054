"""`/readyz` and `/metrics`: what they say, what they cost, and who may read them.

`/readyz` reports upstream health from the outcomes of recent requests (never by probing the
providers) and caches its embedding probe; `/metrics` and `/readyz` answer without a key
unless `server.protect_probes` is on; `/healthz` is always open.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from faults import RecordingEmbedder
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour

from gateway.app import build_app
from gateway.config import parse_settings

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]


def chat(gw: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, headers={"x-r2-lambda": "0"},
                      json={"model": "r2-auto", "messages": USER})


def test_readyz_says_not_ready_while_every_upstream_is_failing_then_recovers(
        make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(server={"cooldown": {"allowed_fails": 2, "cooldown_s": 30}})
    ready = httpx.get(f"{gw.url}/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["upstreams"] == {"strong": {"status": "ok", "recent_failures": 0},
                                         "weak": {"status": "ok", "recent_failures": 0}}
    received = len(standin.received)
    standin.default = Behaviour(status=500)
    chat(gw)
    report = httpx.get(f"{gw.url}/readyz", timeout=30).json()
    assert report["upstreams"]["strong"]["status"] == "failing"
    chat(gw)
    resp = httpx.get(f"{gw.url}/readyz", timeout=30)
    assert resp.status_code == 503
    assert resp.json()["status"] == "not ready"
    assert {u["status"] for u in resp.json()["upstreams"].values()} == {"cooling"}
    probes = len(standin.received)
    for _ in range(5):
        httpx.get(f"{gw.url}/readyz", timeout=30)
    assert len(standin.received) == probes  # readiness never calls a provider
    assert probes - received == 4  # the two requests, each falling back once
    standin.default = Behaviour()
    assert chat(gw).status_code == 200  # all cooling: all are tried; one answers
    assert httpx.get(f"{gw.url}/readyz", timeout=30).status_code == 200


def test_readyz_caches_its_embedding_probe(tmp_path: Path, standin: Any,
                                           serve_app: Any) -> None:
    embedder = RecordingEmbedder()
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                readiness_cache_s=1.0)
    gw = serve_app(build_app(parse_settings(settings), embedder=embedder))
    time.sleep(0.2)  # the warm-up embedding
    before = len(embedder.lengths)
    start = time.monotonic()
    with httpx.Client() as client:
        for _ in range(50):
            assert client.get(f"{gw.url}/readyz", timeout=30).status_code == 200
    elapsed = time.monotonic() - start
    assert len(embedder.lengths) - before <= 1 + int(elapsed / 1.0)


def test_probes_are_open_by_default_and_protected_when_asked(make_gateway: Any) -> None:
    open_gw = make_gateway(server={"api_keys": ["client-secret"]})
    for path in ("/readyz", "/metrics", "/healthz"):
        assert httpx.get(f"{open_gw.url}{path}", timeout=30).status_code == 200
    closed = make_gateway(server={"api_keys": ["client-secret"], "protect_probes": True})
    for path in ("/readyz", "/metrics"):
        resp = httpx.get(f"{closed.url}{path}", timeout=30)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
        ok = httpx.get(f"{closed.url}{path}", timeout=30,
                       headers={"authorization": "Bearer client-secret"})
        assert ok.status_code == 200
    assert httpx.get(f"{closed.url}/healthz", timeout=30).status_code == 200
