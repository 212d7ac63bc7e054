"""The app factory: `build_app(settings)` wires routes, error handlers and the `Service`.

Nothing is built at import. The factory loads and verifies the checkpoint and the embedder
(so a bad checkpoint stops start-up, naming the file), the lifespan starts the micro-batcher.
Every error, including FastAPI's own validation and unknown routes, leaves through the one
OpenAI-envelope table in `errors.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from router_core import Embedder, R2Error

from .apikeys import presented_key
from .chat import R2_AUTO, handle_chat, handle_route
from .completions import handle_completions, parse_completion_request
from .config import GatewaySettings
from .decisionlog import DecisionLog, decision_hook, handle_feedback, validate_feedback
from .embeddings import handle_embeddings, validate_embedding_body
from .errors import APIError, to_api_error
from .messages import anthropic_error, handle_messages, parse_messages_request
from .metrics import CONTENT_TYPE
from .protocol import check_content_type, parse_json_body, validate_chat_body
from .readiness import Readiness
from .requestlog import Observer, RequestLog
from .responses import handle_responses, parse_responses_request
from .service import Service
from .ui import mount_ui

Handler = Callable[[Request, dict[str, Any], Service], Awaitable[Response]]
#: Checks a parsed body, raising a 400 `APIError` naming the field. What it returns (for the
#: endpoints that translate to chat: the translation) reaches the handler as
#: `request.state.prepared`, so a body is translated once, not again by the handler.
Validator = Callable[[dict[str, Any]], Any]


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """Read the body within `timeout_s` (408: a client trickling its body must not hold its
    connection and buffer forever), refusing (413) as soon as it is known to exceed `limit`."""
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
    token = presented_key(request.headers)
    if token:
        for key in keys:
            if hmac.compare_digest(token.encode(), key.get_secret_value().encode()):
                return
    raise APIError(401, "invalid or missing API key", "authentication_error", None,
                   "invalid_api_key", {"WWW-Authenticate": "Bearer"})


class HeldStream(Response):
    """A stream that holds its admission slot until it has ended or its client has left: a
    stream costs an upstream connection for as long as it runs, so it counts against
    `max_concurrency` for that long.

    Why a client leaving a fast stream used to leak it (issue 13, item 1): when the upstream
    floods, the next chunk is always ready, so awaiting it never suspends the task, and
    uvicorn's `send` neither suspends nor fails once the client is gone (it drops the data).
    The event loop never ran: the disconnect was never read, Starlette's cancellation never
    delivered, and the stream was consumed to its end with every other request starved. Here
    the pump yields to the loop after every event, the client's leaving sets a flag checked
    before every event (besides cancelling the pump), and the body iterator, which closes the
    upstream stream, is always closed at the end."""

    def __init__(self, inner: StreamingResponse, release: Callable[[], None]) -> None:
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = None
        self._body = inner.body_iterator
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        pump = asyncio.ensure_future(self._pump(send, gone))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():  # the client left
                pump.cancel()
                await asyncio.wait({pump})
            if not pump.cancelled() and pump.exception() is not None:
                raise pump.exception()  # type: ignore[misc]
            if gone.is_set():
                scope.setdefault("state", {}).setdefault("error", "client_closed")
        finally:
            watcher.cancel()
            if not pump.done():
                pump.cancel()
            self._release()

    async def _pump(self, send: Send, gone: asyncio.Event) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for chunk in self._body:
                if gone.is_set():
                    return
                body = chunk if isinstance(chunk, bytes) else str(chunk).encode()
                await send({"type": "http.response.body", "body": body, "more_body": True})
                # With a fast upstream neither LiteLLM's next chunk nor `send` (which drops
                # data once the client is gone) ever suspends: without this the loop never
                # runs, so it never sees the disconnect, nor serves anyone else.
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            closer = getattr(self._body, "aclose", None)
            if closer is not None:
                await closer()


def _shed_if_full(svc: Service) -> None:
    """503 before the body is read when no slot is free (the slot itself is taken later)."""
    if svc.in_flight >= svc.settings.server.max_concurrency:
        svc.admit()  # raises the 503 and counts the rejection


#: Bodies larger than this are parsed and validated in a worker thread, off the event loop.
PARSE_INLINE_BYTES = 64 * 1024


def parse_request(raw: bytes, max_messages: int, validate: Validator = validate_chat_body
                  ) -> tuple[dict[str, Any], Any]:
    """Parse and validate a body (CPU-bound: for a large body, run it in a thread); the body
    and what the validator prepared from it."""
    body = parse_json_body(raw, max_messages)
    return body, validate(body)


def _validate_route(body: dict[str, Any]) -> None:
    validate_chat_body(body, require_model=False)


def build_app(settings: GatewaySettings, embedder: Embedder | None = None) -> FastAPI:
    svc = Service(settings, embedder)
    svc.after_decide = decision_hook(settings.log, settings.explore, svc.scorer)
    if settings.log is not None:
        svc.decision_log = DecisionLog(settings.log, svc.scorer, svc.metrics.registry,
                                       settings.server.api_keys)

    # One thread parses large bodies, one at a time: more threads would only compete with the
    # event loop for the interpreter lock (parsing is CPU-bound Python and C).
    parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2-parse")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        if svc.decision_log is not None:
            svc.decision_log.start()
        try:
            yield
        finally:
            await svc.stop()
            if svc.decision_log is not None:
                svc.decision_log.stop()
            parser.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="r2-gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = svc
    app.state.decision_log = svc.decision_log  # summary(since) for the dashboard
    _register_errors(app, svc)
    # One list of request-finished observers: the decision log here, the dashboard's live
    # statistics in `mount_ui`; the middleware tells each when a response has ended.
    observers: list[Observer] = []
    app.state.request_observers = observers
    if svc.decision_log is not None:
        observers.append(svc.decision_log.on_finish)
    app.add_middleware(RequestLog, observers=observers)

    server = settings.server

    async def endpoint(request: Request, name: str, handler: Handler,
                       validate: Validator = validate_chat_body,
                       render_error: Callable[[APIError], Response] = APIError.response
                       ) -> Response:
        # Order matters: an unauthenticated or slow client must not hold an admission slot.
        # Key first, then the body under its own short timeout, then parsing (off the loop
        # when large), and only then a slot, for the work itself.
        admitted = False
        try:
            check_auth(request, svc)
            await svc.state.rate_limit(request.headers)
            check_content_type(request.headers.get("content-type"))
            _shed_if_full(svc)
            raw = await read_body(request, server.max_body_bytes,
                                  min(server.body_timeout_s, server.request_timeout_s))
            if len(raw) > PARSE_INLINE_BYTES:
                body, request.state.prepared = await asyncio.get_running_loop(
                    ).run_in_executor(parser, parse_request, raw, server.max_messages, validate)
            else:
                body, request.state.prepared = parse_request(raw, server.max_messages, validate)
            session = svc.state.sessions.bind(request.headers, body)
            svc.admit()
            admitted = True
            response = await handler(request, body, svc)
            if session is not None:
                session.stamp(response.headers)
            if isinstance(response, StreamingResponse):
                response, admitted = HeldStream(response, svc.release), False
        except Exception as exc:  # noqa: BLE001 - every failure leaves through the table
            err = to_api_error(exc, svc.secrets)
            request.state.error = err.code if isinstance(exc, APIError) \
                else f"{err.code}:{type(exc).__name__}"
            response = render_error(err)
        finally:
            if admitted:
                svc.release()
        svc.metrics.requests.labels(name, str(response.status_code)).inc()
        return response

    # Every POST endpoint runs the same pipeline (`endpoint`): its handler, the check of its
    # parsed body, and the error shape of its wire format.
    posts: list[tuple[str, Handler, Validator, Callable[[APIError], Response]]] = [
        ("/v1/chat/completions", handle_chat, validate_chat_body, APIError.response),
        ("/v1/route", handle_route, _validate_route, APIError.response),
        ("/v1/completions", handle_completions, parse_completion_request, APIError.response),
        ("/v1/embeddings", handle_embeddings, validate_embedding_body, APIError.response),
        ("/v1/feedback", handle_feedback, validate_feedback, APIError.response),
        ("/v1/responses", handle_responses,
         partial(parse_responses_request, max_items=server.max_messages), APIError.response),
        ("/v1/messages", handle_messages, parse_messages_request, anthropic_error),
    ]
    for path, handler, validate, render_error in posts:
        app.add_api_route(path, _bound(endpoint, path, handler, validate, render_error),
                          methods=["POST"])

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
        svc.state.annotate(ready, report)
        if ready:
            report["models"] = list(svc.scorer.models)
        return JSONResponse(report, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if settings.server.protect_probes:
            check_auth(request, svc)
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    mount_ui(app, svc, check_auth)
    return app


def _bound(endpoint: Callable[..., Awaitable[Response]], path: str, handler: Handler,
           validate: Validator, render_error: Callable[[APIError], Response]
           ) -> Callable[[Request], Awaitable[Response]]:
    """The route function of one POST endpoint (FastAPI reads its `request: Request`)."""
    async def route(request: Request) -> Response:
        return await endpoint(request, path, handler, validate, render_error)

    route.__name__ = path.strip("/").replace("/", "_")
    return route


def _register_errors(app: FastAPI, svc: Service) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        err = to_api_error(exc, svc.secrets)
        request.state.error = err.code
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
        request.state.error = f"internal_error:{type(exc).__name__}"
        return APIError(500, "internal error", "server_error", None, "internal_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(R2Error, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
