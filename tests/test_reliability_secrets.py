"""Credentials: the client's key and the provider keys never appear where they do not belong.

The provider keys are deliberately not `sk-`-shaped, so the generic key pattern in
`errors.scrub` cannot be what hides them: the gateway must know and mask its own secrets.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour

CLIENT_KEY = "client-Key-7f3a9c1e"
WRONG_KEY = "client-Wrong-Key-0d2b"
PROVIDER_KEYS = {"strong": "prov-strong-Secret-11aa22", "weak": "prov-weak-Secret-33bb44"}
SECRETS = (CLIENT_KEY, WRONG_KEY, *PROVIDER_KEYS.values())
PROMPT = "PROMPT-MARKER-5be1 what is the capital of France?"
USER = [{"role": "user", "content": PROMPT}]
LOGGERS = ("", "r2.gateway", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore",
           "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def keyed_gateway(make_gateway: Any, standin: Any, tmp_path: Any,
                  monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url)
    for dep in settings["deployments"]:
        env = f"R2_TEST_KEY_{dep['name'].upper()}"
        monkeypatch.setenv(env, PROVIDER_KEYS[dep["name"]])
        dep["api_key_env"] = env
    settings["server"] = {"api_keys": [CLIENT_KEY]}
    return make_gateway(settings)


def capture_logs(level: int) -> Iterator[io.StringIO]:
    """Everything logged by the gateway, LiteLLM, httpx and uvicorn (propagating or not)."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield buf
    finally:
        for logger, old in saved:
            logger.removeHandler(handler)
            logger.setLevel(old)


@pytest.fixture(params=[logging.DEBUG, logging.INFO], ids=["debug", "info"])
def logs(request: pytest.FixtureRequest) -> Iterator[tuple[int, io.StringIO]]:
    for buf in capture_logs(request.param):
        yield request.param, buf


def exercise(gw: Any, standin: Any) -> list[str]:
    """Successes, streams, provider errors that quote the key, a broken stream, a bad key."""
    seen: list[str] = []
    client = gw.client(api_key=CLIENT_KEY)

    def record(raw: Any) -> None:
        seen.append(json.dumps(dict(raw.headers)) + raw.http_response.text)

    record(client.chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers={"x-r2-lambda": "0"}))
    record(client.chat.completions.with_raw_response.create(model="weak", messages=USER))
    with client.chat.completions.with_streaming_response.create(
            model="r2-auto", messages=USER, stream=True) as resp:
        seen.append(json.dumps(dict(resp.headers)) + "".join(resp.iter_text()))
    for status in (400, 401, 429, 500):
        standin.default = Behaviour(status=status, retry_after="3",
                                    message="Incorrect API key provided: {key} ({authorization})")
        resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {CLIENT_KEY}"},
                          json={"model": "r2-auto", "messages": USER})
        assert resp.status_code >= 400
        seen.append(json.dumps(dict(resp.headers)) + resp.text)
    standin.default = Behaviour(break_after_chunks=1)
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "weak", "messages": USER, "stream": True}) as resp:
        seen.append(json.dumps(dict(resp.headers)) + resp.read().decode())
    with pytest.raises(openai.AuthenticationError) as err:
        gw.client(api_key=WRONG_KEY).chat.completions.create(model="r2-auto", messages=USER)
    seen.append(json.dumps(err.value.body))
    return seen


def test_provider_gets_only_its_own_key_and_never_the_clients(keyed_gateway: Any,
                                                             standin: Any) -> None:
    exercise(keyed_gateway, standin)
    assert {r["body"]["model"] for r in standin.received} == {"up-strong", "up-weak"}
    for rec in standin.received:
        own = PROVIDER_KEYS[rec["body"]["model"].removeprefix("up-")]
        assert rec["headers"]["authorization"] == f"Bearer {own}"
        others = [s for s in SECRETS if s != own]
        assert not any(s in json.dumps(rec) for s in others)


def test_keys_never_in_responses_logs_or_metrics(keyed_gateway: Any, standin: Any,
                                                 logs: tuple[int, io.StringIO],
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """Even at DEBUG no key is logged; at INFO (the serving level) no prompt is either."""
    level, buf = logs
    responses = "\n".join(exercise(keyed_gateway, standin))
    metrics = httpx.get(f"{keyed_gateway.url}/metrics").text
    out, err = capfd.readouterr()
    logged = buf.getvalue() + out + err
    assert "request id=" in logged  # the capture works: the gateway's own line is there
    assert "Incorrect API key provided: [redacted]" in responses
    for secret in SECRETS:
        assert secret not in responses
        assert secret not in logged
        assert secret not in metrics
    assert "PROMPT-MARKER" not in metrics
    if level >= logging.INFO:
        assert "PROMPT-MARKER" not in logged
