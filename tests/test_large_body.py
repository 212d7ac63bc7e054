"""Large chat bodies take the off-loop path (parsing in the `r2-parse` thread, counting in the
route's CPU thread) and behave exactly like small ones: the same upstream request, the same
errors in the same envelopes, the same 413 limit. Through the real OpenAI SDK against the
gateway over HTTP, with the recording stand-in upstream."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import openai
import pytest

import gateway.app
import gateway.service

#: Well over `PARSE_INLINE_BYTES` (64 KiB) and `OFFLOAD_CHARS` (20k characters).
DOCUMENT = ("The quarterly report lists revenue, costs and margins for every region. " * 3000)
MESSAGES = [{"role": "system", "content": "Summarise the document."},
            {"role": "user", "content": DOCUMENT}]


def _thread_spy(monkeypatch: Any, module: Any, name: str) -> list[str]:
    """Record the thread each call of `module.name` runs on."""
    threads: list[str] = []
    original = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return threads


def _upstream_request(gw: Any, standin: Any, stream: bool) -> tuple[dict[str, Any], str]:
    client = gw.client()
    if stream:
        with client.chat.completions.with_streaming_response.create(
                model="r2-auto", messages=MESSAGES, stream=True, max_tokens=50,
                extra_headers={"x-r2-lambda": "0"}) as resp:
            text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
            model = resp.headers["x-r2-model"]
    else:
        raw = client.chat.completions.with_raw_response.create(
            model="r2-auto", messages=MESSAGES, max_tokens=50,
            extra_headers={"x-r2-lambda": "0"})
        text, model = raw.parse().choices[0].message.content or "", raw.headers["x-r2-model"]
    assert text and model
    return standin.received[-1]["body"], model


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_large_body_parsed_off_the_loop_reaches_upstream_as_if_parsed_inline(
        make_gateway: Any, standin: Any, monkeypatch: Any, stream: bool) -> None:
    gw = make_gateway()
    parsed_on = _thread_spy(monkeypatch, gateway.app, "parse_request")
    counted_on = _thread_spy(monkeypatch, gw.service.token_counter, "count")
    off_loop, model = _upstream_request(gw, standin, stream)
    assert parsed_on == ["r2-parse_0"]
    assert counted_on and counted_on[-1].startswith("r2-route-cpu")

    # The same request with the off-loop thresholds out of reach: parsed and counted inline.
    monkeypatch.setattr(gateway.app, "PARSE_INLINE_BYTES", 1 << 62)
    monkeypatch.setattr(gateway.service, "OFFLOAD_CHARS", 1 << 62)
    inline, inline_model = _upstream_request(gw, standin, stream)
    assert not parsed_on[-1].startswith("r2-parse") and not counted_on[-1].startswith("r2-")
    assert off_loop == inline and model == inline_model
    assert off_loop["messages"][-1]["content"].startswith(DOCUMENT)


def test_small_bodies_keep_the_inline_path(make_gateway: Any, standin: Any,
                                           monkeypatch: Any) -> None:
    gw = make_gateway()
    parsed_on = _thread_spy(monkeypatch, gateway.app, "parse_request")
    counted_on = _thread_spy(monkeypatch, gw.service.token_counter, "count")
    gw.client().chat.completions.create(model="r2-auto",
                                        messages=[{"role": "user", "content": "What is 2+2?"}])
    loop_thread = gw.server.thread.name
    assert parsed_on == [loop_thread] and counted_on == [loop_thread]


INVALID = [
    # (raw body, param, code): each over `PARSE_INLINE_BYTES`, so checked in the parse thread
    (b'{"model": "r2-auto", "messages": [{"role": "user", "content": "'
     + b"x" * 200_000 + b'"}', None, "invalid_json"),
    (json.dumps({"model": "r2-auto", "messages": MESSAGES, "max_tokens": -1}).encode(),
     "max_tokens", None),
    (json.dumps({"model": "r2-auto", "messages": [*MESSAGES, {"role": "alien", "content": "x"}]}
                ).encode(), "messages[2].role", None),
    (json.dumps({"model": "r2-auto", "messages": MESSAGES,
                 "extra_body": {"api_base": "http://attacker"}}).encode(),
     "extra_body.api_base", None),
]


@pytest.mark.parametrize(("raw", "param", "code"), INVALID,
                         ids=["bad-json", "max_tokens", "role", "redirect"])
def test_invalid_large_bodies_are_400_in_the_openai_envelope(
        make_gateway: Any, standin: Any, raw: bytes, param: str | None,
        code: str | None) -> None:
    gw = make_gateway()
    assert len(raw) > gateway.app.PARSE_INLINE_BYTES
    resp = httpx.post(f"{gw.url}/v1/chat/completions", content=raw, timeout=30,
                      headers={"content-type": "application/json",
                               "authorization": "Bearer client-secret"})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if code is not None:
        assert err["code"] == code
    assert "xxxx" not in resp.text and "attacker" not in resp.text  # content is never echoed
    assert standin.received == []


def test_an_invalid_large_body_is_a_bad_request_error_in_the_sdk(make_gateway: Any,
                                                                  standin: Any) -> None:
    gw = make_gateway()
    with pytest.raises(openai.BadRequestError) as info:
        gw.client().chat.completions.create(model="r2-auto", messages=MESSAGES, max_tokens=0)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert standin.received == []


def test_the_413_limit_is_unchanged_for_bodies_parsed_off_the_loop(make_gateway: Any,
                                                                   standin: Any) -> None:
    limit = 300_000
    gw = make_gateway(server={"max_body_bytes": limit})
    fits = json.dumps({"model": "r2-auto", "messages": MESSAGES}).encode()
    assert gateway.app.PARSE_INLINE_BYTES < len(fits) <= limit
    headers = {"content-type": "application/json", "authorization": "Bearer client-secret"}
    assert httpx.post(f"{gw.url}/v1/chat/completions", content=fits, headers=headers,
                      timeout=30).status_code == 200
    over = json.dumps({"model": "r2-auto", "messages": [
        MESSAGES[0], {"role": "user", "content": "y" * limit}]}).encode()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", content=over, headers=headers,
                      timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"
    assert len(standin.received) == 1  # only the body that fits was forwarded
    with pytest.raises(openai.APIStatusError) as info:
        gw.client().chat.completions.create(
            model="r2-auto", messages=[{"role": "user", "content": "z" * limit}])
    assert info.value.status_code == 413
