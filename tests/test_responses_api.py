"""`/v1/responses` through the real OpenAI SDK against the gateway and the stand-in upstream
(which speaks only Chat Completions: every call here is bridged)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import TOOL_CALL_ID, Behaviour

QUESTION = "Explain photosynthesis briefly."
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}


@pytest.fixture
def gw(tmp_path: Any, make_gateway: Any, standin: Any) -> Any:
    return make_gateway(gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url))


def sent(standin: Any) -> dict[str, Any]:
    rec = standin.received[-1]
    assert rec["path"] == "/v1/chat/completions"
    return rec["body"]  # type: ignore[no-any-return]


def test_response_r2_auto_is_routed_capped_and_rendered(gw: Any, standin: Any) -> None:
    raw = gw.client().responses.with_raw_response.create(
        model="r2-auto", input=QUESTION, instructions="You are a botanist.",
        max_output_tokens=500, temperature=0.5, extra_headers={"x-r2-lambda": "0"})
    response = raw.parse()
    body = sent(standin)
    assert body["model"] == "up-strong" and body["max_tokens"] == 10
    assert body["temperature"] == 0.5
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are a botanist.")
    assert "10 tokens or fewer" in system["content"]
    assert body["messages"][1:] == [{"role": "user", "content": QUESTION}]
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == "strong" and response.status == "completed"
    assert response.output_text == "Hello from the stand-in."
    assert response.instructions == "You are a botanist."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 4)
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "10"
    assert raw.headers["x-r2-predicted-quality"] and raw.headers["x-request-id"]


def test_response_cut_at_the_cap_is_incomplete(gw: Any, standin: Any) -> None:
    response = gw.client().responses.create(model="weak", input=QUESTION, max_output_tokens=3)
    assert sent(standin)["max_tokens"] == 3
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Hello from the"
    events = list(gw.client().responses.create(model="weak", input=QUESTION, stream=True,
                                               max_output_tokens=3))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert events[-1].response.output_text == "Hello from the"


def test_response_stream_r2_auto(gw: Any, standin: Any) -> None:
    client = gw.client()
    with client.responses.with_streaming_response.create(
            model="r2-auto", input=[{"role": "user", "content": QUESTION}], stream=True,
            extra_headers={"x-r2-lambda": "0"}) as resp:
        assert resp.headers["x-r2-model"] == "strong"
        assert resp.headers["x-r2-budget"] == "10"
        events = list(resp.parse())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the stand-in."
    final = events[-1].response
    assert final.output_text == text and final.model == "strong"
    assert final.usage is not None and final.usage.output_tokens == 4
    body = sent(standin)
    assert body["stream"] is True and body["max_tokens"] == 10
    assert body["stream_options"] == {"include_usage": True}
    # The SDK's own accumulating helper parses the same stream.
    with client.responses.stream(model="r2-auto", input=QUESTION,
                                 extra_headers={"x-r2-lambda": "0"}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()
    assert "".join(deltas) == done.output_text == "Hello from the stand-in."


def test_response_tools_and_function_call_items_pass_through(gw: Any, standin: Any) -> None:
    standin.default = Behaviour(tool_call=("get_weather", '{"city": "Paris"}'))
    client = gw.client()
    first = client.responses.create(model="r2-auto", input="Weather in Paris?",
                                    tools=[WEATHER_TOOL], extra_headers={"x-r2-lambda": "0"})
    body = sent(standin)
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": WEATHER_TOOL["parameters"], "strict": False}}]
    assert "max_tokens" not in body  # a tool call must parse: no policy cap
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].call_id == TOOL_CALL_ID and json.loads(calls[0].arguments) == {"city": "Paris"}
    # The next turn sends the call and its output back as items.
    standin.default = Behaviour(text="It is sunny in Paris.")
    second = client.responses.create(
        model="r2-auto", tools=[WEATHER_TOOL], extra_headers={"x-r2-lambda": "0"},
        input=[{"role": "user", "content": "Weather in Paris?"},
               {"type": "function_call", "call_id": TOOL_CALL_ID, "name": "get_weather",
                "arguments": '{"city": "Paris"}'},
               {"type": "function_call_output", "call_id": TOOL_CALL_ID, "output": "sunny"}])
    messages = sent(standin)["messages"]
    assert messages[-2]["role"] == "assistant"
    assert messages[-2]["tool_calls"][0]["id"] == TOOL_CALL_ID
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[-1] == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "sunny"}
    assert second.output_text == "It is sunny in Paris."


def test_response_stream_with_a_tool_call(gw: Any, standin: Any) -> None:
    standin.default = Behaviour(tool_call=("get_weather", '{"city": "Paris"}'))
    with gw.client().responses.stream(model="r2-auto", input="Weather in Paris?",
                                      tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, c.call_id) for c in calls] == [("get_weather", TOOL_CALL_ID)]
    assert json.loads(calls[0].arguments) == {"city": "Paris"}


def test_response_stream_broken_upstream_fails_in_band(gw: Any, standin: Any) -> None:
    standin.behaviours["up-weak"] = Behaviour(break_after_chunks=1)
    events = list(gw.client().responses.create(model="weak", input=QUESTION, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and events[-1].response.error.message


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "r2-auto", "input": QUESTION, "store": True}, 400, "store"),
    ({"model": "r2-auto", "input": QUESTION, "previous_response_id": "resp_1"}, 400,
     "previous_response_id"),
    ({"model": "r2-auto", "input": QUESTION, "background": True}, 400, "background"),
    ({"model": "r2-auto", "input": [{"type": "item_reference", "id": "msg_1"}]}, 400,
     "input[0]"),
    ({"model": "r2-auto", "input": ""}, 400, "input"),
    ({"model": "r2-auto", "input": []}, 400, "input"),
    ({"model": "r2-auto"}, 400, "input"),
    ({"model": "r2-auto", "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
    ({"model": "r2-auto", "input": QUESTION, "max_output_tokens": 0}, 400, "max_output_tokens"),
    ({"model": "r2-auto", "input": QUESTION, "tools": [{"type": "web_search"}]}, 400,
     "tools[0]"),
    ({"model": "r2-auto", "input": QUESTION, "truncation": "auto"}, 400, "truncation"),
    ({"model": "r2-auto", "input": QUESTION, "api_base": "http://x"}, 400, "api_base"),
    ({"input": QUESTION}, 400, "model"),
    ({"model": "nope", "input": QUESTION}, 404, "model"),
])
def test_response_bad_input_gets_the_envelope(gw: Any, standin: Any, body: dict[str, Any],
                                              status: int, param: str) -> None:
    resp = httpx.post(f"{gw.url}/v1/responses", json=body, timeout=30)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert standin.received == []


def test_response_input_is_bounded_like_chat_messages(tmp_path: Any, make_gateway: Any,
                                                      standin: Any) -> None:
    gw = make_gateway(gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                       max_messages=4))
    items = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    resp = httpx.post(f"{gw.url}/v1/responses", json={"model": "r2-auto", "input": items},
                      timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "too_many_messages"
    assert resp.json()["error"]["param"] == "input"
    ok = gw.client().responses.create(model="weak", input=items[:4])
    assert ok.output_text == "Hello from the stand-in."
    assert len(sent(standin)["messages"]) == 4
