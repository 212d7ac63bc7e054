"""`/v1/completions` and `/v1/embeddings` through the real OpenAI SDK against the stand-in."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour, fake_embedding

PROMPT = "Explain photosynthesis briefly."


def with_embedder(settings: dict[str, Any], base_url: str) -> dict[str, Any]:
    settings["deployments"].append({"name": "embed", "model": "openai/up-embed",
                                    "api_base": base_url, "kind": "embedding"})
    return settings


@pytest.fixture
def gw(tmp_path: Any, make_gateway: Any, standin: Any) -> Any:
    ck = tiny_checkpoint(tmp_path / "ck")
    return make_gateway(with_embedder(gateway_settings(ck, standin.base_url), standin.base_url))


def last(standin: Any) -> dict[str, Any]:
    return standin.received[-1]  # type: ignore[no-any-return]


# -- /v1/completions -------------------------------------------------------------------------

def test_completion_r2_auto_is_routed_capped_and_rendered(gw: Any, standin: Any) -> None:
    raw = gw.client().completions.with_raw_response.create(
        model="r2-auto", prompt=PROMPT, max_tokens=500, temperature=0.5,
        extra_headers={"x-r2-lambda": "0"})
    done = raw.parse()
    rec = last(standin)
    assert rec["path"] == "/v1/chat/completions"
    sent = rec["body"]
    assert sent["model"] == "up-strong" and sent["max_tokens"] == 10
    assert sent["temperature"] == 0.5
    assert sent["messages"][0]["role"] == "system"
    assert "10 tokens or fewer" in sent["messages"][0]["content"]
    assert sent["messages"][1:] == [{"role": "user", "content": PROMPT}]
    assert done.object == "text_completion" and done.model == "strong"
    assert done.choices[0].text == "Hello from the stand-in."
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens == 4
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "10"
    assert raw.headers["x-request-id"]


def test_completion_stream_r2_auto(gw: Any, standin: Any) -> None:
    with gw.client().completions.with_streaming_response.create(
            model="r2-auto", prompt=[PROMPT], stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-r2-lambda": "0"}) as resp:
        assert resp.headers["x-r2-model"] == "strong"
        chunks = list(resp.parse())
    assert all(c.object == "text_completion" and c.model == "strong" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the stand-in."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    sent = last(standin)["body"]
    assert sent["stream"] is True and sent["max_tokens"] == 10
    assert "10 tokens or fewer" in sent["messages"][0]["content"]


def test_completion_named_deployment_is_proxied(gw: Any, standin: Any) -> None:
    raw = gw.client().completions.with_raw_response.create(model="weak", prompt=PROMPT,
                                                           max_tokens=3)
    sent = last(standin)["body"]
    assert sent["model"] == "up-weak" and sent["max_tokens"] == 3
    assert sent["messages"] == [{"role": "user", "content": PROMPT}]
    done = raw.parse()
    assert done.model == "weak" and done.choices[0].text == "Hello from the"
    assert done.choices[0].finish_reason == "length"
    assert "x-r2-model" not in raw.headers
    stream = gw.client().completions.create(model="weak", prompt=PROMPT, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == \
        "Hello from the stand-in."


def test_completion_list_of_prompts_each_routed(gw: Any, standin: Any) -> None:
    raw = gw.client().completions.with_raw_response.create(
        model="r2-auto", prompt=["First question?", "Second question?"], n=1,
        extra_headers={"x-r2-lambda": "0", "x-r2-models": "weak"})
    done = raw.parse()
    users = [r["body"]["messages"][-1]["content"] for r in standin.received]
    assert users == ["First question?", "Second question?"]
    assert all(r["body"]["max_tokens"] == 10 for r in standin.received)
    assert [c.index for c in done.choices] == [0, 1]
    assert done.usage is not None and done.usage.completion_tokens == 8
    assert raw.headers["x-r2-model"] == "weak, weak"
    assert raw.headers["x-r2-budget"] == "10, 10"


@pytest.mark.parametrize(("kwargs", "status", "param"), [
    ({"model": "r2-auto", "prompt": [1, 2, 3]}, 400, "prompt"),
    ({"model": "r2-auto", "prompt": [[1, 2], [3]]}, 400, "prompt"),
    ({"model": "r2-auto", "prompt": ["a", "b"], "stream": True}, 400, "prompt"),
    ({"model": "r2-auto", "prompt": ["a", " "]}, 400, "prompt[1]"),
    ({"model": "r2-auto", "prompt": ""}, 400, "prompt"),
    ({"model": "r2-auto", "prompt": PROMPT, "suffix": "x"}, 400, "suffix"),
    ({"model": "r2-auto", "prompt": PROMPT, "extra_body": {"api_base": "http://x"}}, 400,
     "api_base"),
    ({"model": "r2-auto", "prompt": PROMPT, "echo": True}, 400, "echo"),
    ({"model": "r2-auto", "prompt": PROMPT, "logprobs": 2}, 400, "logprobs"),
    ({"model": "r2-auto", "prompt": PROMPT, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "embed", "prompt": PROMPT}, 400, "model"),
    ({"model": "nope", "prompt": PROMPT}, 404, "model"),
])
def test_completion_bad_input_gets_the_envelope(gw: Any, standin: Any, kwargs: dict[str, Any],
                                                status: int, param: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        gw.client().completions.create(**kwargs)
    assert info.value.status_code == status
    error = info.value.response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert standin.received == []


# -- /v1/embeddings --------------------------------------------------------------------------

def test_embeddings_list_passes_through(gw: Any, standin: Any) -> None:
    texts = ["first text", "second text"]
    raw = gw.client().embeddings.with_raw_response.create(model="embed", input=texts)
    result = raw.parse()
    rec = last(standin)
    assert rec["path"] == "/v1/embeddings"
    assert rec["body"]["model"] == "up-embed" and rec["body"]["input"] == texts
    assert "client-secret" not in json.dumps(rec["headers"])
    assert result.model == "embed" and [d.index for d in result.data] == [0, 1]
    # The SDK asks for base64 and decodes it: the vectors arrive intact.
    assert [d.embedding for d in result.data] == [fake_embedding(t) for t in texts]
    assert result.usage.prompt_tokens == 4
    assert raw.headers["x-request-id"]
    floats = gw.client().embeddings.create(model="embed", input="one", encoding_format="float",
                                           dimensions=4)
    assert floats.data[0].embedding == fake_embedding("one", 4)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'r2_requests_total{endpoint="/v1/embeddings",status="200"} 2.0' in metrics
    assert 'r2_upstream_seconds_count{model="embed"} 2.0' in metrics


@pytest.mark.parametrize(("kwargs", "status", "param"), [
    ({"model": "embed", "input": []}, 400, "input"),
    ({"model": "embed", "input": ["ok", ""]}, 400, "input[1]"),
    ({"model": "embed", "input": [{"text": "x"}]}, 400, "input[0]"),
    ({"model": "embed", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "strong", "input": "x"}, 400, "model"),
    ({"model": "r2-auto", "input": "x"}, 400, "model"),
    ({"model": "nope", "input": "x"}, 404, "model"),
])
def test_embeddings_bad_input_gets_the_envelope(gw: Any, standin: Any, kwargs: dict[str, Any],
                                                status: int, param: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        gw.client().embeddings.create(**kwargs)
    assert info.value.status_code == status
    error = info.value.response.json()["error"]
    assert error["param"] == param and error["message"]
    assert standin.received == []


def test_embeddings_auth_limits_and_upstream_errors(tmp_path: Any, make_gateway: Any,
                                                    standin: Any) -> None:
    settings = with_embedder(gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                              api_keys=["gw-key"], max_body_bytes=2000),
                             standin.base_url)
    gw = make_gateway(settings)
    with pytest.raises(openai.AuthenticationError):
        gw.client(api_key="wrong").embeddings.create(model="embed", input="x")
    with pytest.raises(openai.APIStatusError) as info:
        gw.client(api_key="gw-key").embeddings.create(model="embed", input="x" * 5000)
    assert info.value.status_code == 413
    standin.behaviours["up-embed"] = Behaviour(status=503)
    with pytest.raises(openai.APIStatusError) as info:
        gw.client(api_key="gw-key").embeddings.create(model="embed", input="x")
    assert info.value.status_code == 503
    assert info.value.response.json()["error"]["code"] == "upstream_unavailable"


def test_embedding_deployment_is_no_routing_candidate_and_needs_no_price(
        tmp_path: Any, make_gateway: Any, standin: Any) -> None:
    from gateway.app import build_app
    from gateway.config import ConfigError, parse_settings

    gw = make_gateway(with_embedder(gateway_settings(tiny_checkpoint(tmp_path / "ck"),
                                                     standin.base_url), standin.base_url))
    assert "embed" not in gw.service.scorer.models
    with pytest.raises(openai.BadRequestError) as info:
        gw.client().chat.completions.create(model="embed",
                                            messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.json()["error"]["code"] == "wrong_model_kind"
    # A checkpoint model served by an embedding deployment is a start-up error.
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck2"), standin.base_url)
    settings["deployments"][1]["kind"] = "embedding"
    with pytest.raises(ConfigError, match="'weak' has no chat deployment"):
        build_app(parse_settings(settings))


def test_completion_stream_broken_upstream_ends_with_error_event(gw: Any, standin: Any) -> None:
    standin.behaviours["up-weak"] = Behaviour(break_after_chunks=1)
    with httpx.stream("POST", f"{gw.url}/v1/completions", timeout=30,
                      json={"model": "weak", "prompt": PROMPT, "stream": True}) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"]
    first = json.loads(events[0])
    assert first["object"] == "text_completion" and first["model"] == "weak"
