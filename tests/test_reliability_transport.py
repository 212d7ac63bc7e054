"""Clients that attack the transport: endless or countless headers, half a request line held
open (slowloris), half a body, huge bodies of countless messages. None of them may take a core,
a slot or the event loop from everyone else; every answer carries an `x-request-id` and every
request leaves one log line with its status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from faults import chat_request, open_request, read_response, wait_until
from standin import Behaviour

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
KEY = "client-secret"


def timed_chat(gw: Any, **kwargs: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "model": "r2-auto", "messages": USER}, **kwargs)
    return resp, time.monotonic() - start


def flood_header(port: int, result: dict[str, Any]) -> None:
    """Send one header whose value never ends, as fast as the socket takes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sent, piece = 0, b"a" * 65536
    try:
        while sent < 8 * 1024 * 1024:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    result["sent"] = sent
    result["status"], _ = read_response(sock, 5)
    sock.close()


def test_endless_header_is_431_and_does_not_stall_others(make_gateway: Any,
                                                         standin: Any) -> None:
    gw = make_gateway()
    assert timed_chat(gw)[0].status_code == 200  # warm
    result: dict[str, Any] = {}
    flooder = threading.Thread(target=flood_header, args=(gw.server.port, result))
    flooder.start()
    resp, took = timed_chat(gw)
    flooder.join(15)
    assert resp.status_code == 200 and took < 1.0
    assert result["status"] == 431
    assert result["sent"] < 8 * 1024 * 1024  # refused (and closed) before it was all sent
    assert wait_until(lambda: not gw.server.server.server_state.connections, 2)


