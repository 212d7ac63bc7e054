"""One error table: every failure reaches the client as the OpenAI error envelope.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

`APIError` carries status, type, param, code and extra headers (`Retry-After`). `to_api_error`
maps every exception class the gateway can meet (core errors, LiteLLM's provider errors,
timeouts) to one; anything unknown becomes a 500 whose message says nothing about internals.
Messages never echo request content or provider keys.

Upstream statuses keep their class, as the OpenAI SDK sees it: a 4xx the provider gave for the
request (400, 404, 409, 413, 422, ...) is the same 4xx, 429 stays 429 with its `Retry-After`,
5xx become 502/503/504. The exception is 401/403: the provider refused the *gateway's* key, which
the client can neither see nor fix, so it is a 502 (and, being a deployment fault, makes the
gateway route around that deployment) rather than telling the client its own key is wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from router_core import (
    EmbedderError,
    InvalidInputError,
    NoFeasibleCandidateError,
    R2Error,
    UnknownModelError,
)

from .redaction import mask_secrets
from .transport import response_too_large


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|api[_-]?key\S*)", re.IGNORECASE)
#: LiteLLM wraps the provider's message: `litellm.XError: XError: OpenAIException - <message>
#: ... LiteLLM: model group 'x' failed ...`. Only the provider's words are useful to a client.
_LITELLM_PREFIX = re.compile(r"^(\s*(litellm\.\w+:|\w+Error:|\w+Exception\s*-))+\s*")
_LITELLM_SUFFIX = re.compile(
    r"\s*(LiteLLM:|Received Model Group=|LiteLLM Retried:|model=\S*\.\s*context_window_fallbacks="
    r"|Set 'context_window_fallback'|Traceback \(most recent call last\)).*$", re.DOTALL)
#: A server file path (LiteLLM puts tracebacks in some messages): never shown to a client.
_PATH = re.compile(r"(/|[A-Za-z]:\\)[^\s\"']*\.py\w?\b|\bFile \"[^\"]*\"")


def scrub(text: str, limit: int = 300, secrets: Iterable[str] = ()) -> str:
    """Provider messages may quote keys or URLs with keys: cut and mask them.

    `secrets` (the configured keys) are masked whatever their shape; the pattern catches
    the usual key shapes of keys the gateway does not know.
    """
    return _PATH.sub("[path]", _KEYLIKE.sub("[redacted]", mask_secrets(text, secrets)))[:limit]


def provider_message(exc: BaseException) -> str:
    """The provider's own words from a LiteLLM exception, without LiteLLM's wrapping."""
    text = str(getattr(exc, "message", "") or "")
    text = _LITELLM_SUFFIX.sub("", _LITELLM_PREFIX.sub("", text.strip()))
    if text.startswith("{"):  # some LiteLLM paths pass the provider's error body as is
        try:
            error = json.loads(text).get("error")
            inner = error.get("message") if isinstance(error, dict) else error
            text = inner if isinstance(inner, str) and inner else text
        except (ValueError, AttributeError):
            pass
    return text or "upstream error"


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from (LiteLLM wraps the SDK's, which wraps
    httpx's)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__, getattr(item, "original_exception", None)]
    return seen


def _is_connection_error(exc: BaseException) -> bool:
    """Connecting to the upstream failed (refused, unreachable, DNS): whatever status LiteLLM
    attached (it reports a refused connection as a 500 "Connection error.")."""
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"ConnectError", "ConnectTimeout", "ConnectionRefusedError",
                         "ClientConnectorError"})


def _is_context_window(exc: BaseException) -> bool:
    """A request longer than the model's context: the client's to fix, on every model."""
    return any("ContextWindowExceededError" in (c.__name__ for c in type(e).__mro__)
               for e in _chain(exc))


def _upstream_status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def to_api_error(exc: BaseException, secrets: Iterable[str] = ()) -> APIError:
    """Map any exception to the envelope and status the client should see.

    `secrets` are masked in any message taken from the exception (provider keys).
    """
    if isinstance(exc, APIError):
        return exc
    if response_too_large(exc):
        return APIError(502, "the upstream answer exceeds the gateway's size limit",
                        "upstream_error", None, "upstream_response_too_large")
    if isinstance(exc, ClientDisconnect):  # gone while sending its body: not our failure
        return APIError(499, "client closed the request", "client_closed", None, "client_closed")
    if isinstance(exc, UnknownModelError):
        return APIError(400, str(exc), "invalid_request_error", exc.param, "model_not_found")
    if isinstance(exc, InvalidInputError):
        return bad_request(str(exc), exc.param)
    if isinstance(exc, NoFeasibleCandidateError):
        return APIError(400, str(exc), "invalid_request_error", None, "no_feasible_candidate")
    if isinstance(exc, EmbedderError):  # EmbedderUnavailableError included
        return APIError(503, "the routing embedder is unavailable", "service_unavailable",
                        None, "embedder_unavailable", {"Retry-After": "1"})
    if isinstance(exc, R2Error):
        return APIError(500, "routing failed", "server_error", None, "routing_error")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return APIError(504, "upstream timed out", "timeout", None, "upstream_timeout")
    return _litellm_error(exc, tuple(secrets))


def _litellm_error(exc: BaseException, secrets: tuple[str, ...]) -> APIError:
    name = type(exc).__name__
    status = _upstream_status(exc) if isinstance(exc, Exception) else None
    message = scrub(provider_message(exc), secrets=secrets)
    if name == "Timeout" or status == 408:
        return APIError(504, "upstream timed out", "timeout", None, "upstream_timeout")
    if _is_context_window(exc):
        return APIError(400, f"the request exceeds the model's context window: {message}",
                        "invalid_request_error", "messages", "context_length_exceeded")
    if _is_connection_error(exc) and (status is None or status >= 500):
        return APIError(502, "upstream connection failed", "upstream_error", None,
                        "upstream_connection_error")
    if name in ("APIConnectionError",) or status is None and name.endswith("ConnectionError"):
        return APIError(502, "upstream connection failed", "upstream_error", None,
                        "upstream_connection_error")
    if status is None:
        return APIError(500, "internal error", "server_error", None, "internal_error")
    retry = _retry_after(exc)
    retry_headers = {"Retry-After": retry} if retry else None
    if status == 429:
        return APIError(429, f"upstream rate limit: {message}", "rate_limit_error", None,
                        "rate_limit_exceeded", retry_headers)
    if status in (401, 403):
        # The provider refused *our* credentials: a gateway-side fault, not the client's.
        return APIError(502, "upstream authentication failed", "upstream_error", None,
                        "upstream_auth_error")
    if 400 <= status < 500:
        return APIError(status, f"upstream rejected the request: {message}",
                        "invalid_request_error", None, "upstream_bad_request")
    if status == 504:
        return APIError(504, "upstream timed out", "timeout", None, "upstream_timeout")
    if status == 503:
        return APIError(503, f"upstream unavailable: {message}", "service_unavailable", None,
                        "upstream_unavailable", retry_headers)
    return APIError(502, f"upstream error {status}: {message}", "upstream_error", None,
                    "upstream_error")


def _retry_after(exc: BaseException) -> str | None:
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None)
        if headers is not None:
            try:
                value = headers.get("retry-after") or headers.get("Retry-After")
            except AttributeError:
                value = None
            if value:
                return str(value)
    litellm_headers = getattr(exc, "litellm_response_headers", None)
    if litellm_headers is not None:
        value = litellm_headers.get("retry-after")
        if value:
            return str(value)
    return None
