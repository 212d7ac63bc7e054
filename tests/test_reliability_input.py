"""Hostile and malformed input: always a 4xx in the OpenAI envelope naming the field, never a
5xx, never a byte sent upstream, never a connection to a client-chosen provider address."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from faults import RecordingEmbedder, chat_request, open_request, read_response
from helpers import gateway_settings, tiny_checkpoint

from gateway.upstream import OPENAI_PARAMS

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def shared_gw(_standin_server: Any, tmp_path_factory: Any) -> Iterator[Any]:
    """One gateway for the many read-only cases (each builds nothing, so each stays fast)."""
    from conftest import Gateway
    from standin import ServerThread

    from gateway.app import build_app
    from gateway.config import parse_settings

    ck = tiny_checkpoint(tmp_path_factory.mktemp("ck"))
    app = build_app(parse_settings(gateway_settings(ck, _standin_server[0].base_url)))
    gw = Gateway(ServerThread(app).start(), app)
    yield gw
    gw.server.stop()


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "r2-auto", "messages": USER, **fields}).encode()


def post(gw: Any, payload: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", content=payload, timeout=10,
                      headers={"content-type": "application/json", **(headers or {})})


def assert_envelope(resp: httpx.Response, status: int, param: str | None) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param


DEEP: dict[str, Any] = {"a": 1}
for _ in range(100):
    DEEP = {"a": DEEP}

MALFORMED = [
    # not a JSON object at all: there is no field to name
    (b"[" * 100_000 + b"]" * 100_000, {}, None),
    (b"", {}, None),
    (b"\xff\xfe{}", {}, None),
    (b"null", {}, None),
    # structure
    (json.dumps({"messages": USER}).encode(), {}, "model"),
    (json.dumps({"model": ["strong"], "messages": USER}).encode(), {}, "model"),
    (json.dumps({"model": "r2-auto"}).encode(), {}, "messages"),
    (body(messages=None), {}, "messages"),
    (body(messages=[1]), {}, "messages[0]"),
    (body(messages=[{"content": "hi"}]), {}, "messages[0].role"),
    (body(messages=[{"role": "alien", "content": "hi"}]), {}, "messages[0].role"),
    (body(messages=[{"role": "user", "content": 5}]), {}, "messages[0].content"),
    (body(messages=[{"role": "user", "content": ["hi"]}]), {}, "messages[0].content[0]"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), {},
     "messages[0].content[0].text"),
    (body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), {},
     "messages[0].content[0].image_url"),
    (body(messages=[*USER, {"role": "assistant", "content": "x", "tool_calls": 5}]), {},
     "messages[1].tool_calls"),
    (body(messages=[{"role": "user", "content": "lone \ud800 surrogate"}]), {}, "messages"),
    (body(metadata=DEEP), {}, "metadata"),
    # numbers: negative, zero, fractional, boolean, huge, beyond Python's int parser
    (body(max_tokens=0), {}, "max_tokens"),
    (body(max_tokens=1.5), {}, "max_tokens"),
    (body(max_tokens=True), {}, "max_tokens"),
    (body(max_tokens=10**12), {}, "max_tokens"),
    (b'{"model":"r2-auto","messages":[{"role":"user","content":"hi"}],"max_tokens":1e400}', {},
     "max_tokens"),
    (b'{"model":"r2-auto","messages":[{"role":"user","content":"hi"}],"max_tokens":'
     + b"9" * 5000 + b"}", {}, "max_tokens"),
    (body(max_completion_tokens=-5), {}, "max_completion_tokens"),
    (body(n=0), {}, "n"),
    (body(temperature="hot"), {}, "temperature"),
    (b'{"model":"r2-auto","messages":[{"role":"user","content":"hi"}],"temperature":NaN}', {},
     "temperature"),
    (body(top_p=-1), {}, "top_p"),
    (body(stream="yes"), {}, "stream"),
    # containers LiteLLM reads
    (body(metadata="x"), {}, "metadata"),
    (body(extra_body=[1]), {}, "extra_body"),
    (body(response_format="json"), {}, "response_format"),
    (body(tools={"a": 1}), {}, "tools"),
    (body(extra_body={"model": "gpt-4-32k"}), {}, "extra_body.model"),
    (body(extra_body={"max_tokens": 100_000}), {}, "extra_body.max_tokens"),
    # routing headers
    (body(), {"x-r2-lambda": "-0.1"}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": "1.0001"}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": "nan"}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": "inf"}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": "1e999"}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": ""}, "x-r2-lambda"),
    (body(), {"x-r2-lambda": "0x1"}, "x-r2-lambda"),
    (body(), {"x-r2-max-cost-usd": "-1"}, "x-r2-max-cost-usd"),
    (body(), {"x-r2-max-cost-usd": "nan"}, "x-r2-max-cost-usd"),
    (body(), {"x-r2-models": ",,"}, "x-r2-models"),
    (body(), {"x-r2-models": "../../etc/passwd"}, "x-r2-models"),
    (body(), {"x-r2-models": "x" * 6000}, "x-r2-models"),
]


@pytest.mark.parametrize(("payload", "headers", "param"), MALFORMED,
                         ids=[f"{i}-{case[2]}" for i, case in enumerate(MALFORMED)])
def test_malformed_input_is_400_naming_the_field(shared_gw: Any, standin: Any,
                                                 payload: bytes, headers: dict[str, str],
                                                 param: str | None) -> None:
    gw = shared_gw
    assert_envelope(post(gw, payload, headers), 400, param)
    assert standin.received == []


WRONG_TYPES = ["x", -1, 1.5, [1], ["x"], {"a": 1}, None, True, [], {}]


@pytest.mark.parametrize("model", ["r2-auto", "weak"])
def test_any_type_in_any_forwarded_field_is_never_a_5xx(shared_gw: Any, standin: Any,
                                                         model: str) -> None:
    """Fuzz every OpenAI parameter the gateway hands to LiteLLM: a value LiteLLM cannot use
    must be refused by validation (4xx), not crash the provider client (5xx)."""
    gw = shared_gw
    failures = []
    with httpx.Client(timeout=10) as client:
        for key in sorted(OPENAI_PARAMS - {"messages"}):
            for value in WRONG_TYPES:
                resp = client.post(f"{gw.url}/v1/chat/completions",
                                   json={"model": model, "messages": USER, key: value})
                if resp.status_code >= 500:
                    failures.append((key, value, resp.status_code))
    assert failures == []


def test_declared_body_over_default_limit_is_413_before_the_body_is_sent(
        shared_gw: Any, standin: Any) -> None:
    gw = shared_gw
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nContent-Length: {10 * MIB + 1}\r\n\r\n").encode()
    sock = open_request(gw.server.port, head + b'{"model": "r2-auto", "messages": [')
    status, data = read_response(sock)  # only 40 bytes of the 10 MiB were ever sent
    sock.close()
    assert status == 413
    assert b'"code":"request_too_large"' in data
    assert standin.received == []


def test_chunked_body_over_limit_is_413_before_the_rest_is_sent(make_gateway: Any,
                                                                 standin: Any) -> None:
    gw = make_gateway(server={"max_body_bytes": MIB})
    sock = open_request(gw.server.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * 65536
    for _ in range(18):  # 1.125 MiB: just past the limit, of a body that would never end
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    start = time.monotonic()
    status, data = read_response(sock)
    sock.close()
    assert status == 413
    assert time.monotonic() - start < 1
    assert standin.received == []


def test_200k_character_prompt_is_routed_on_a_truncated_embedding_and_forwarded_intact(
        tmp_path: Any, standin: Any, serve_app: Any) -> None:
    from gateway.app import build_app
    from gateway.config import parse_settings

    embedder = RecordingEmbedder()
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url)
    gw = serve_app(build_app(parse_settings(settings), embedder=embedder))
    prompt = ("word " * 40_000)[:200_000]
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-r2-lambda": "0"})
    assert raw.headers["x-r2-model"] == "strong"
    # (the gateway also embeds a short warm-up text at start)
    assert max(embedder.lengths) == embedder.max_chars == 8192
    assert standin.received[-1]["body"]["messages"][-1]["content"] == prompt


REDIRECTS = [
    ({"api_base": "{sentinel}"}, "api_base"),
    ({"base_url": "{sentinel}"}, "base_url"),
    ({"API_BASE": "{sentinel}"}, "API_BASE"),
    ({"api_key": "sk-attacker-000000"}, "api_key"),
    ({"extra_headers": {"Host": "{sentinel}"}}, "extra_headers"),
    ({"headers": {"x": "y"}}, "headers"),
    ({"custom_llm_provider": "openai"}, "custom_llm_provider"),
    ({"api_version": "2024-01-01"}, "api_version"),
    ({"organization": "org-x"}, "organization"),
    ({"deployment_id": "x"}, "deployment_id"),
    ({"model_list": [{"model_name": "strong", "litellm_params": {"api_base": "{sentinel}"}}]},
     "model_list"),
    ({"litellm_params": {"api_base": "{sentinel}"}}, "litellm_params"),
    ({"extra_body": {"api_base": "{sentinel}"}}, "extra_body.api_base"),
    ({"extra_body": {"extra_body": {"base_url": "{sentinel}"}}}, "extra_body.extra_body.base_url"),
    ({"extra_body": {"opts": [{"api_key": "sk-x"}]}}, "extra_body.opts[0].api_key"),
    ({"metadata": {"api_base": "{sentinel}"}}, "metadata.api_base"),
    ({"metadata": {"headers": {"authorization": "x"}}}, "metadata.headers"),
    ({"extra_query": {"api_key": "sk-x"}}, "extra_query.api_key"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "param"), REDIRECTS, ids=[p for _, p in REDIRECTS])
def test_provider_redirecting_fields_are_400_and_reach_no_server(
        shared_gw: Any, standin: Any, sentinel: Any, fields: dict[str, Any], param: str,
        stream: bool) -> None:
    gw = shared_gw
    payload = json.dumps(fields).replace("{sentinel}", sentinel.url)
    resp = post(gw, body(stream=stream, **json.loads(payload)))
    assert_envelope(resp, 400, param)
    assert resp.json()["error"]["code"] == "forbidden_field"
    assert not sentinel.connected()
    assert standin.received == []


HOSTILE_MODELS = [
    "../../etc/passwd", "/v1/chat/completions", "http://127.0.0.1:{port}/v1", "file:///etc/x",
    "openai/up-strong", "up-strong", "hosted_vllm/strong", "strong/../weak", "STRONG",
    " strong", "strong\u200b", "r2-auto\u0000", "\uff52\uff12-auto", "\U0001f4a5", "x" * 10_000,
]


@pytest.mark.parametrize("model", HOSTILE_MODELS, ids=lambda m: repr(m[:24]))
def test_hostile_model_is_404_and_never_reaches_upstream(shared_gw: Any, standin: Any,
                                                         sentinel: Any, model: str) -> None:
    gw = shared_gw
    model = model.replace("{port}", str(sentinel.port))
    resp = post(gw, json.dumps({"model": model, "messages": USER}).encode())
    assert_envelope(resp, 404, "model")
    assert model not in resp.text
    assert standin.received == []
    assert not sentinel.connected()


def test_upstream_only_ever_sees_configured_deployments(shared_gw: Any,
                                                        standin: Any) -> None:
    gw = shared_gw
    for model in [*HOSTILE_MODELS, "r2-auto", "strong", "weak"]:
        post(gw, json.dumps({"model": model, "messages": USER, "extra_body": {"x": model}})
             .encode())
    assert {r["body"]["model"] for r in standin.received} == {"up-strong", "up-weak"}


def test_oversized_header_is_a_400_not_a_5xx(shared_gw: Any) -> None:
    gw = shared_gw
    with socket.create_connection(("127.0.0.1", gw.server.port), timeout=10) as sock:
        sock.sendall(chat_request({"model": "r2-auto", "messages": USER},
                                  {"x-r2-models": "m," * 40_000}))
        status, _ = read_response(sock)
    assert status == 400  # uvicorn's own refusal: the request never reaches the app
