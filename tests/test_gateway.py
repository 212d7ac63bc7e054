"""The gateway through the real OpenAI SDK against the recording provider stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour

from router_core import Policy

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"},
                                            "api_key": {"type": "string"},
                                            "nested": {"type": "object", "properties": {
                                                "base_url": {"type": "string"}}}},
          "required": ["answer"]}


def last_body(standin: Any) -> dict[str, Any]:
    return standin.received[-1]["body"]  # type: ignore[no-any-return]


def test_r2_auto_rewrites_model_budget_and_instruction(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0"})
    completion = raw.parse()
    sent = last_body(standin)
    assert sent["model"] == "up-strong"
    assert sent["max_tokens"] == 10
    assert sent["messages"][0]["role"] == "system"
    assert "10 tokens or fewer" in sent["messages"][0]["content"]
    assert sent["messages"][1:] == USER
    assert completion.model == "strong"
    assert raw.headers["x-r2-model"] == "strong"
    assert raw.headers["x-r2-budget"] == "10"
    assert float(raw.headers["x-r2-predicted-quality"]) == pytest.approx(0.9)
    assert float(raw.headers["x-r2-predicted-cost-usd"]) > 0
    assert raw.headers["x-r2-lambda"] == "0.0"
    assert float(raw.headers["x-r2-route-ms"]) >= 0


def test_passthrough_fields_untouched_and_client_key_not_forwarded(make_gateway: Any,
                                                                    standin: Any) -> None:
    gw = make_gateway()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]
    gw.client(api_key="sk-client-secret-123").chat.completions.create(
        model="r2-auto", messages=USER, temperature=0.25, seed=7, n=1, user="u-1",
        tools=tools, tool_choice="auto",
        response_format={"type": "json_schema",
                         "json_schema": {"name": "out", "schema": SCHEMA}},
        extra_headers={"x-r2-lambda": "0"})
    rec = standin.received[-1]
    sent = rec["body"]
    assert sent["tools"] == tools
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
    assert (sent["temperature"], sent["seed"], sent["user"]) == (0.25, 7, "u-1")
    assert "sk-client-secret-123" not in json.dumps(rec["headers"])
    assert "sk-client-secret-123" not in json.dumps(sent)


def test_system_instruction_is_merged_not_replaced(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    msgs = [{"role": "system", "content": "You are a pirate."}, *USER]
    gw.client().chat.completions.create(model="r2-auto", messages=msgs,
                                        extra_headers={"x-r2-lambda": "0"})
    system = last_body(standin)["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are a pirate.")
    assert "tokens or fewer" in system["content"]
    assert len(last_body(standin)["messages"]) == 2


def test_client_max_tokens_caps_budgets_and_keeps_its_field(tmp_path: Path, make_gateway: Any,
                                                            standin: Any) -> None:
    # Quality rises with budget: without a cap the 100 budget wins at lambda 0.
    ck = tiny_checkpoint(tmp_path / "ck", quality={"strong": [0.5, 0.9, 0.2],
                                                   "weak": [0.1, 0.2, 0.1]})
    gw = make_gateway(ckpt=ck)
    client = gw.client()
    client.chat.completions.create(model="r2-auto", messages=USER,
                                   extra_headers={"x-r2-lambda": "0"})
    assert last_body(standin)["max_tokens"] == 100
    client.chat.completions.create(model="r2-auto", messages=USER, max_completion_tokens=50,
                                   extra_headers={"x-r2-lambda": "0"})
    sent = last_body(standin)
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 10


def test_unlimited_keeps_client_value_or_deployment_default(tmp_path: Path, make_gateway: Any,
                                                            standin: Any) -> None:
    ck = tiny_checkpoint(tmp_path / "ck", quality={"strong": [0.1, 0.2, 0.95],
                                                   "weak": [0.1, 0.1, 0.1]})
    settings = gateway_settings(ck, standin.base_url)
    settings["deployments"][0]["max_tokens"] = 333
    gw = make_gateway(settings)
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0"})
    assert raw.headers["x-r2-budget"] == "unlimited"
    sent = last_body(standin)
    assert sent["max_tokens"] == 333
    assert sent["messages"] == USER  # no instruction for the budget-free arm
    gw.client().chat.completions.create(model="r2-auto", messages=USER, max_tokens=777,
                                        extra_headers={"x-r2-lambda": "0"})
    assert last_body(standin)["max_tokens"] == 777


def test_named_policy_instruction_and_cap_are_applied(tmp_path: Path, make_gateway: Any,
                                                      standin: Any) -> None:
    style = Policy("concise_cot", None, 256, "Think step by step, briefly.", "predicted")
    ck = tiny_checkpoint(tmp_path / "ck", extra_policies=(style,),
                         quality={"strong": [0.1, 0.1, 0.1, 0.99], "weak": [0.1] * 4})
    gw = make_gateway(ckpt=ck)
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0"})
    assert raw.headers["x-r2-budget"] == "concise_cot"
    sent = last_body(standin)
    assert sent["max_tokens"] == 256
    assert sent["messages"][0]["content"] == "Think step by step, briefly."


def test_named_policy_without_instruction_refused_at_startup(tmp_path: Path, standin: Any) -> None:
    from gateway.app import build_app
    from gateway.config import ConfigError, parse_settings

    ck = tiny_checkpoint(tmp_path / "ck", extra_policies=(Policy("verbose", None, None, None),))
    with pytest.raises(ConfigError, match="verbose"):
        build_app(parse_settings(gateway_settings(ck, standin.base_url)))


def test_checkpoint_model_without_deployment_fails_at_startup(tmp_path: Path,
                                                              standin: Any) -> None:
    from gateway.app import build_app
    from gateway.config import ConfigError, parse_settings

    ck = tiny_checkpoint(tmp_path / "ck")
    settings = gateway_settings(ck, standin.base_url, models=("strong",))
    with pytest.raises(ConfigError, match="weak"):
        build_app(parse_settings(settings))


def test_routing_headers_restrict_models_and_cost(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0", "x-r2-models": "weak"})
    assert raw.headers["x-r2-model"] == "weak"
    assert last_body(standin)["model"] == "up-weak"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="r2-auto", messages=USER,
                                       extra_headers={"x-r2-max-cost-usd": "0"})
    assert err.value.body["param"] == "x-r2-max-cost-usd"  # type: ignore[index]


def test_plain_proxy_forwards_named_deployment_unchanged(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="weak", messages=USER, max_tokens=42)
    sent = last_body(standin)
    assert sent["model"] == "up-weak"
    assert sent["messages"] == USER and sent["max_tokens"] == 42
    assert "x-r2-model" not in raw.headers
    assert raw.parse().model == "weak"


def test_streaming_carries_headers_and_chunks(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    with gw.client().chat.completions.with_streaming_response.create(
            model="r2-auto", messages=USER, stream=True,
            extra_headers={"x-r2-lambda": "0"}) as resp:
        assert resp.headers["x-r2-model"] == "strong"
        assert resp.headers["x-r2-budget"] == "10"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stand-in."
    assert all(c.model == "strong" for c in chunks)
    assert last_body(standin)["stream"] is True


def test_fallback_to_other_model_on_upstream_5xx(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    standin.behaviours["up-strong"] = Behaviour(status=500)
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0"})
    assert raw.headers["x-r2-model"] == "weak"
    assert raw.headers["x-r2-fallback"].startswith("upstream-error")
    assert [r["body"]["model"] for r in standin.received] == ["up-strong", "up-weak"]


def test_models_health_ready_and_metrics(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    ids = [m.id for m in gw.client().models.list()]
    assert ids == ["r2-auto", "strong", "weak"]
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    assert httpx.get(f"{gw.url}/readyz").json()["status"] == "ready"
    gw.client().chat.completions.create(model="r2-auto", messages=USER,
                                        extra_headers={"x-r2-lambda": "0"})
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'r2_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    assert 'r2_decisions_total{budget="10",model="strong"} 1.0' in text
    for name in ("r2_route_seconds_bucket", "r2_embedding_seconds_bucket",
                 "r2_upstream_seconds_bucket", "r2_actual_cost_usd_total",
                 "r2_predicted_cost_usd_total", "r2_completion_tokens_bucket"):
        assert name in text


def test_route_endpoint_ranks_all_candidates(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway()
    resp = httpx.post(f"{gw.url}/v1/route", json={"model": "r2-auto", "messages": USER},
                      headers={"x-r2-lambda": "0"})
    data = resp.json()
    assert resp.status_code == 200
    assert (data["model"], data["budget"]) == ("strong", 10)
    assert len(data["candidates"]) == 6
    utilities = [c["utility"] for c in data["candidates"]]
    assert utilities == sorted(utilities, reverse=True)
    assert standin.received == []


@pytest.mark.parametrize(("payload", "headers", "param"), [
    (b"{not json", {}, None),
    (json.dumps({"model": "r2-auto", "messages": []}).encode(), {}, "messages"),
    (json.dumps({"model": "r2-auto", "messages": "hi"}).encode(), {}, "messages"),
    (json.dumps({"model": 5, "messages": USER}).encode(), {}, "model"),
    (json.dumps({"model": "r2-auto", "messages": USER, "max_tokens": -1}).encode(), {},
     "max_tokens"),
    (json.dumps({"model": "r2-auto", "messages": USER, "max_tokens": "10"}).encode(), {},
     "max_tokens"),
    (json.dumps({"model": "r2-auto", "messages": USER}).encode(), {"x-r2-lambda": "2"},
     "x-r2-lambda"),
    (json.dumps({"model": "r2-auto", "messages": USER}).encode(), {"x-r2-lambda": "abc"},
     "x-r2-lambda"),
    (json.dumps({"model": "r2-auto", "messages": USER, "api_base": "http://x"}).encode(), {},
     "api_base"),
])
def test_bad_input_is_400_in_openai_envelope(make_gateway: Any, standin: Any, payload: bytes,
                                            headers: dict[str, str], param: str | None) -> None:
    gw = make_gateway()
    resp = httpx.post(f"{gw.url}/v1/chat/completions", content=payload,
                      headers={"content-type": "application/json", **headers})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param
    assert standin.received == []


def test_unknown_model_404_and_auth_401(make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(server={"api_keys": ["gw-key-1"]})
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key="wrong").chat.completions.create(model="r2-auto", messages=USER)
    with pytest.raises(openai.NotFoundError):
        gw.client(api_key="gw-key-1").chat.completions.create(model="gpt-9", messages=USER)
    ok = gw.client(api_key="gw-key-1").chat.completions.create(model="weak", messages=USER)
    assert ok.model == "weak"
    assert "gw-key-1" not in json.dumps(standin.received)


async def test_litellm_prices_responses_with_the_gateways_prices(tmp_path: Path,
                                                                 standin: Any) -> None:
    """Each deployment's LiteLLM entry carries the price the router uses (gateway.yaml's
    override, else the checkpoint's), and LiteLLM's own response cost follows it."""
    from gateway.config import parse_settings
    from gateway.service import Service

    ckpt = tiny_checkpoint(tmp_path / "ck", prices={"strong": (3.0, 15.0), "weak": (0.5, 1.5)})
    raw = gateway_settings(ckpt, standin.base_url)
    raw["deployments"][1].update(input_price_per_million=0.25, output_price_per_million=0.75)
    service = Service(parse_settings(raw))
    await service.start()
    try:
        entries = {e["model_name"]: e["litellm_params"]
                   for e in service.upstream.router.get_model_list()}
        assert entries["strong"]["input_cost_per_token"] == pytest.approx(3.0e-6)
        assert entries["strong"]["output_cost_per_token"] == pytest.approx(15.0e-6)
        assert entries["weak"]["input_cost_per_token"] == pytest.approx(0.25e-6)
        assert entries["weak"]["output_cost_per_token"] == pytest.approx(0.75e-6)
        response = await service.upstream.router.acompletion(model="weak", messages=USER,
                                                              max_tokens=20)
        usage = response.usage
        expected = (usage.prompt_tokens * 0.25 + usage.completion_tokens * 0.75) / 1e6
        assert response._hidden_params["response_cost"] == pytest.approx(expected)
    finally:
        await service.stop()
