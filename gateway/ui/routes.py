"""`GET /ui` and its JSON endpoints under `/ui/api/`.

The page itself (`/ui`, `/ui/static/*`) is a static shell with no data in it, served to
anyone, because a browser cannot send a Bearer header when it navigates; every number it shows
comes from `/ui/api/*`, which asks for the same key as the API (`server.api_keys`), and the
playground calls `/v1/route` and `/v1/chat/completions` with that key too. Without a key the
page shows a key form and nothing else.

- `GET /ui/api/config`: what the page needs to draw itself (models, policies, knobs, pacing).
- `GET /ui/api/live`: the last hour of this worker's traffic, per minute (`stats.py`).
- `GET /ui/api/savings[?since=UNIX_TS]`: the decision log's summary (the saving against the best
  single arm), or `{"enabled": false}` when the log is off.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import APIError, bad_request, to_api_error
from .stats import LiveStats

if TYPE_CHECKING:
    from ..service import Service

#: The page's files (package data, shipped in the wheel) and their content types.
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "charts.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
#: Loaded from nowhere else: no CDN, no inline script (so a strict CSP fits).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

log = logging.getLogger("r2.gateway")

Auth = Callable[[Request, "Service"], None]


def _read_static() -> dict[str, bytes]:
    root = files(__package__).joinpath("static")
    return {name: root.joinpath(name).read_bytes() for name in STATIC}


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers={"cache-control": "no-store"})


def pacing_state(svc: Service) -> dict[str, Any] | None:
    """Spend pacing's target and state (the `r2_pacing_*` gauges), or None when it is off."""
    if svc.pacing is None:
        return None
    return {"target_usd_per_hour": svc.pacing.target * 3600.0,
            "spend_usd_per_hour": svc.pacing.spend_usd_per_hour(),
            "tradeoff": svc.pacing.current, "unreachable": svc.pacing.unreachable}


def page_config(svc: Service) -> dict[str, Any]:
    ckpt = svc.checkpoint
    knob = svc.default_knob
    return {
        "checkpoint": ckpt.name,
        "models": list(ckpt.model_names),
        "policies": [str(p.budget) for p in ckpt.policies],
        "tradeoff_calibrated": ckpt.tradeoff is not None,
        "default_knob": {"kind": knob.kind, "value": knob.value},
        "pacing": pacing_state(svc),
        "auth_required": bool(svc.settings.server.api_keys),
        "worker_pid": os.getpid(),
    }


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise bad_request("since must be a UNIX time in seconds", "since", "invalid_value")
    return value


def mount_ui(app: FastAPI, svc: Service, check_auth: Auth) -> LiveStats:
    """Register the page and its API on `app`, and the live statistics as a request observer
    (`app.state.request_observers`, called by `gateway/requestlog.py`)."""
    stats = LiveStats()
    app.state.request_observers.append(stats.observe)
    app.state.live_stats = stats
    static = _read_static()  # once, at build time: a few KB

    def asset(name: str) -> Response:
        return Response(static[name], media_type=STATIC[name],
                        headers={"content-security-policy": CSP, "cache-control": "no-cache",
                                 "x-content-type-options": "nosniff"})

    async def guarded(request: Request, work: Callable[[], Any]) -> Response:
        try:
            check_auth(request, svc)
            return _json(await work())
        except Exception as exc:  # noqa: BLE001 - every failure leaves through the table
            err = to_api_error(exc, svc.secrets)
            request.state.error = err.code
            return err.response()

    @app.get("/ui", include_in_schema=False)
    async def ui_page() -> Response:
        return asset("index.html")

    @app.get("/ui/static/{name}", include_in_schema=False)
    async def ui_static(name: str) -> Response:
        if name not in STATIC:
            return APIError(404, "no such endpoint", "invalid_request_error", None,
                            "not_found").response()
        return asset(name)

    @app.get("/ui/api/config", include_in_schema=False)
    async def ui_config(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            return page_config(svc)
        return await guarded(request, work)

    @app.get("/ui/api/live", include_in_schema=False)
    async def ui_live(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            data = stats.snapshot()
            data["pacing"] = pacing_state(svc)
            data["worker_pid"] = os.getpid()
            return data
        return await guarded(request, work)

    @app.get("/ui/api/savings", include_in_schema=False)
    async def ui_savings(request: Request) -> Response:
        async def work() -> dict[str, Any]:
            since = _since(request)
            decision_log = getattr(request.app.state, "decision_log", None)
            if decision_log is None:
                return {"enabled": False}
            try:
                summary = await decision_log.summary(since)
            except Exception as exc:  # noqa: BLE001 - the store's errors stay in the logs
                log.warning("decision log summary failed: %s", type(exc).__name__)
                raise APIError(503, "the decision log could not be read", "service_unavailable",
                               None, "decision_log_unavailable") from None
            return {"enabled": True, "since": since, **summary}
        return await guarded(request, work)

    return stats
