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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from router_core import InvalidInputError
from router_core.tradeoff import CALIBRATE_HINT, Knob, KnobKind, TradeoffTable, resolve_lambda

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
#: Fields the gateway sets itself: inside `extra_body` (merged over the request body by the
#: provider client) they would override the routed model, budget, messages or stream mode.
RESERVED_IN_EXTRA_BODY = frozenset({"model", "messages", "stream", "max_tokens",
                                    "max_completion_tokens", "n"})
#: Forwarded fields that LiteLLM itself reads and fails on (a 500) when they have the wrong type.
OBJECT_FIELDS = ("metadata", "extra_body", "response_format", "stream_options")
ARRAY_FIELDS = ("tools", "functions")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
#: Content part types whose payload sits under a key of the same name.
PART_PAYLOADS = ("image_url", "input_audio", "file", "audio_url", "video_url", "document")
MAX_TOKENS_LIMIT = 1_000_000
#: Top-level numbers `validate_chat_body` checks with a range of its own.
RANGE_CHECKED = frozenset({"max_tokens", "max_completion_tokens", "n", "temperature", "top_p"})
#: The cost-quality knobs a request may send (one at most), and what each accepts.
KNOB_HEADERS: dict[str, KnobKind] = {"x-r2-lambda": "lambda", "x-r2-tradeoff": "tradeoff",
                                     "x-r2-usd-per-quality": "usd_per_quality"}
KNOB_RANGES = {"x-r2-lambda": "x-r2-lambda must be a number in [0, 1]",
               "x-r2-tradeoff": "x-r2-tradeoff must be a number in [0, 1]",
               "x-r2-usd-per-quality": "x-r2-usd-per-quality must be a number > 0 (USD per "
                                       "request for +1.0 of predicted quality)"}
#: Deeper JSON is refused: nothing legitimate nests this far, and walking it (here, in LiteLLM's
#: deep copies) would exhaust the interpreter's recursion limit.
MAX_DEPTH = 64
#: A `\uD800`-`\uDFFF` escape: only a lone one is a problem, this finds candidates cheaply.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class RouteHeaders:
    lambda_: float
    max_cost_usd: float | None
    models: tuple[str, ...] | None
    #: The calibrated trade-off behind `lambda_` (echoed as `x-r2-tradeoff`), if one was used.
    tradeoff: float | None = None
    #: Whether the request sent its own knob (pacing only moves the default).
    own_knob: bool = False


def parse_json_body(raw: bytes, max_messages: int | None = None) -> dict[str, Any]:
    try:
        # Strict: a lone surrogate sent as raw bytes (ED A0 80) is not UTF-8 and is refused here
        # (json.loads on bytes would decode it with "surrogatepass" and let it through).
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8", None, "invalid_unicode") from None
    special: list[str] = []
    try:
        body = json.loads(text, parse_int=_parse_int, parse_float=_parse_float(special),
                          parse_constant=_parse_constant(special))
    except (ValueError, RecursionError):  # ValueError: bad UTF-8 or bad JSON
        raise bad_request("request body is not valid JSON", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", None, "invalid_json")
    messages = body.get("messages")  # counted before anything walks them
    if max_messages is not None and isinstance(messages, list) and len(messages) > max_messages:
        raise bad_request(f"too many messages: at most {max_messages} are accepted", "messages",
                          "too_many_messages")
    for key, value in body.items():
        if _too_deep(value, MAX_DEPTH - 1):
            raise bad_request(f"'{key}' is nested more than {MAX_DEPTH} levels deep", str(key),
                              "too_deep")
    if special:
        _check_finite(body)
    if _SURROGATE_ESCAPE.search(raw):
        _check_utf8(body)
    return body


def _parse_int(text: str) -> int | float:
    """Integers past Python's 4300-digit limit are out of every range: make them infinite so
    the field check names the field, instead of failing the whole parse."""
    if len(text) <= 4000:
        return int(text)
    return float("-inf") if text.startswith("-") else float("inf")


def _parse_float(seen: list[str]) -> Any:
    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):  # 1e400
            seen.append(text)
        return value
    return parse


