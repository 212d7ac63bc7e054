"""`/v1/responses` and `/v1/messages` end to end through a real llama.cpp server
(gemma-3-270m), which speaks only Chat Completions: plumbing, not answer quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from helpers import gateway_settings, tiny_checkpoint

pytestmark = pytest.mark.slow
QUESTION = "Name three colours of the rainbow."


@pytest.fixture
def llama_gateway(tmp_path: Path, make_gateway: Any, llama_base_url: str) -> Any:
    ck = tiny_checkpoint(tmp_path / "ck", budgets=(8, 32),
                         quality={"strong": [0.5, 0.9, 0.3], "weak": [0.2, 0.3, 0.1]})
    # A shared, loaded machine can be slow: the default 60 s request deadline is not the test.
    return make_gateway(gateway_settings(ck, llama_base_url, timeout_s=240.0,
                                         request_timeout_s=300.0))


def test_responses_through_llama_cpp(llama_gateway: Any) -> None:
    client = llama_gateway.client()
    raw = client.responses.with_raw_response.create(
        model="r2-auto", input=QUESTION, instructions="Answer in English.", temperature=0,
        extra_headers={"x-r2-lambda": "0"})
    response = raw.parse()
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "32"
    assert response.object == "response" and response.model == "strong"
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None and 0 < response.usage.output_tokens <= 32
    events = list(client.responses.create(model="r2-auto", input=QUESTION, stream=True,
                                          max_output_tokens=8,
                                          extra_headers={"x-r2-lambda": "0"}))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    # Cut at 8 tokens (likely), the stream ends with `response.incomplete`, as OpenAI's does.
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    assert deltas and final.output_text == "".join(deltas)
    assert final.usage is not None and 0 < final.usage.output_tokens <= 8


def test_messages_through_llama_cpp(llama_gateway: Any) -> None:
    sdk = anthropic.Anthropic(base_url=llama_gateway.url, api_key="any", max_retries=0)
    raw = sdk.messages.with_raw_response.create(
        model="r2-auto", max_tokens=200, system="Answer in English.",
        messages=[{"role": "user", "content": QUESTION}], extra_headers={"x-r2-lambda": "0"})
    message = raw.parse()
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "32"
    assert message.model == "strong" and message.stop_reason in ("end_turn", "max_tokens")
    assert message.content and message.content[0].type == "text"
    assert 0 < message.usage.output_tokens <= 32
    with sdk.messages.stream(model="r2-auto", max_tokens=8,
                             messages=[{"role": "user", "content": QUESTION}],
                             extra_headers={"x-r2-lambda": "0"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 8