def test_too_many_headers_is_431_with_a_request_id(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", gw.server.port), timeout=10)
    try:
        sock.sendall(head)
    except OSError:
        pass  # closed on us mid-send: the answer is already in our receive buffer
    status, data = read_response(sock)
    sock.close()
    assert status == 431
    assert b"x-request-id: r2-" in data.lower()
    assert b'"code": "request_header_fields_too_large"' in data


def test_a_large_but_allowed_head_is_served(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    headers = {f"x-pad-{i}": "v" * 500 for i in range(40)}  # 20 kB in 40 headers
    resp, _ = timed_chat(gw, headers=headers)
    assert resp.status_code == 200


def test_half_request_lines_are_dropped_after_the_head_timeout(make_gateway: Any,
                                                               standin: Any) -> None:
    gw = make_gateway(server={"header_timeout_s": 1.0})
    assert timed_chat(gw)[0].status_code == 200  # warm
    socks = []
    for i in range(200):
        sock = socket.create_connection(("127.0.0.1", gw.server.port), timeout=10)
        sock.sendall(b"POST /v1/chat/comp" if i % 2 else b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    idle = socket.create_connection(("127.0.0.1", gw.server.port), timeout=10)  # says nothing
    resp, took = timed_chat(gw)
    assert resp.status_code == 200 and took < 1.0  # served while they hang
    assert wait_until(lambda: not gw.server.server.server_state.connections, 3.0)
    statuses = {read_response(sock, 1)[0] for sock in socks}
    assert statuses == {408}
    assert idle.recv(1) == b""  # closed without an answer
    for sock in socks + [idle]:
        sock.close()


def test_connections_over_the_limit_get_503(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(server={"max_connections": 8})
    idle = [socket.create_connection(("127.0.0.1", gw.server.port)) for _ in range(8)]
    assert wait_until(lambda: len(gw.server.server.server_state.connections) == 8, 2)
    assert httpx.get(f"{gw.url}/healthz", timeout=5).status_code == 503
    for sock in idle:
        sock.close()
    assert wait_until(lambda: httpx.get(f"{gw.url}/healthz").status_code == 200, 3)


def test_stalled_bodies_take_no_slot_and_unauthenticated_ones_are_refused_first(
        make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(server={"api_keys": [KEY], "max_concurrency": 4, "body_timeout_s": 1.5,
                              "request_timeout_s": 30})
    half = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 1000\r\n%s\r\n{\"model\": \"r2-au")
    authed = [open_request(gw.server.port, half % f"Authorization: Bearer {KEY}\r\n".encode())
              for _ in range(64)]
    anonymous = open_request(gw.server.port, half % b"")
    status, _ = read_response(anonymous, 2)
    assert status == 401  # refused on its headers, without waiting for its body
    time.sleep(0.3)
    assert gw.service.in_flight == 0
    resp, took = timed_chat(gw, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200
    resp, took = timed_chat(gw, headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 200 and took < 1.0
    start = time.monotonic()
    statuses = [read_response(sock, 5)[0] for sock in authed]
    assert set(statuses) == {408}
    assert time.monotonic() - start < 1.5 + 1.0
    for sock in authed + [anonymous]:
        sock.close()


def big_body(messages: int, size: int) -> bytes:
    per = max(1, size // messages - 40)
    return json.dumps({"model": "r2-auto", "messages": [
        {"role": "user", "content": "x" * per} for _ in range(messages)]}).encode()


async def healthz_while(url: str, bodies: list[bytes],
                        path: str = "/v1/chat/completions") -> tuple[list[int], float]:
    """Post `bodies` concurrently, probing /healthz every 20 ms; statuses and worst probe."""
    worst = 0.0
    async with httpx.AsyncClient(timeout=60) as client:
        posts = [asyncio.ensure_future(client.post(
            f"{url}{path}", content=body,
            headers={"content-type": "application/json"})) for body in bodies]
        while not all(p.done() for p in posts):
            start = time.monotonic()
            assert (await client.get(f"{url}/healthz")).status_code == 200
            worst = max(worst, time.monotonic() - start)
            await asyncio.sleep(0.02)
        return [p.result().status_code for p in posts], worst


def test_too_many_messages_is_400_and_the_loop_stays_responsive(make_gateway: Any,
                                                                standin: Any) -> None:
    gw = make_gateway()
    body = big_body(100_000, 4 * 1024 * 1024)
    statuses, worst = asyncio.run(healthz_while(gw.url, [body] * 8))
    assert statuses == [400] * 8
    assert worst < 0.5, f"/healthz stalled {worst:.2f} s"
    resp = httpx.post(f"{gw.url}/v1/chat/completions", content=body, timeout=30,
                      headers={"content-type": "application/json"})
    assert resp.json()["error"]["param"] == "messages"
    assert resp.json()["error"]["code"] == "too_many_messages"


def test_large_allowed_bodies_are_parsed_off_the_loop(make_gateway: Any, standin: Any,
                                                     monkeypatch: Any) -> None:
    import gateway.app

    threads: list[str] = []
    validate = gateway.app.validate_chat_body

    def recording(body: dict[str, Any], **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        validate(body, **kwargs)

    monkeypatch.setattr(gateway.app, "validate_chat_body", recording)
    gw = make_gateway()
    body = big_body(2_000, 4 * 1024 * 1024)
    # /v1/route: parsed, validated and routed like a chat request, without the upstream call
    statuses, worst = asyncio.run(healthz_while(gw.url, [body] * 8, "/v1/route"))
    assert statuses == [200] * 8
    assert threads == ["r2-parse_0"] * 8  # one worker thread, never the event loop's
    assert worst < 1.0, f"/healthz stalled {worst:.2f} s"
    small = httpx.post(f"{gw.url}/v1/route", json={"model": "r2-auto", "messages": USER})
    assert small.status_code == 200 and threads[-1] != "r2-parse_0"  # small ones stay inline


FAILURES = [
    ("upstream 500", Behaviour(status=500), 502),
    ("upstream 429", Behaviour(status=429, retry_after="3"), 429),
    ("upstream 503", Behaviour(status=503), 503),
    ("upstream stalls", Behaviour(delay_s=30), 504),
]


@pytest.mark.parametrize(("case", "behaviour", "status"), FAILURES,
                         ids=[c for c, _, _ in FAILURES])
def test_failed_requests_carry_a_request_id_and_leave_one_log_line(
        make_gateway: Any, standin: Any, caplog: Any, case: str, behaviour: Behaviour,
        status: int) -> None:
    gw = make_gateway(server={"request_timeout_s": 1.0} if status == 504 else {})
    standin.default = behaviour
    with caplog.at_level(logging.INFO, logger="r2.gateway"):
        resp, _ = timed_chat(gw, headers={"x-request-id": f"test-{status}"})
        assert resp.status_code == status
        assert resp.headers["x-request-id"] == f"test-{status}"
        assert wait_until(lambda: _lines(caplog, f"test-{status}"), 2)
    lines = _lines(caplog, f"test-{status}")
    assert len(lines) == 1 and f"status={status}" in lines[0]
    assert "photosynthesis" not in caplog.text


def test_an_unexpected_error_is_a_500_with_a_request_id_and_a_log_line(
        make_gateway: Any, standin: Any, caplog: Any, monkeypatch: Any) -> None:
    gw = make_gateway()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(gw.service, "decide", broken)
    with caplog.at_level(logging.INFO, logger="r2.gateway"):
        resp, _ = timed_chat(gw)
        assert resp.status_code == 500
        assert resp.json()["error"]["code"] == "internal_error"
        rid = resp.headers["x-request-id"]
        assert wait_until(lambda: _lines(caplog, rid), 2)
    lines = _lines(caplog, rid)
    assert len(lines) == 1 and "status=500" in lines[0] and "ZeroDivisionError" in lines[0]


def test_every_kind_of_response_has_a_request_id(make_gateway: Any, standin: Any,
                                                 caplog: Any) -> None:
    gw = make_gateway(server={"api_keys": [KEY], "max_concurrency": 1})
    auth = {"Authorization": f"Bearer {KEY}"}
    with caplog.at_level(logging.INFO, logger="r2.gateway"):
        answers = [
            httpx.get(f"{gw.url}/healthz"),
            httpx.get(f"{gw.url}/nowhere"),
            httpx.get(f"{gw.url}/v1/models"),  # 401
            httpx.post(f"{gw.url}/v1/chat/completions", headers=auth, content=b"{"),  # 400
            httpx.post(f"{gw.url}/v1/chat/completions", headers=auth,
                       json={"model": "r2-auto", "messages": USER}),
        ]
        gw.service.in_flight = 1  # full: the next one is shed
        answers.append(httpx.post(f"{gw.url}/v1/chat/completions", headers=auth,
                                  json={"model": "r2-auto", "messages": USER}))
        gw.service.in_flight = 0
        assert [a.status_code for a in answers] == [200, 404, 401, 400, 200, 503]
        ids = [a.headers["x-request-id"] for a in answers]
        assert len(set(ids)) == len(ids)
        assert wait_until(lambda: all(_lines(caplog, rid) for rid in ids), 2)
    for rid, answer in zip(ids, answers, strict=True):
        lines = _lines(caplog, rid)
        assert len(lines) == 1 and f"status={answer.status_code}" in lines[0]
    assert KEY not in caplog.text


def test_a_stream_logs_once_when_it_ends(make_gateway: Any, standin: Any, caplog: Any) -> None:
    gw = make_gateway()
    with caplog.at_level(logging.INFO, logger="r2.gateway"):
        status, data = read_response(open_request(gw.server.port, chat_request(
            {"model": "r2-auto", "messages": USER, "stream": True},
            {"x-request-id": "stream-1"})))
        assert status == 200 and b"x-request-id: stream-1" in data
        assert wait_until(lambda: _lines(caplog, "stream-1"), 2)
    lines = _lines(caplog, "stream-1")
    assert len(lines) == 1 and "status=200" in lines[0] and "model=strong" in lines[0]


def _lines(caplog: Any, request_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "r2.gateway" and f"id={request_id} " in r.getMessage()]
