"""Validation of `/v1/chat/completions` bodies and the routing headers.

Bodies are checked by hand rather than by a pydantic model so that everything the client sent
passes through byte-for-byte (nested JSON schemas, unknown provider fields) and so that every
problem is a 400 with `param` set, never FastAPI's 422.

Fields that would let a client redirect or re-key the provider (`api_base`, `api_key`,
`extra_headers`, ...) are refused wherever LiteLLM would read them: at the top level and inside
the containers it merges into its own keyword arguments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import APIError, bad_request

#: Names that configure the provider connection in LiteLLM or the OpenAI SDK.
FORBIDDEN_KEYS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "extra_headers", "headers",
    "custom_llm_provider", "organization", "azure_ad_token", "azure_ad_token_provider",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "aws_bedrock_runtime_endpoint", "aws_profile_name", "vertex_project", "vertex_location",
    "vertex_credentials", "project", "region_name", "client", "litellm_params", "model_list",
    "proxy_server_request", "litellm_call_id", "mock_response", "input_cost_per_token",
    "output_cost_per_token", "callbacks", "success_callback", "failure_callback", "http_client",
    "deployment_id", "endpoint", "url", "token", "timeout", "num_retries", "max_retries",
    "litellm_logging_obj", "logger_fn", "custom_prompt_dict", "model_alias_map", "api_key_env",
})
#: Containers whose keys LiteLLM reads as its own kwargs or merges into the request.
SCANNED_CONTAINERS = ("extra_body", "metadata", "litellm_metadata", "model_info", "kwargs",
                      "optional_params", "extra_query", "litellm_settings")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_TOKENS_LIMIT = 1_000_000


@dataclass(frozen=True)
class RouteHeaders:
    lambda_: float
    max_cost_usd: float | None
    models: tuple[str, ...] | None


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad_request("request body is not valid JSON", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", None, "invalid_json")
    return body


def _find_forbidden(value: Any, path: str) -> str | None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if str(key).lower() in FORBIDDEN_KEYS:
                return f"{path}.{key}" if path else str(key)
            found = _find_forbidden(inner, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found = _find_forbidden(inner, f"{path}[{i}]")
            if found:
                return found
    return None


def check_forbidden(body: Mapping[str, Any]) -> None:
    for key in body:
        if str(key).lower() in FORBIDDEN_KEYS:
            raise bad_request(f"field '{key}' is not allowed: provider connection settings are "
                              "configured by the gateway", str(key), "forbidden_field")
    for container in SCANNED_CONTAINERS:
        if container in body:
            found = _find_forbidden(body[container], container)
            if found:
                raise bad_request(f"field '{found}' is not allowed: provider connection "
                                  "settings are configured by the gateway", found,
                                  "forbidden_field")


def _check_int(body: Mapping[str, Any], key: str, low: int, high: int) -> None:
    if key in body and body[key] is not None:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"'{key}' must be an integer", key, "invalid_type")
        if not low <= value <= high:
            raise bad_request(f"'{key}' must be between {low} and {high}", key)


def _check_number(body: Mapping[str, Any], key: str, low: float, high: float) -> None:
    if key in body and body[key] is not None:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad_request(f"'{key}' must be a number", key, "invalid_type")
        if not low <= value <= high:
            raise bad_request(f"'{key}' must be between {low} and {high}", key)


def validate_chat_body(body: dict[str, Any]) -> None:
    """Raise a 400 `APIError` naming the field for anything malformed."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", "model", "invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", "messages", "invalid_type")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad_request("each message must be an object", f"messages[{i}]", "invalid_type")
        if msg.get("role") not in ROLES:
            raise bad_request("message role is missing or invalid", f"messages[{i}].role")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request("message content must be a string or an array of parts",
                              f"messages[{i}].content", "invalid_type")
        if isinstance(content, list) and not all(isinstance(p, dict | str) for p in content):
            raise bad_request("content parts must be objects", f"messages[{i}].content",
                              "invalid_type")
    _check_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    _check_int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    _check_int(body, "n", 1, 128)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise bad_request("'stream' must be a boolean", "stream", "invalid_type")
    check_forbidden(body)


def parse_route_headers(headers: Mapping[str, str], default_lambda: float) -> RouteHeaders:
    lam = default_lambda
    raw = headers.get("x-r2-lambda")
    if raw is not None:
        lam = _header_float(raw, "x-r2-lambda")
        if not 0.0 <= lam <= 1.0:
            raise bad_request("x-r2-lambda must be a number in [0, 1]", "x-r2-lambda",
                              "invalid_header")
    max_cost = None
    raw = headers.get("x-r2-max-cost-usd")
    if raw is not None:
        max_cost = _header_float(raw, "x-r2-max-cost-usd")
        if max_cost < 0:
            raise bad_request("x-r2-max-cost-usd must be >= 0", "x-r2-max-cost-usd",
                              "invalid_header")
    models = None
    raw = headers.get("x-r2-models")
    if raw is not None:
        models = tuple(m.strip() for m in raw.split(",") if m.strip())
        if not models:
            raise bad_request("x-r2-models must list at least one model", "x-r2-models",
                              "invalid_header")
    return RouteHeaders(lam, max_cost, models)


def _header_float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"{name} must be a number", name, "invalid_header") from None
    if not math.isfinite(value):
        raise bad_request(f"{name} must be a finite number", name, "invalid_header")
    return value


def client_max_tokens(body: Mapping[str, Any]) -> tuple[str, int | None]:
    """Which field the client used for its output cap, and its value."""
    if body.get("max_completion_tokens") is not None:
        return "max_completion_tokens", int(body["max_completion_tokens"])
    return "max_tokens", (int(body["max_tokens"]) if body.get("max_tokens") is not None else None)


def not_found_model() -> APIError:
    return APIError(404, "the model does not exist or is not served by this gateway", 
                    "invalid_request_error", "model", "model_not_found")
