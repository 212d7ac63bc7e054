"""Upstream faults: error statuses, timeouts, a failing deployment, all of them failing."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
LAMBDA0 = {"x-r2-lambda": "0"}  # quality only: "strong" is the best candidate


def chat(gw: Any, model: str = "r2-auto", stream: bool = False) -> httpx.Response:
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", headers=LAMBDA0, timeout=30,
                      json={"model": model, "messages": USER, "stream": stream}) as resp:
        resp.read()
    return resp


def assert_envelope(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize("model", ["weak", "r2-auto"])
@pytest.mark.parametrize(("upstream", "status", "sdk_error"), [
    (400, 400, openai.BadRequestError),
    (401, 502, openai.InternalServerError),
    (404, 404, openai.NotFoundError),
    (429, 429, openai.RateLimitError),
    (500, 502, openai.InternalServerError),
    (503, 503, openai.InternalServerError),
])
def test_upstream_error_reaches_the_client_in_the_same_class(
        make_gateway: Any, standin: Any, model: str, upstream: int, status: int,
        sdk_error: type[openai.APIStatusError]) -> None:
    """Client faults stay the same 4xx; provider faults are 5xx (the SDK's class is the same).

    Upstream 401 is deliberately a 502, not a 401: the provider refused the gateway's own key,
    which the client can neither see nor fix; a 401 would tell it that its key is wrong. As a
    deployment fault it is also routed around, like any other 5xx.
    """
    gw = make_gateway()
    standin.default = Behaviour(status=upstream, retry_after="7")
    with pytest.raises(sdk_error) as err:
        gw.client().chat.completions.create(model=model, messages=USER, extra_headers=LAMBDA0)
    assert err.value.status_code == status
    assert isinstance(err.value.body, dict)
    assert set(err.value.body) == {"message", "type", "param", "code"}
    if upstream in (429, 503):
        assert err.value.response.headers["retry-after"] == "7"
    if model == "weak":
        expected = ["up-weak"]
    else:  # a provider fault on the best model falls back to the next one; a 4xx does not
        expected = ["up-strong", "up-weak"] if status >= 500 else ["up-strong"]
    assert [r["body"]["model"] for r in standin.received] == expected  # and no retries


@pytest.mark.parametrize("stall", [
    ("json", Behaviour(delay_s=30)),
    ("stream", Behaviour(delay_s=30)),
    ("stream", Behaviour(first_chunk_delay_s=30)),
], ids=["json", "stream-no-headers", "stream-no-first-token"])
def test_upstream_slower_than_timeout_is_504_within_timeout_plus_1s(
        tmp_path: Any, make_gateway: Any, standin: Any, stall: tuple[str, Behaviour]) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                timeout_s=1.0)
    gw = make_gateway(settings)
    standin.default = stall[1]
    start = time.monotonic()
    resp = chat(gw, "weak", stream=stall[0] == "stream")
    assert assert_envelope(resp, 504)["code"] == "upstream_timeout"
    assert time.monotonic() - start < 1.0 + 1.0


def test_all_deployments_stalled_is_504_within_request_timeout_then_recovers(
        tmp_path: Any, make_gateway: Any, standin: Any) -> None:
    """`request_timeout_s` bounds the whole request, fallback included (not 2 x timeout_s)."""
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url,
                                timeout_s=1.0, request_timeout_s=1.5)
    gw = make_gateway(settings)
    standin.default = Behaviour(delay_s=30)
    start = time.monotonic()
    resp = chat(gw)
    elapsed = time.monotonic() - start
    assert_envelope(resp, 504)
    assert [r["body"]["model"] for r in standin.received] == ["up-strong", "up-weak"]
    assert elapsed < 1.5 + 0.5
    standin.default = Behaviour()
    recovered = chat(gw)
    assert recovered.status_code == 200
    assert recovered.headers["x-r2-model"] == "strong"


def test_all_deployments_failing_is_fast_5xx_then_full_recovery(make_gateway: Any,
                                                                standin: Any) -> None:
    gw = make_gateway(server={"cooldown": {"allowed_fails": 2, "cooldown_s": 30}})
    standin.default = Behaviour(status=500)
    for _ in range(3):  # enough to cool both deployments down
        # Fast means no retry loop and no waiting: at most one call per deployment (counted,
        # not timed, so a loaded machine cannot fail it); 10 s only guards against a hang.
        sent, start = len(standin.received), time.monotonic()
        assert_envelope(chat(gw), 502)
        assert len(standin.received) - sent <= 2
        assert time.monotonic() - start < 10.0
    assert gw.service.upstream.cooldowns.cooling() == {"strong", "weak"}
    standin.default = Behaviour()
    standin.received.clear()
    for _ in range(3):
        resp = chat(gw)
        assert resp.status_code == 200
        assert resp.headers["x-r2-model"] == "strong"
        assert "x-r2-fallback" not in resp.headers
    assert gw.service.upstream.cooldowns.cooling() == {"weak"}  # strong proved healthy


def test_failing_deployment_is_cooled_down_routed_around_and_returns(make_gateway: Any,
                                                                     standin: Any) -> None:
    gw = make_gateway(server={"cooldown": {"allowed_fails": 2, "cooldown_s": 30.0}})
    now = [1000.0]  # the cooldown's clock, stepped by hand: no race with a loaded machine
    gw.service.upstream.cooldowns.clock = lambda: now[0]
    standin.behaviours["up-strong"] = Behaviour(status=500)
    for _ in range(2):
        resp = chat(gw)
        assert resp.status_code == 200
        assert resp.headers["x-r2-model"] == "weak"
        assert resp.headers["x-r2-fallback"] == "upstream-error:strong"
    standin.received.clear()
    for _ in range(5):  # cooled down: straight to the next-best candidate on another model
        now[0] += 5.0
        resp = chat(gw)
        assert (resp.status_code, resp.headers["x-r2-model"]) == (200, "weak")
        assert "x-r2-fallback" not in resp.headers
    assert {r["body"]["model"] for r in standin.received} == {"up-weak"}
    assert gw.service.upstream.cooldowns.cooling() == {"strong"}  # 25 s of 30 s gone
    standin.behaviours.clear()
    now[0] += 5.01
    assert gw.service.upstream.cooldowns.cooling() == set()
    resp = chat(gw)
    assert (resp.status_code, resp.headers["x-r2-model"]) == (200, "strong")


def test_failing_stream_falls_back_before_the_first_byte(make_gateway: Any,
                                                         standin: Any) -> None:
    gw = make_gateway()
    standin.behaviours["up-strong"] = Behaviour(status=503)
    resp = chat(gw, stream=True)
    assert resp.status_code == 200
    assert resp.headers["x-r2-model"] == "weak"
    assert resp.text.rstrip().endswith("data: [DONE]")
