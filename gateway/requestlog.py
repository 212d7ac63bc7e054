"""Request ids and the one log line per request, as an ASGI middleware around the whole app.

Every response leaves with an `x-request-id` (the client's, if it looks like an id, else a new
one), whatever produced it: a handler, the error table, a 404, or an exception nothing else
caught (answered here as a 500 in the OpenAI envelope). When the response has ended (a stream
included), one line is logged with the id, method, path, status and latency, plus what
handlers put in `request.state`: the routing outcome (model, budget, utility, fallback) and an
error code; then each observer in `app.state.request_observers` is told. Never a prompt, a
query string or a header value other than a valid id.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("r2.gateway")
#: A client's `x-request-id` is echoed and logged only if it looks like an id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
#: A request-finished observer: (ASGI scope, request state, status, seconds).
Observer = Callable[[Scope, dict[str, Any], int, float], None]
_INTERNAL = json.dumps({"error": {"message": "internal error", "type": "server_error",
                                  "param": None, "code": "internal_error"}}).encode()


def new_request_id() -> str:
    return f"r2-{uuid.uuid4().hex[:16]}"


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            return given if _REQUEST_ID.fullmatch(given) else new_request_id()
    return new_request_id()


class RequestLog:
    """State keys it reads: `request_id` (set here), `outcome` (an object with `deployment`,
    `decision`, `fallback`), `error` (an error code)."""

    def __init__(self, app: ASGIApp, observers: list[Observer] | None = None) -> None:
        self.app = app
        #: Told once per finished request, in order: `observe(scope, state, status, seconds)`
        #: (the decision log, the dashboard's live statistics). The list is the app's
        #: `app.state.request_observers`, so observers registered later are told too.
        self.observers = observers if observers is not None else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = state["request_id"] = request_id_of(scope["headers"])
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            state.setdefault("error", f"internal_error:{type(exc).__name__}")
            if status:  # the response had started: all that is left is to drop it
                raise
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_INTERNAL)).encode())]})
            await send({"type": "http.response.body", "body": _INTERNAL})
        finally:
            seconds = time.perf_counter() - start
            _log_line(scope, state, status, seconds)
            for observe in self.observers:
                try:
                    observe(scope, state, status, seconds)
                except Exception as exc:  # noqa: BLE001 - an observer never fails a request
                    log.warning("request observer failed: %s", type(exc).__name__)


def _log_line(scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
    outcome = state.get("outcome")
    chosen = outcome.decision.chosen if outcome is not None and outcome.decision else None
    level = logging.WARNING if status >= 500 or status == 0 else logging.INFO
    log.log(level, "request id=%s method=%s path=%s status=%s model=%s budget=%s utility=%s "
            "fallback=%s error=%s latency_ms=%.1f",
            state.get("request_id"), scope.get("method"), str(scope.get("path"))[:200],
            status or "none", outcome.deployment if outcome is not None else "-",
            chosen.budget if chosen else "-", f"{chosen.utility:.6g}" if chosen else "-",
            (outcome.fallback if outcome is not None else None) or "-",
            state.get("error") or "-", seconds * 1000)
