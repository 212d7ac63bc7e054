"""`/v1/messages` (Anthropic Messages) through the real `anthropic` SDK against the gateway
and the stand-in upstream (an OpenAI-compatible deployment: LiteLLM's adapter translates)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import TOOL_CALL_ID, Behaviour

QUESTION = "Explain photosynthesis briefly."
USER = [{"role": "user", "content": QUESTION}]
WEATHER_TOOL = {"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}


@pytest.fixture
def gw(tmp_path: Any, make_gateway: Any, standin: Any) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                api_keys=["gw-key"])
    return make_gateway(settings)


def client(gw: Any, api_key: str = "gw-key") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=api_key, max_retries=0)


def sent(standin: Any) -> dict[str, Any]:
    rec = standin.received[-1]
    assert rec["path"] == "/v1/chat/completions"
    assert "gw-key" not in json.dumps(rec["headers"])
    return rec["body"]  # type: ignore[no-any-return]


def test_message_r2_auto_is_routed_capped_and_rendered(gw: Any, standin: Any) -> None:
    raw = client(gw).messages.with_raw_response.create(
        model="r2-auto", max_tokens=500, system="You are a botanist.", messages=USER,
        stop_sequences=["STOP"], metadata={"user_id": "u-1"}, extra_body={"temperature": 0.5},
        extra_headers={"x-r2-lambda": "0"})
    message = raw.parse()
    body = sent(standin)
    assert body["model"] == "up-strong" and body["max_tokens"] == 10
    assert body["temperature"] == 0.5
    assert body["stop"] == ["STOP"] and body["user"] == "u-1"
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith("You are a botanist.")
    assert "10 tokens or fewer" in body["messages"][0]["content"]
    assert body["messages"][1:] == USER
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "strong" and message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello from the stand-in."  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 4)
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "10"
    assert raw.headers["x-request-id"]


def test_message_cut_at_the_cap_stops_at_max_tokens(gw: Any, standin: Any) -> None:
    message = client(gw).messages.create(model="weak", max_tokens=3, messages=USER)
    assert sent(standin)["max_tokens"] == 3
    assert message.stop_reason == "max_tokens" and message.model == "weak"


def test_message_stream_r2_auto(gw: Any, standin: Any) -> None:
    sdk = client(gw)
    with sdk.messages.with_streaming_response.create(
            model="r2-auto", max_tokens=500, messages=USER, stream=True,
            extra_headers={"x-r2-lambda": "0"}) as resp:
        assert resp.headers["x-r2-model"] == "strong"
        assert resp.headers["x-r2-budget"] == "10"
        events = list(resp.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "Hello from the stand-in."
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 4
    body = sent(standin)
    assert body["stream"] is True and body["max_tokens"] == 10
    # The SDK's own accumulating helper parses the same stream.
    with sdk.messages.stream(model="r2-auto", max_tokens=500, messages=USER,
                             extra_headers={"x-r2-lambda": "0"}) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == "Hello from the stand-in." and final.model == "strong"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 11


def test_message_tools_round_trip(gw: Any, standin: Any) -> None:
    standin.default = Behaviour(tool_call=("get_weather", '{"city": "Paris"}'))
    sdk = client(gw)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.messages.create(model="r2-auto", max_tokens=200, messages=ask,
                                tools=[WEATHER_TOOL], extra_headers={"x-r2-lambda": "0"})
    body = sent(standin)
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.id, u.input) for u in uses] == [  # type: ignore[union-attr]
        ("get_weather", TOOL_CALL_ID, {"city": "Paris"})]
    with sdk.messages.stream(model="r2-auto", max_tokens=200, messages=ask,
                             tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("get_weather", {"city": "Paris"})]
    standin.default = Behaviour(text="It is sunny in Paris.")
    second = sdk.messages.create(
        model="r2-auto", max_tokens=200, tools=[WEATHER_TOOL],
        messages=[*ask, {"role": "assistant", "content": [
            {"type": "tool_use", "id": TOOL_CALL_ID, "name": "get_weather",
             "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": TOOL_CALL_ID, "content": "sunny"}]}])
    messages = sent(standin)["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == TOOL_CALL_ID
    assert messages[-1] == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "sunny"}
    assert second.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]


def test_message_auth_by_x_api_key_or_bearer(gw: Any, standin: Any) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        client(gw, api_key="wrong").messages.create(model="weak", max_tokens=5, messages=USER)
    assert info.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "invalid or missing API key"}}
    bearer = httpx.post(f"{gw.url}/v1/messages", headers={"authorization": "Bearer gw-key"},
                        json={"model": "weak", "max_tokens": 5, "messages": USER}, timeout=30)
    assert bearer.status_code == 200 and bearer.json()["type"] == "message"


def test_message_stream_broken_upstream_ends_with_error_event(gw: Any, standin: Any) -> None:
    standin.behaviours["up-weak"] = Behaviour(break_after_chunks=1)
    with pytest.raises(anthropic.APIStatusError) as info:
        list(client(gw).messages.create(model="weak", max_tokens=50, messages=USER,
                                        stream=True))
    assert info.value.body["type"] == "error"  # type: ignore[index]


def test_message_upstream_error_in_anthropic_shape(gw: Any, standin: Any) -> None:
    standin.behaviours["up-weak"] = Behaviour(status=429, retry_after="7")
    with pytest.raises(anthropic.RateLimitError) as info:
        client(gw).messages.create(model="weak", max_tokens=5, messages=USER)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.mark.parametrize(("body", "status", "kind", "field"), [
    ({"model": "r2-auto", "messages": USER}, 400, "invalid_request_error", "max_tokens"),
    ({"model": "r2-auto", "max_tokens": 0, "messages": USER}, 400, "invalid_request_error",
     "max_tokens"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": []}, 400, "invalid_request_error",
     "messages"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
     400, "invalid_request_error", "messages.0.role"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text"}]}]}, 400, "invalid_request_error",
     "messages.0.content.0.text"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": USER, "system": 3}, 400,
     "invalid_request_error", "system"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": USER, "temperature": 1.5}, 400,
     "invalid_request_error", "temperature"),
    ({"model": "r2-auto", "max_tokens": 5, "messages": USER, "api_key": "x"}, 400,
     "invalid_request_error", "api_key"),
    ({"max_tokens": 5, "messages": USER}, 400, "invalid_request_error", "model"),
    ({"model": "nope", "max_tokens": 5, "messages": USER}, 404, "not_found_error", "model"),
])
def test_message_bad_input_gets_anthropic_errors(gw: Any, standin: Any, body: dict[str, Any],
                                                 status: int, kind: str, field: str) -> None:
    resp = httpx.post(f"{gw.url}/v1/messages", json=body, headers={"x-api-key": "gw-key"},
                      timeout=30)
    assert resp.status_code == status
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert error["error"]["message"].startswith(f"{field}: ")
    assert standin.received == []
    invalid_json = httpx.post(f"{gw.url}/v1/messages", content=b"{not json",
                              headers={"x-api-key": "gw-key"}, timeout=30)
    assert invalid_json.status_code == 400
    assert invalid_json.json()["error"]["type"] == "invalid_request_error"


def test_message_to_an_anthropic_deployment(tmp_path: Any, make_gateway: Any,
                                            standin: Any) -> None:
    """A routed Messages request reaches an Anthropic deployment in Anthropic's own protocol
    (LiteLLM speaks it), capped by the policy, and comes back as a Messages answer."""
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url)
    settings["deployments"][0].update(model="anthropic/claude-standin",
                                      api_base=standin.base_url.removesuffix("/v1"))
    sdk = client(make_gateway(settings), api_key="any")
    raw = sdk.messages.with_raw_response.create(
        model="r2-auto", max_tokens=500, system="You are a botanist.", messages=USER,
        extra_headers={"x-r2-lambda": "0"})
    message = raw.parse()
    rec = standin.received[-1]
    assert rec["path"] == "/v1/messages"
    assert rec["body"]["model"] == "claude-standin" and rec["body"]["max_tokens"] == 10
    system = rec["body"]["system"]
    text = system if isinstance(system, str) else " ".join(b["text"] for b in system)
    assert text.startswith("You are a botanist.") and "10 tokens or fewer" in text
    assert rec["body"]["messages"][-1]["role"] == "user"
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "10"
    assert message.model == "strong" and message.stop_reason == "end_turn"
    assert message.content[0].text == "Hello from the stand-in."  # type: ignore[union-attr]
    with sdk.messages.stream(model="r2-auto", max_tokens=500, messages=USER,
                             extra_headers={"x-r2-lambda": "0"}) as stream:
        assert "".join(stream.text_stream) == "Hello from the stand-in."
    assert standin.received[-1]["body"]["stream"] is True
