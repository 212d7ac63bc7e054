"""The routing embedder down, unreachable or stuck: a fast 503 with `Retry-After`, or the
configured fallback deployment marked `x-r2-fallback`; never a request that hangs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import StallingEmbedder
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.app import build_app
from gateway.config import parse_settings

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
EMBED_TIMEOUT_S = 0.5


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remote(url: str) -> dict[str, Any]:
    """A remote embedder the tiny checkpoint accepts (same id and dimension)."""
    return {"kind": "remote", "url": url, "model": "emb", "dim": HASH_DIM, "id": "hash",
            "timeout_s": EMBED_TIMEOUT_S}


@pytest.fixture
def stuck() -> Iterator[StallingEmbedder]:
    embedder = StallingEmbedder()
    yield embedder
    embedder.release()


def start(tmp_path: Path, standin: Any, serve_app: Any, embedder: Any,
          fallback: str | None) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                embed_timeout_s=EMBED_TIMEOUT_S)
    settings["fallback_deployment"] = fallback
    if isinstance(embedder, dict):
        settings["embedder"], embedder = embedder, None
    return serve_app(build_app(parse_settings(settings), embedder=embedder))


def post(gw: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                      json={"model": "r2-auto", "messages": USER})
    return resp, time.monotonic() - start


CASES = ["unreachable", "slow", "stuck"]


def embedder_for(case: str, sentinel: Any, stuck: StallingEmbedder) -> Any:
    if case == "unreachable":
        return remote(f"http://127.0.0.1:{closed_port()}/v1")
    if case == "slow":  # accepts the connection, never answers
        return remote(sentinel.url)
    return stuck


@pytest.mark.parametrize("case", CASES)
def test_embedder_down_is_a_fast_503_with_retry_after(tmp_path: Path, standin: Any,
                                                      serve_app: Any, sentinel: Any,
                                                      stuck: StallingEmbedder,
                                                      case: str) -> None:
    gw = start(tmp_path, standin, serve_app, embedder_for(case, sentinel, stuck), None)
    for _ in range(2):  # the second also proves a stuck embedder does not queue it forever
        resp, elapsed = post(gw)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "embedder_unavailable"
        assert resp.headers["retry-after"] == "1"
        assert elapsed < EMBED_TIMEOUT_S + 1.0
    assert httpx.get(f"{gw.url}/readyz", timeout=30).status_code == 503
    assert standin.received == []


@pytest.mark.parametrize("case", CASES)
def test_embedder_down_uses_the_fallback_deployment(tmp_path: Path, standin: Any,
                                                    serve_app: Any, sentinel: Any,
                                                    stuck: StallingEmbedder, case: str) -> None:
    gw = start(tmp_path, standin, serve_app, embedder_for(case, sentinel, stuck), "weak")
    resp, elapsed = post(gw)
    assert resp.status_code == 200
    assert resp.headers["x-r2-fallback"] == "embedder-unavailable"
    assert resp.headers["x-r2-model"] == "weak"
    assert "x-r2-budget" not in resp.headers  # nothing was predicted
    assert elapsed < EMBED_TIMEOUT_S + 1.0
    assert [r["body"]["model"] for r in standin.received] == ["up-weak"]
