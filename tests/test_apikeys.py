"""One reading of the key a request presents, shared by authentication, rate-limit buckets and
the decision log: an Anthropic SDK client (`x-api-key`) is the same key as an OpenAI one."""

from __future__ import annotations

from starlette.datastructures import Headers

from gateway.apikeys import presented_key
from gateway.state.ratelimit import bucket


def test_bearer_token_first_then_x_api_key() -> None:
    assert presented_key(Headers({"authorization": "Bearer sk-a"})) == "sk-a"
    assert presented_key(Headers({"x-api-key": "sk-b"})) == "sk-b"
    assert presented_key(Headers({"authorization": "Bearer sk-a", "x-api-key": "sk-b"})) == "sk-a"
    assert presented_key(Headers({"authorization": "Basic xyz", "x-api-key": "sk-b"})) == "sk-b"
    assert presented_key(Headers({"authorization": "Bearer "})) == ""
    assert presented_key(Headers({})) == ""


def test_a_key_sent_either_way_counts_in_one_rate_limit_bucket() -> None:
    openai_style = bucket(Headers({"authorization": "Bearer sk-same"}))
    anthropic_style = bucket(Headers({"x-api-key": "sk-same"}))
    assert openai_style == anthropic_style != bucket(Headers({}))
    assert "sk-same" not in openai_style  # stored hashed
    assert bucket(Headers({"x-api-key": "sk-other"})) != openai_style
