"""The app factory: `build_app(settings)` wires routes, error handlers and the `Service`.

Nothing is built at import. The factory loads and verifies the checkpoint and the embedder
(so a bad checkpoint stops start-up, naming the file), the lifespan starts the micro-batcher.
Every error, including FastAPI's own validation and unknown routes, leaves through the one
OpenAI-envelope table in `errors.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from router_core import Embedder, R2Error

from .chat import R2_AUTO, handle_chat, handle_route
from .config import GatewaySettings
from .errors import APIError, to_api_error
from .metrics import CONTENT_TYPE
from .protocol import check_content_type, parse_json_body, validate_chat_body
from .readiness import Readiness
from .service import Service

log = logging.getLogger("r2.gateway")
Handler = Callable[[Request, dict[str, Any], Service], Awaitable[Response]]


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """Read the body within `timeout_s` (408: a client trickling its body must not hold an
    admission slot forever), refusing (413) as soon as it is known to exceed `limit`."""
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except TimeoutError:
        raise APIError(408, "the request body was not received in time",
                       "invalid_request_error", None, "request_timeout") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise APIError(400, "invalid Content-Length", "invalid_request_error",
                           None, "invalid_header") from None
        if too_big:
            raise APIError(413, f"request body exceeds {limit} bytes", "invalid_request_error",
                           None, "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body exceeds {limit} bytes", "invalid_request_error",
                           None, "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def check_auth(request: Request, svc: Service) -> None:
    keys = svc.settings.server.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        for key in keys:
            if hmac.compare_digest(token.encode(), key.get_secret_value().encode()):
                return
    raise APIError(401, "invalid or missing API key", "authentication_error", None,
                   "invalid_api_key", {"WWW-Authenticate": "Bearer"})


class HeldStream(StreamingResponse):
    """A stream that holds its admission slot until it has ended (or its client has left):
    a stream costs an upstream connection for as long as it runs, not just until its first
    chunk, so it counts against `max_concurrency` for that long."""

    def __init__(self, inner: StreamingResponse, release: Callable[[], None]) -> None:
        super().__init__(inner.body_iterator, inner.status_code, background=inner.background)
        self.raw_headers = inner.raw_headers
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def build_app(settings: GatewaySettings, embedder: Embedder | None = None) -> FastAPI:
    svc = Service(settings, embedder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="r2-gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = svc
    _register_errors(app, svc)

    async def endpoint(request: Request, name: str, handler: Handler) -> Response:
        admitted = False
        try:
            svc.admit()
            admitted = True
            check_auth(request, svc)
            check_content_type(request.headers.get("content-type"))
            raw = await read_body(request, settings.server.max_body_bytes,
                                  settings.server.request_timeout_s)
            body = parse_json_body(raw)
            validate_chat_body(body, require_model=name != "/v1/route")
            response = await handler(request, body, svc)
            if isinstance(response, StreamingResponse):
                response, admitted = HeldStream(response, svc.release), False
        except Exception as exc:  # noqa: BLE001 - every failure leaves through the table
            err = to_api_error(exc, svc.secrets)
            if err.status >= 500 and not isinstance(exc, APIError):
                log.warning("request failed: status=%s code=%s error=%s", err.status, err.code,
                            type(exc).__name__)
            response = err.response()
        finally:
            if admitted:
                svc.release()
        svc.metrics.requests.labels(name, str(response.status_code)).inc()
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await endpoint(request, "/v1/chat/completions", handle_chat)

    @app.post("/v1/route")
    async def route(request: Request) -> Response:
        return await endpoint(request, "/v1/route", handle_route)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        check_auth(request, svc)
        created = int(time.time())
        data = [{"id": R2_AUTO, "object": "model", "created": created, "owned_by": "r2-gateway"}]
        data += [{"id": d.name, "object": "model", "created": created, "owned_by": "r2-gateway"}
                 for d in settings.deployments]
        svc.metrics.requests.labels("/v1/models", "200").inc()
        return JSONResponse({"object": "list", "data": data})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    readiness = Readiness(svc.batcher, svc.upstream.cooldowns, svc.deployment_names,
                          settings.server.readiness_cache_s)

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        if settings.server.protect_probes:
            check_auth(request, svc)
        ready, report = await readiness.report()
        if ready:
            report["models"] = list(svc.scorer.models)
        return JSONResponse(report, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if settings.server.protect_probes:
            check_auth(request, svc)
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _register_errors(app: FastAPI, svc: Service) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        err = to_api_error(exc, svc.secrets)
        if err.status >= 500:
            log.warning("request failed: status=%s code=%s path=%s", err.status, err.code,
                        request.url.path)
        return err.response()

    async def validation_error(request: Request, exc: Exception) -> Response:
        return APIError(400, "invalid request", "invalid_request_error", None,
                        "invalid_value").response()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        return APIError(status, "no such endpoint" if status == 404 else "request not allowed",
                        "invalid_request_error", None, code).response()

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error: %s on %s", type(exc).__name__, request.url.path)
        return APIError(500, "internal error", "server_error", None, "internal_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(R2Error, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
