"""Upstreams that misbehave (tests/rogue.py) and what a real client then sees.

Usage counts that are negative, huge or not numbers; a JSON body (an error, a completion,
invalid JSON) in reply to a streaming request; a redirect to another host; a refused
connection; a context-window 400. The client is the OpenAI SDK or raw httpx; the gateway runs
real LiteLLM over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from rogue import Rogue, completion, json_answer, normal, sse_answer, start_rogue, stream_events
from standin import free_port
from starlette.responses import Response

from gateway.app import build_app
from gateway.config import parse_settings

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
LAMBDA0 = {"x-r2-lambda": "0"}
LITELLM_ONLY = ("provider_specific_fields", "citations", "moderation", "obfuscation")


@pytest.fixture(scope="module")
def _rogue_server() -> Iterator[Rogue]:
    state, server = start_rogue()
    yield state
    server.stop()


@pytest.fixture
def rogue(_rogue_server: Rogue) -> Iterator[Rogue]:
    _rogue_server.answer = normal
    _rogue_server.received.clear()
    yield _rogue_server


@pytest.fixture
def gw(tmp_path: Path, rogue: Rogue, serve_app: Any) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), rogue.base_url)
    settings["server"] = {"cooldown": {"allowed_fails": 1}}
    return serve_app(build_app(parse_settings(settings)))


def assert_not_charged(gw: Any) -> None:
    assert gw.service.upstream.cooldowns.recent_failures() == {}
    assert gw.service.upstream.cooldowns.cooling() == set()


def sse_events(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


BAD_USAGE = {
    "negative": {"prompt_tokens": -5, "completion_tokens": -3, "total_tokens": -8},
    "huge": {"prompt_tokens": 1e30, "completion_tokens": 1e30, "total_tokens": 2e30},
    "not-numbers": {"prompt_tokens": "lots", "completion_tokens": [1], "total_tokens": None},
    "fractional": {"prompt_tokens": 1.5, "completion_tokens": 2, "total_tokens": 3.5},
}


@pytest.mark.parametrize("usage", list(BAD_USAGE.values()), ids=list(BAD_USAGE))
def test_nonsense_usage_is_answered_with_sane_counts_and_charges_nothing(
        gw: Any, rogue: Rogue, usage: dict[str, Any]) -> None:
    rogue.answer = lambda body: json_answer(completion(body["model"], usage=usage))
    resp = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers=LAMBDA0)
    result = resp.parse()
    assert result.choices[0].message.content == "Hi there."
    counts = result.usage.model_dump() if result.usage else {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = counts.get(key)
        assert value is None or (isinstance(value, int) and 0 <= value < 10**9), counts
    assert resp.headers["x-r2-usage"] == "unavailable"
    assert_not_charged(gw)


@pytest.mark.parametrize("usage", list(BAD_USAGE.values()), ids=list(BAD_USAGE))
def test_nonsense_usage_in_a_stream_ends_the_stream_cleanly(
        gw: Any, rogue: Rogue, usage: dict[str, Any]) -> None:
    rogue.answer = lambda body: sse_answer(stream_events(body["model"], ["Hi", "there."],
                                                         usage=usage))
    stream = gw.client().chat.completions.create(
        model="r2-auto", messages=USER, stream=True, extra_headers=LAMBDA0,
        stream_options={"include_usage": True})
    chunks = list(stream)  # the SDK raises on an in-band error event
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi there."
    usage_chunks = [c.usage for c in chunks if c.usage is not None]
    assert all(0 <= u.completion_tokens < 10**9 for u in usage_chunks)
    assert_not_charged(gw)


def test_stream_prefers_the_upstreams_usage_and_says_when_estimated(gw: Any,
                                                                    rogue: Rogue) -> None:
    def cut_at_length(body: dict[str, Any]) -> Response:
        return sse_answer(stream_events(body["model"], ["tok"] * 50, finish="length", usage={
            "prompt_tokens": 12, "completion_tokens": 384, "total_tokens": 396}))

    rogue.answer = cut_at_length
    body = {"model": "r2-auto", "messages": USER, "stream": True,
            "stream_options": {"include_usage": True}}
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=LAMBDA0, timeout=30)
    usage = [e["usage"] for e in sse_events(resp.text) if e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 384 and usage[-1]["prompt_tokens"] == 12
    assert ": x-r2-usage estimated" not in resp.text

    rogue.answer = lambda b: sse_answer(stream_events(b["model"], ["tok"] * 50, finish="length"))
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=LAMBDA0, timeout=30)
    assert ": x-r2-usage estimated" in resp.text  # the upstream sent none: LiteLLM counted


@pytest.mark.parametrize("answer", [
    lambda b: json_answer({"error": {"message": "model overloaded, try later"}}),
    lambda b: json_answer(completion(b["model"])),
    lambda b: Response("{not json", media_type="application/json"),
    lambda b: Response("plain text", media_type="text/plain"),
], ids=["json-error", "json-completion", "invalid-json", "text"])
def test_non_stream_answer_to_a_streaming_request_is_an_error_not_an_empty_200(
        gw: Any, rogue: Rogue, answer: Callable[[dict[str, Any]], Response]) -> None:
    rogue.answer = answer
    with pytest.raises(openai.InternalServerError) as err:
        list(gw.client().chat.completions.create(model="weak", messages=USER, stream=True))
    assert err.value.status_code == 502
    assert "non-stream body" in err.value.message
    if "overloaded" in str(answer(dict(model="weak")).body):
        assert "model overloaded" in err.value.message


def test_redirect_to_another_host_is_not_followed(gw: Any, rogue: Rogue,
                                                  sentinel: Any) -> None:
    target = f"{sentinel.url}/chat/completions"
    rogue.answer = lambda b: Response(status_code=307, headers={"location": target})
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as err:
            out = gw.client().chat.completions.create(model="weak", messages=USER,
                                                      stream=stream)
            list(out) if stream else None
        assert err.value.status_code == 502
        assert "redirect" in err.value.message
    assert not sentinel.connected()
    assert rogue.models() == ["up-weak", "up-weak"]


def test_redirect_on_the_same_host_is_followed(gw: Any, rogue: Rogue) -> None:
    def answer(body: dict[str, Any]) -> Response:
        if len(rogue.received) == 1:
            return Response(status_code=307, headers={"location": "/v1/chat/completions"})
        return normal(body)

    rogue.answer = answer
    result = gw.client().chat.completions.create(model="weak", messages=USER)
    assert result.choices[0].message.content == "Hi there."


def test_refused_connection_is_a_connection_error(tmp_path: Path, serve_app: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), dead)
    gw = serve_app(build_app(parse_settings(settings)))
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as err:
            out = gw.client().chat.completions.create(model="weak", messages=USER,
                                                      stream=stream)
            list(out) if stream else None
        assert err.value.status_code == 502
        assert isinstance(err.value.body, dict)
        assert err.value.body["code"] == "upstream_connection_error"
        assert "500" not in err.value.message


def test_r2_chat_exits_2_on_a_refused_connection(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from gateway.cli import main

    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_settings(tiny_checkpoint(tmp_path / "ck"), dead)))
    assert main(["chat", "hello there", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "upstream connection failed" in err and "upstream_connection_error" in err


CONTEXT_ERRORS = [
    (400, {"error": {"message": "This model's maximum context length is 4096 tokens. However,"
                                " you requested 5000 tokens", "type": "invalid_request_error",
                     "param": "messages", "code": "context_length_exceeded"}}),
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size, "
                                             "try increasing it",
                     "type": "exceed_context_size_error"}}),
    (500, {"error": {"message": "This model's maximum context length is 4096 tokens"}}),
]


@pytest.mark.parametrize(("status", "payload"), CONTEXT_ERRORS, ids=["openai", "llama", "500"])
@pytest.mark.parametrize("stream", [False, True])
def test_context_window_error_is_one_clean_400_not_retried_elsewhere(
        gw: Any, rogue: Rogue, status: int, payload: dict[str, Any], stream: bool) -> None:
    rogue.answer = lambda b: json_answer(payload, status)
    with pytest.raises(openai.BadRequestError) as err:
        out = gw.client().chat.completions.create(model="r2-auto", messages=USER,
                                                  stream=stream, extra_headers=LAMBDA0)
        list(out) if stream else None
    assert err.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    message = err.value.body["message"]  # type: ignore[index]
    for wrapper in ("litellm", "BadRequestError", "ContextWindowExceededError",
                    "OpenAIException", "context_window_fallback", "model=", "docs.litellm"):
        assert wrapper not in message
    assert rogue.models() == ["up-strong"]  # a deterministic client error: one call
    assert_not_charged(gw)


def test_upstream_400_message_has_no_litellm_wrapper(gw: Any, rogue: Rogue) -> None:
    rogue.answer = lambda b: json_answer({"error": {"message": "temperature is too high"}}, 400)
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="weak", messages=USER)
    assert err.value.body["message"] == (  # type: ignore[index]
        "upstream rejected the request: temperature is too high")


def test_no_traceback_or_server_path_in_any_message(gw: Any, rogue: Rogue) -> None:
    answers: list[Callable[[dict[str, Any]], Response]] = [
        lambda b, u=u: json_answer(completion(b["model"], usage=u))
        for u in BAD_USAGE.values()]
    answers += [lambda b: json_answer({"choices": "nope", "usage": {"prompt_tokens": "x"}}),
                lambda b: Response("{not json", media_type="application/json"),
                lambda b: json_answer([1, 2, 3])]
    for answer in answers:
        rogue.answer = answer
        resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                          json={"model": "weak", "messages": USER})
        assert "Traceback" not in resp.text and "site-packages" not in resp.text, resp.text
        assert ".py" not in resp.text, resp.text


def test_answers_keep_the_openai_schema(gw: Any, rogue: Rogue) -> None:
    resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                      json={"model": "weak", "messages": USER})
    data = resp.json()
    assert not set(LITELLM_ONLY) & set(data)
    assert not set(LITELLM_ONLY) & set(data["choices"][0])
    assert not set(LITELLM_ONLY) & set(data["choices"][0]["message"])
    assert "cost" not in data["usage"]
    resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "model": "weak", "messages": USER, "stream": True,
        "stream_options": {"include_usage": True}})
    events = sse_events(resp.text)
    assert len(events) >= 3
    for event in events:
        assert not set(LITELLM_ONLY) & set(event), event
        for choice in event.get("choices") or []:
            assert not set(LITELLM_ONLY) & set(choice)
            assert not set(LITELLM_ONLY) & set(choice.get("delta") or {})
        assert "cost" not in (event.get("usage") or {})


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"])
def test_body_that_is_not_json_by_content_type_is_415(gw: Any, rogue: Rogue,
                                                      content_type: str) -> None:
    body = json.dumps({"model": "weak", "messages": USER})
    for path in ("/v1/chat/completions", "/v1/route"):
        resp = httpx.post(f"{gw.url}{path}", content=body, timeout=30,
                          headers={"content-type": content_type})
        assert resp.status_code == 415, resp.text
        assert resp.json()["error"]["code"] == "unsupported_media_type"
    assert rogue.received == []


def test_json_content_types_are_accepted(gw: Any, rogue: Rogue) -> None:
    body = json.dumps({"model": "weak", "messages": USER})
    for content_type in ("application/json", "application/json; charset=utf-8", None):
        headers = {"content-type": content_type} if content_type else {}
        resp = httpx.post(f"{gw.url}/v1/chat/completions", content=body, timeout=30,
                          headers=headers)
        assert resp.status_code == 200, (content_type, resp.text)


def test_route_does_not_require_model(gw: Any) -> None:
    resp = httpx.post(f"{gw.url}/v1/route", json={"messages": USER}, timeout=30,
                      headers=LAMBDA0)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "strong"
    resp = httpx.post(f"{gw.url}/v1/route", json={"model": 5, "messages": USER}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"


@pytest.mark.parametrize("provider", ["openrouter", "hosted_vllm"])
def test_the_guard_covers_providers_sent_through_litellms_http_handler(
        tmp_path: Path, rogue: Rogue, serve_app: Any, sentinel: Any, provider: str) -> None:
    """OpenRouter (the production template) and vLLM go through LiteLLM's own HTTP handler,
    not the OpenAI SDK: the same guard must sit under them."""
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), rogue.base_url)
    for dep in settings["deployments"]:
        dep["model"] = dep["model"].replace("openai/", f"{provider}/")
    gw = serve_app(build_app(parse_settings(settings)))
    assert set(gw.service.upstream.clients) == {"strong", "weak"}
    rogue.answer = lambda b: json_answer(completion(b["model"], usage=BAD_USAGE["huge"]))
    assert gw.client().chat.completions.create(model="weak", messages=USER).usage is not None
    rogue.answer = lambda b: json_answer({"error": {"message": "model overloaded"}})
    with pytest.raises(openai.InternalServerError) as err:
        list(gw.client().chat.completions.create(model="weak", messages=USER, stream=True))
    assert err.value.message.endswith("non-stream body: model overloaded")
    target = f"{sentinel.url}/chat/completions"
    rogue.answer = lambda b: Response(status_code=307, headers={"location": target})
    with pytest.raises(openai.InternalServerError) as err:
        gw.client().chat.completions.create(model="weak", messages=USER)
    assert "redirects to another host are not followed" in err.value.message
    assert not sentinel.connected()
