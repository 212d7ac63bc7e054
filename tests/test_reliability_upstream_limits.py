"""Upstreams that flood or never stop: a client leaving a stream the upstream writes as fast as it
can is let go within a second; a stream has a total duration limit; an upstream body has a size
cap and a deadline while it is read. Each peer is a raw socket (tests/peers.py), nothing paced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import chat_request, open_request, read_response, read_until, wait_until
from helpers import gateway_settings, tiny_checkpoint
from peers import (
    RawUpstream,
    endless_stream,
    fast_stream,
    huge_json,
    paced_stream,
    trickled_json,
)

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
STREAM = {"model": "r2-auto", "messages": USER, "stream": True}


@pytest.fixture
def upstream() -> Iterator[Callable[..., RawUpstream]]:
    made: list[RawUpstream] = []

    def make(mode: Callable[..., None]) -> RawUpstream:
        made.append(RawUpstream(mode))
        return made[-1]

    yield make
    for up in made:
        up.close()


def gateway_for(make_gateway: Any, tmp_path: Path, up: RawUpstream, timeout_s: float = 5.0,
                **server: Any) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ckpt"), up.base_url,
                                timeout_s=timeout_s, **server)
    return make_gateway(settings)


@pytest.mark.parametrize("round_", range(3))
def test_client_leaving_a_flooding_stream_frees_slot_and_upstream_within_1s(
        make_gateway: Any, tmp_path: Path, upstream: Any, round_: int) -> None:
    up = upstream(fast_stream(500_000))
    gw = gateway_for(make_gateway, tmp_path, up, max_concurrency=4)
    sock = open_request(gw.server.port, chat_request(STREAM))
    assert b"data: " in read_until(sock, b"data: ")
    time.sleep(0.2)  # well into the flood
    left = time.monotonic()
    sock.close()
    assert wait_until(lambda: up.active == 0, 5), "the upstream stream was never released"
    released = up.closed_at[-1] - left
    assert wait_until(lambda: gw.service.in_flight == 0, 1)
    assert released < 1.0, f"upstream held {released:.2f} s after the client left"
    # and the gateway serves at once: nobody is left consuming the flood
    start = time.monotonic()
    assert httpx.get(f"{gw.url}/healthz", timeout=2).status_code == 200
    assert time.monotonic() - start < 0.5


def test_client_leaving_a_100_per_second_stream_on_a_busy_cpu_frees_it_within_1s(
        make_gateway: Any, tmp_path: Path, upstream: Any) -> None:
    up = upstream(paced_stream(0.01, 10_000))
    gw = gateway_for(make_gateway, tmp_path, up, max_concurrency=4)
    up.mode = fast_stream(1_000)  # warm the gateway before the CPU gets busy
    assert read_response(open_request(gw.server.port, chat_request(STREAM)), 20)[0] == 200
    up.mode = paced_stream(0.01, 10_000)
    stop = threading.Event()

    def burn() -> None:  # Python work competing with the gateway's loop for the interpreter
        while not stop.is_set():
            sum(i * i for i in range(10_000))

    burners = [threading.Thread(target=burn, daemon=True)]
    for burner in burners:
        burner.start()
    try:
        for _ in range(5):
            sock = open_request(gw.server.port, chat_request(STREAM))
            assert b"data: " in read_until(sock, b"data: ", 10)
            time.sleep(0.1)
            left = time.monotonic()
            sock.close()
            assert wait_until(lambda: up.active == 0 and gw.service.in_flight == 0, 5)
            assert up.closed_at[-1] - left < 1.0
    finally:
        stop.set()


def test_all_slots_come_back_after_many_clients_leave_flooding_streams(
        make_gateway: Any, tmp_path: Path, upstream: Any) -> None:
    up = upstream(fast_stream(500_000))
    gw = gateway_for(make_gateway, tmp_path, up, max_concurrency=16)
    socks = []
    for _ in range(16):
        sock = open_request(gw.server.port, chat_request(STREAM))
        assert b"data: " in read_until(sock, b"data: ")
        socks.append(sock)
    assert gw.service.in_flight == 16
    left = time.monotonic()
    for sock in socks:
        sock.close()
    assert wait_until(lambda: gw.service.in_flight == 0 and up.active == 0, 2)
    assert time.monotonic() - left < 2.0
    up.mode = fast_stream(2_000)
    status, data = read_response(open_request(gw.server.port, chat_request(STREAM)), 10)
    assert status == 200 and data.rstrip().endswith(b"0")


def test_a_never_ending_stream_is_cut_at_the_total_stream_limit(
        make_gateway: Any, tmp_path: Path, upstream: Any) -> None:
    up = upstream(endless_stream(0.05))
    gw = gateway_for(make_gateway, tmp_path, up, max_stream_s=1.5)
    start = time.monotonic()
    status, data = read_response(open_request(gw.server.port, chat_request(STREAM)), 10)
    took = time.monotonic() - start
    assert status == 200
    events = [line[6:] for line in data.decode().split("\n") if line.startswith("data: ")]
    assert '"code":"stream_too_long"' in events[-2].replace(" ", "")
    assert events[-1] == "[DONE]"
    assert 1.4 < took < 2.5
    assert wait_until(lambda: up.active == 0 and gw.service.in_flight == 0, 1)


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_upstream_body_over_the_cap_is_502_without_reading_it_all(
        make_gateway: Any, tmp_path: Path, upstream: Any, declare_length: bool) -> None:
    up = upstream(huge_json(512 * 1024 * 1024, declare_length))
    gw = gateway_for(make_gateway, tmp_path, up, max_response_bytes=4 * 1024 * 1024)
    start = time.monotonic()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "r2-auto",
                                                              "messages": USER}, timeout=30)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_response_too_large"
    assert resp.headers["x-request-id"]
    assert time.monotonic() - start < 5.0  # two attempts (fallback); reading it all took 112 s
    assert wait_until(lambda: up.active == 0, 2)
    assert httpx.get(f"{gw.url}/healthz", timeout=1).status_code == 200


def test_upstream_body_under_the_cap_is_served(make_gateway: Any, tmp_path: Path,
                                               upstream: Any) -> None:
    up = upstream(huge_json(3 * 1024 * 1024))
    gw = gateway_for(make_gateway, tmp_path, up, max_response_bytes=4 * 1024 * 1024)
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "r2-auto",
                                                              "messages": USER}, timeout=30)
    assert resp.status_code == 200
    assert len(resp.json()["choices"][0]["message"]["content"]) > 3_000_000


def test_upstream_body_trickled_past_the_timeout_is_504_within_timeout_plus_1s(
        make_gateway: Any, tmp_path: Path, upstream: Any) -> None:
    up = upstream(trickled_json(0.05))
    gw = gateway_for(make_gateway, tmp_path, up, timeout_s=1.5, request_timeout_s=3.0)
    start = time.monotonic()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "r2-auto",
                                                              "messages": USER}, timeout=30)
    took = time.monotonic() - start
    assert resp.status_code == 504
    assert took < 3.0 + 1.0
    assert wait_until(lambda: up.active == 0, 2)


def test_streamed_upstream_over_the_cap_ends_with_an_error_event(
        make_gateway: Any, tmp_path: Path, upstream: Any) -> None:
    up = upstream(fast_stream(200_000))  # about 20 MB of events
    gw = gateway_for(make_gateway, tmp_path, up, max_response_bytes=2 * 1024 * 1024)
    status, data = read_response(open_request(gw.server.port, chat_request(STREAM)), 20)
    assert status == 200
    events = [line[6:] for line in data.decode().split("\n") if line.startswith("data: ")]
    assert "upstream_response_too_large" in events[-2]
    assert events[-1] == "[DONE]"
    assert wait_until(lambda: up.active == 0 and gw.service.in_flight == 0, 2)