def _parse_constant(seen: list[str]) -> Any:
    def parse(text: str) -> float:  # NaN, Infinity, -Infinity: not JSON, Python accepts them
        seen.append(text)
        return float(text)
    return parse


def _check_finite(body: dict[str, Any]) -> None:
    """Refuse NaN and infinities anywhere in the body, naming where: no upstream accepts them
    and encoding them fails locally (which must never count against a deployment). Fields
    with their own range check are left to it, so that it names the allowed range."""
    stack: list[tuple[Any, str]] = [(v, str(k)) for k, v in body.items()
                                    if k not in RANGE_CHECKED]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise bad_request("non-finite numbers (NaN, Infinity, overflowing exponents) are "
                              "not allowed", path, "invalid_number")
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def _check_utf8(body: dict[str, Any]) -> None:
    """Refuse lone surrogates: valid JSON, but no provider client can encode them (a 5xx that
    would also count against the deployment's health)."""
    for key, value in body.items():
        try:
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("the request contains a lone UTF-16 surrogate (invalid Unicode)",
                              str(key).encode("utf-8", "replace").decode("utf-8"),
                              "invalid_unicode") from None


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` containers (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


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
    extra = body.get("extra_body")
    if isinstance(extra, Mapping):
        for key in extra:
            if str(key).lower() in RESERVED_IN_EXTRA_BODY:
                raise bad_request(f"'extra_body.{key}' is not allowed: set '{key}' at the top "
                                  "level", f"extra_body.{key}", "forbidden_field")
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


def check_int(body: Mapping[str, Any], key: str, low: int, high: int) -> None:
    if key in body and body[key] is not None:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"'{key}' must be an integer", key, "invalid_type")
        if not low <= value <= high:
            raise bad_request(f"'{key}' must be between {low} and {high}", key)


def check_number(body: Mapping[str, Any], key: str, low: float, high: float) -> None:
    if key in body and body[key] is not None:
        value = body[key]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise bad_request(f"'{key}' must be a number", key, "invalid_type")
        if not low <= value <= high:
            raise bad_request(f"'{key}' must be between {low} and {high}", key)


def check_content_type(content_type: str | None) -> None:
    """A body sent as a form, text or anything but JSON is refused (415), not guessed at; no
    `Content-Type` at all is taken as JSON, as the OpenAI API does."""
    if content_type is None:
        return
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise APIError(415, "the request body must be JSON (Content-Type: application/json)",
                       "invalid_request_error", None, "unsupported_media_type")


def check_model(body: Mapping[str, Any]) -> None:
    """A 400 unless `model` is a non-empty string (every endpoint's first check)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", "model", "invalid_type")


def validate_chat_body(body: dict[str, Any], require_model: bool = True) -> None:
    """Raise a 400 `APIError` naming the field for anything malformed. `/v1/route` does not
    forward the body, so its `model` is optional (and, if given, not used)."""
    if require_model or body.get("model") is not None:
        check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", "messages", "invalid_type")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad_request("each message must be an object", f"messages[{i}]", "invalid_type")
        if msg.get("role") not in ROLES:
            raise bad_request("message role is missing or invalid", f"messages[{i}].role")
        _check_message(msg, f"messages[{i}]")
    check_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    check_int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
    check_int(body, "n", 1, 128)
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise bad_request("'stream' must be a boolean", "stream", "invalid_type")
    _check_containers(body)
    check_forbidden(body)


def validate_translated(chat: dict[str, Any], messages_field: str) -> None:
    """`validate_chat_body` for a chat request translated from another wire format: a fault in
    `messages` is reported under the client's own field (`input`, `messages`), not the chat
    form's path."""
    try:
        validate_chat_body(chat)
    except APIError as err:
        param = messages_field if err.param and err.param.startswith("messages") else err.param
        raise bad_request(err.message, param, err.code or "invalid_value") from None


def _check_message(msg: Mapping[str, Any], where: str) -> None:
    """Shapes LiteLLM relies on when it converts messages (it fails with a 5xx otherwise)."""
    content = msg.get("content")
    if content is not None and not isinstance(content, str | list):
        raise bad_request("message content must be a string or an array of parts",
                          f"{where}.content", "invalid_type")
    for j, part in enumerate(content if isinstance(content, list) else ()):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or not kind:
            raise bad_request("each content part must be an object with a 'type'",
                              f"{where}.content[{j}]", "invalid_type")
        if kind in ("text", "input_text") and not isinstance(part.get("text"), str):
            raise bad_request("a text part needs a string 'text'", f"{where}.content[{j}].text",
                              "invalid_type")
        if kind in PART_PAYLOADS and part.get(kind) is None:
            raise bad_request(f"a {kind} part needs '{kind}'", f"{where}.content[{j}].{kind}",
                              "invalid_type")
    calls = msg.get("tool_calls")
    if calls is not None and not (isinstance(calls, list)
                                  and all(isinstance(c, dict) for c in calls)):
        raise bad_request("'tool_calls' must be an array of objects", f"{where}.tool_calls",
                          "invalid_type")


def check_objects(body: Mapping[str, Any], keys: Sequence[str]) -> None:
    """A 400 for the first of `keys` that is present and not an object."""
    for key in keys:
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise bad_request(f"'{key}' must be an object", key, "invalid_type")


def _check_containers(body: Mapping[str, Any]) -> None:
    check_objects(body, OBJECT_FIELDS)
    for key in ARRAY_FIELDS:
        value = body.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(v, dict) for v in value)):
            raise bad_request(f"'{key}' must be an array of objects", key, "invalid_type")


def parse_route_headers(headers: Mapping[str, str], default: Knob | float,
                        table: TradeoffTable | None = None) -> RouteHeaders:
    """The routing headers; at most one cost-quality knob (`KNOB_HEADERS`) per request, else
    `default` (a bare float is a raw lambda). `table` maps a trade-off to lambda."""
    sent = [name for name in KNOB_HEADERS if headers.get(name) is not None]
    if len(sent) > 1:
        raise bad_request(f"send one cost-quality knob per request, not {' and '.join(sent)}",
                          sent[1], "conflicting_headers")
    knob = default if isinstance(default, Knob) else Knob("lambda", default)
    if sent:
        name = sent[0]
        value = _header_float(headers[name], name)
        try:
            knob = Knob(KNOB_HEADERS[name], value)
        except InvalidInputError:
            raise bad_request(KNOB_RANGES[name], name, "invalid_header") from None
    try:
        lam = resolve_lambda(knob, table)
    except InvalidInputError:
        raise bad_request(CALIBRATE_HINT, "x-r2-tradeoff", "tradeoff_not_calibrated") from None
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
    return RouteHeaders(lam, max_cost, models,
                        knob.value if knob.kind == "tradeoff" else None, bool(sent))


def _header_float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"{name} must be a number", name, "invalid_header") from None
    if not math.isfinite(value):
        raise bad_request(f"{name} must be a finite number", name, "invalid_header")
    return value


CAP_FIELDS = ("max_tokens", "max_completion_tokens")


def client_cap(body: Mapping[str, Any]) -> int | None:
    """The client's output cap: the smaller of `max_tokens` and `max_completion_tokens`."""
    values = [int(body[f]) for f in CAP_FIELDS if body.get(f) is not None]
    return min(values) if values else None


def requested_outputs(body: Mapping[str, Any]) -> int:
    """How many answers the request asks for (`n`); each is billed."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def not_found_model() -> APIError:
    return APIError(404, "the model does not exist or is not served by this gateway",
                    "invalid_request_error", "model", "model_not_found")
