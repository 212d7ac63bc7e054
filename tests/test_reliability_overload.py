"""Overload: past the concurrency limit the excess gets a fast 503 with `Retry-After` (load
shedding, not queueing), nothing hangs, and the gateway serves normally right after. A slot is
held for as long as the request really costs: a whole stream, and no longer than the timeout
for a client trickling its body.

The 10-minute soak at 80 % and the 3x-capacity run against a measured capacity live in
`benchmarks/load.py`; this is their short version for CI.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from faults import chat_request, open_request, read_response, read_until, wait_until
from standin import Behaviour

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
LIMIT = 4
UPSTREAM_S = 1.0


async def timed_post(client: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    resp = await client.post(url, json={"model": "r2-auto", "messages": USER})
    return resp, time.monotonic() - start


async def burst(url: str, n: int) -> list[tuple[httpx.Response, float]]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(*(timed_post(client, url) for _ in range(n)))


def test_three_times_the_limit_sheds_the_excess_fast_and_recovers(make_gateway: Any,
                                                                  standin: Any) -> None:
    gw = make_gateway(server={"max_concurrency": LIMIT})
    standin.default = Behaviour(delay_s=UPSTREAM_S)
    start = time.monotonic()
    results = asyncio.run(burst(f"{gw.url}/v1/chat/completions", 3 * LIMIT))
    assert time.monotonic() - start < UPSTREAM_S + 2.0  # nothing hung
    served = [t for r, t in results if r.status_code == 200]
    shed = [(r, t) for r, t in results if r.status_code != 200]
    assert len(served) == LIMIT
    assert len(shed) == 2 * LIMIT
    for resp, seconds in shed:
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "1"
        assert resp.json()["error"]["code"] == "overloaded"
        assert seconds < 0.5  # refused at once, not queued behind the admitted ones
    assert f"r2_rejected_total {2 * LIMIT}.0" in httpx.get(f"{gw.url}/metrics").text
    standin.default = Behaviour()
    recovered = time.monotonic()
    assert all(r.status_code == 200 for r, _ in asyncio.run(burst(
        f"{gw.url}/v1/chat/completions", LIMIT)))
    assert time.monotonic() - recovered < 5.0
    assert gw.service.in_flight == 0


def test_streams_hold_their_slot_until_they_end(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(server={"max_concurrency": 2})
    standin.default = Behaviour(chunk_delay_s=0.1, text=" ".join(["w"] * 10))
    body = {"model": "r2-auto", "messages": USER, "stream": True}
    socks = [open_request(gw.server.port, chat_request(body)) for _ in range(2)]
    for sock in socks:  # both streams have started: their first chunk is out
        assert b"data: " in read_until(sock, b"data: ")
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 503
    for sock in socks:
        assert b"data: [DONE]" in read_until(sock, b"data: [DONE]")
        sock.close()
    assert wait_until(lambda: gw.service.in_flight == 0, 2)
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=10).status_code == 200


def test_trickled_body_is_408_within_the_timeout_and_frees_its_slot(make_gateway: Any,
                                                                    standin: Any) -> None:
    gw = make_gateway(server={"max_concurrency": 1, "request_timeout_s": 1.0})
    sock = open_request(gw.server.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    start = time.monotonic()
    status, _ = read_response(sock)
    sock.close()
    assert status == 408
    assert time.monotonic() - start < 1.0 + 1.0
    assert gw.service.in_flight == 0
    ok = httpx.post(f"{gw.url}/v1/chat/completions", timeout=10,
                    json={"model": "r2-auto", "messages": USER})
    assert ok.status_code == 200
