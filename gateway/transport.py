"""The HTTP client LiteLLM uses for OpenAI-wire providers, with a cap on the size of an answer
and a deadline on reading it.

httpx bounds each read (`timeout` is per socket operation), not a whole body: an upstream that
sends 2 GB fast, or a byte every few seconds forever, is read to the end. `CappedTransport`
wraps the real transport and its response stream: it refuses a declared `Content-Length` over
the cap before reading a byte, stops a body (JSON or SSE) as soon as it crosses the cap, and
ends a JSON body still arriving after the request's read timeout (a stream's pace is bounded by
the gateway's gap and total stream limits instead). Both surface inside LiteLLM's exception,
and `response_too_large` finds them for the error table.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

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


def _base_transport() -> httpx.AsyncBaseTransport:
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
    return httpx.AsyncClient(transport=CappedTransport(_base_transport(), max_response_bytes),
                             follow_redirects=False, timeout=None)
