"""The HTTP transport under every OpenAI-wire upstream call: a guard between LiteLLM and providers.

LiteLLM trusts what a provider sends. A broken or hostile provider can send usage counts that
make LiteLLM's pricing overflow (negative, 1e30) or raise with a traceback (not numbers), a JSON
body in reply to a streaming request (LiteLLM turns it into an empty 200 completion), or a
redirect to another host (the OpenAI SDK follows it and re-sends the prompt there). This
transport wraps httpx's own and, per request:

- notes on the current `Attempt` that the request reached the network (so an error raised
  before that is the gateway's, never charged to the deployment) and whether connecting failed;
- refuses a redirect to another scheme, host or port (a 502 the client sees as such);
- turns a non-SSE 200 answer to a streaming request into a 502 carrying the provider's message;
- sanitises `usage` in JSON answers and SSE events: a token count must be an integer in
  [0, `MAX_TOKENS`]; anything else is dropped (and the attempt remembers the upstream's usage
  was not usable), so LiteLLM never sees it.

Below the guard, `CappedTransport` caps the size of an answer and the time to read it; it is
also the transport of the client LiteLLM uses for the other OpenAI-wire providers. httpx
bounds each read (`timeout` is per socket operation), not a whole body: an upstream that sends
2 GB fast, or a byte every few seconds forever, is read to the end. `CappedTransport` wraps the
real transport and its response stream: it refuses a declared `Content-Length` over the cap
before reading a byte, stops a body (JSON or SSE) as soon as it crosses the cap, and ends a JSON
body still arriving after the request's read timeout (a stream's pace is bounded by the
gateway's gap and total stream limits instead). Both surface inside LiteLLM's exception, and
`response_too_large` finds them for the error table.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

#: A token count beyond this is not a count (the largest context windows are ~10^7).
MAX_TOKENS = 10**9
#: How much of a wrong-kind answer (JSON to a stream) is read to find its error message.
MAX_ERROR_BYTES = 64 * 1024


@dataclass
class Attempt:
    """What happened to one upstream call, filled in by the transport."""

    stream: bool = False
    sent: bool = False
    connect_failed: bool = False
    #: The provider's own usage, sanitised (None: it sent none, or none that was usable).
    usage: dict[str, Any] | None = None
    usage_invalid: bool = False


_ATTEMPT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("r2_attempt",
                                                                         default=None)


def track(attempt: Attempt) -> None:
    """Record the upstream call made from the current task (and the tasks it starts) in
    `attempt`."""
    _ATTEMPT.set(attempt)


def clean_usage(usage: Any) -> tuple[dict[str, Any] | None, bool]:
    """`(usage without unusable counts, whether anything was dropped)`; `None` if not a dict."""
    if not isinstance(usage, dict):
        return None, usage is not None
    out: dict[str, Any] = {}
    dropped = False
    for key, value in usage.items():
        if isinstance(value, dict):
            inner, bad = clean_usage(value)
            out[key], dropped = inner, dropped or bad
        elif value is None or _is_count(value, integral=str(key).endswith("tokens")):
            out[key] = int(value) if str(key).endswith("tokens") and value is not None \
                else value
        else:
            dropped = True
    return out, dropped


def _is_count(value: Any, integral: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_TOKENS and (not integral or value == int(value))


def _error_response(status: int, message: str, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "upstream_error",
                                                  "param": None, "code": code}})


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = _ATTEMPT.get() or Attempt()
        attempt.sent = True
        try:
            response = await self.inner.handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            attempt.connect_failed = True
            raise
        if response.is_redirect:
            target = request.url.join(response.headers.get("location", ""))
            if (target.scheme, target.host, target.port) != (
                    request.url.scheme, request.url.host, request.url.port):
                await response.aclose()
                return _error_response(502, "the upstream redirected to another host; "
                                       "redirects to another host are not followed",
                                       "upstream_redirect")
            return response
        if response.status_code != 200:
            return response
        kind = response.headers.get("content-type", "")
        if attempt.stream and "text/event-stream" not in kind:
            return await self._not_a_stream(response)
        if attempt.stream:
            response.stream = _UsageGuard(response.stream, attempt)
            return response
        if "json" in kind:
            return await self._clean_json(response, attempt)
        return response

    async def _not_a_stream(self, response: httpx.Response) -> httpx.Response:
        body = await _read_at_most(response, MAX_ERROR_BYTES)
        message = "the upstream answered a streaming request with a non-stream body"
        try:
            error = json.loads(body).get("error")
            detail = error.get("message") if isinstance(error, dict) else error
            if isinstance(detail, str) and detail:
                message += f": {detail}"
        except (ValueError, AttributeError):
            pass
        return _error_response(502, message, "upstream_not_a_stream")

    async def _clean_json(self, response: httpx.Response, attempt: Attempt) -> httpx.Response:
        body = await response.aread()
        if b'"usage"' not in body:
            return response
        usage_only = _usage_value(body)
        if usage_only is not None:  # the common case: decode the usage object, not the answer
            usage, dropped = clean_usage(usage_only)
            if not dropped:
                attempt.usage, attempt.usage_invalid = usage, False
                return response
        try:
            data = json.loads(body)
        except ValueError:
            return response  # the SDK reports invalid JSON itself
        if not isinstance(data, dict) or "usage" not in data:
            return response
        usage, dropped = clean_usage(data["usage"])
        attempt.usage, attempt.usage_invalid = usage, dropped
        if not dropped:
            return response
        data["usage"] = usage
        headers = [(k, v) for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-encoding")]
        return httpx.Response(response.status_code, headers=headers,
                              content=json.dumps(data).encode())

    async def aclose(self) -> None:
        await self.inner.aclose()


_DECODER = json.JSONDecoder()


def _usage_value(body: bytes) -> Any:
    """The value of the body's only `"usage"` key, decoded alone; None when the key appears
    more than once (nested, or inside a tool's JSON) or does not decode: then the caller parses
    the whole body."""
    at = body.find(b'"usage"')
    if at < 0 or body.find(b'"usage"', at + 1) >= 0:
        return None
    try:
        text = body[at + len(b'"usage"'):].decode("utf-8")
        colon = len(text) - len(text.lstrip())
        if text[colon:colon + 1] != ":":
            return None
        rest = text[colon + 1:]
        start = len(rest) - len(rest.lstrip())
        value, _ = _DECODER.raw_decode(rest, start)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    finally:
        await response.aclose()
    return b"".join(chunks)[:limit]


class _UsageGuard(httpx.AsyncByteStream):
    """Passes SSE bytes through, sanitising the `usage` of any event that has one."""

    def __init__(self, inner: Any, attempt: Attempt) -> None:
        self.inner = inner
        self.attempt = attempt

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = b""
        async for chunk in self.inner:
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                pending = data
                continue
            done, pending = data[:cut], data[cut:]
            yield self._fix(done) if b'"usage"' in done else done
        if pending:
            yield self._fix(pending) if b'"usage"' in pending else pending

    def _fix(self, block: bytes) -> bytes:
        lines = block.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data:") or b'"usage"' not in line:
                continue
            try:
                event = json.loads(line[5:])
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("usage") is None:
                continue
            usage, dropped = clean_usage(event["usage"])
            if dropped:
                self.attempt.usage_invalid = True
            else:
                self.attempt.usage = usage
            event["usage"] = usage if not dropped else None
            lines[i] = b"data: " + json.dumps(event).encode()
        return b"\n".join(lines)

    async def aclose(self) -> None:
        await self.inner.aclose()

#: How deep `response_too_large` looks through `__cause__` / `__context__` chains.
_CHAIN_DEPTH = 8


class ResponseTooLargeError(Exception):
    """An upstream answer larger than `server.max_response_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"upstream response exceeds {limit} bytes")
        self.limit = limit


def response_too_large(exc: BaseException) -> bool:
    """Whether `exc` (as LiteLLM or the OpenAI SDK wrapped it) was caused by the size cap."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return False
        if isinstance(seen, ResponseTooLargeError):
            return True
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "original_exception", None)
    return False


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, limit: int, deadline: float | None,
                 request: httpx.Request) -> None:
        self._inner = inner
        self._limit = limit
        self._deadline = deadline
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise ResponseTooLargeError(self._limit)
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise httpx.ReadTimeout("upstream body not received in time",
                                        request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.monotonic()
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            await response.aclose()
            raise ResponseTooLargeError(self._max_bytes)
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        read_timeout = (request.extensions.get("timeout") or {}).get("read")
        deadline = None if streaming or read_timeout is None else start + float(read_timeout)
        return httpx.Response(
            response.status_code, headers=response.headers, request=request,
            extensions=response.extensions,
            stream=_CappedStream(response.stream, self._max_bytes, deadline, request))

    async def aclose(self) -> None:
        await self._inner.aclose()


def base_transport() -> httpx.AsyncBaseTransport:
    """LiteLLM's own transport (aiohttp by default, measured faster than httpcore), or httpx's."""
    try:
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        transport = AsyncHTTPHandler.create_async_transport()
    except Exception:  # noqa: BLE001 - an internal API moved: fall back to plain httpx
        transport = None
    return transport if isinstance(transport, httpx.AsyncBaseTransport) \
        else httpx.AsyncHTTPTransport()


def upstream_http_client(max_response_bytes: int) -> httpx.AsyncClient:
    """The client for `litellm.aclient_session`. Redirects are not followed: a provider answer
    that points elsewhere is an error, not a reason to re-send the prompt there."""
    return httpx.AsyncClient(transport=CappedTransport(base_transport(), max_response_bytes),
                             follow_redirects=False, timeout=None)
