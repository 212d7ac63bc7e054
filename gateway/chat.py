"""`POST /v1/chat/completions`: route `r2-auto`, proxy named deployments, stream or not.

Flow for `r2-auto`: validate -> embed (micro-batched, off the loop) -> decide -> rewrite
(model, max_tokens, instruction) -> forward through LiteLLM. An upstream failure (5xx, timeout,
connection) before any byte reached the client falls back to the best candidate on another
model (`x-r2-fallback`). A failure after a stream started ends it with an SSE error event and
`data: [DONE]`. Client disconnects cancel the upstream call.

`server.request_timeout_s` bounds the whole wait for the answer (for a stream, its first
chunk), fallbacks included; a deployment's `timeout_s` bounds one attempt on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from router_core import Decision, EmbedderError

from .errors import APIError, bad_request, to_api_error
from .protocol import (
    RouteHeaders,
    client_cap,
    not_found_model,
    parse_route_headers,
    requested_outputs,
)
from .requestlog import new_request_id
from .rewrite import apply_policy, forward_cap
from .service import Service
from .transport import Attempt, ResponseTooLargeError
from .wire import openai_shape, stream_usage, usage_note

log = logging.getLogger("r2.gateway")
T = TypeVar("T")
R2_AUTO = "r2-auto"
RETRYABLE = {500, 502, 503, 504}
#: A fallback is not worth starting with less time than this left before the deadline.
MIN_ATTEMPT_S = 0.1


def _same(data: dict[str, Any]) -> dict[str, Any]:
    return data


class StreamRenderer(Protocol):
    """One stream's events in an endpoint's wire format, from the pipeline's chat chunks.
    Stateful (one per stream): wire formats that open and close items (Responses, Anthropic
    Messages) need to know what they already sent. Each method returns whole SSE events."""

    def chunk(self, data: dict[str, Any]) -> list[str]: ...

    def error(self, err: APIError) -> list[str]: ...

    def end(self) -> list[str]: ...


def named_event(data: dict[str, Any]) -> str:
    """An SSE event named by its payload's `type` (Responses and Anthropic Messages streams)."""
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class ChunkEvents:
    """Chat-style streams: one `data:` event per chunk, errors in-band, `data: [DONE]`."""

    def __init__(self, render_chunk: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        self.render_chunk = render_chunk

    def chunk(self, data: dict[str, Any]) -> list[str]:
        rendered = self.render_chunk(data)
        if rendered is None:
            return []
        return [f"data: {json.dumps(rendered, separators=(',', ':'))}\n\n"]

    def error(self, err: APIError) -> list[str]:
        return [f"data: {json.dumps(err.body())}\n\n"]

    def end(self) -> list[str]:
        return ["data: [DONE]\n\n"]


@dataclass(frozen=True)
class Codec:
    """How an endpoint renders the chat pipeline's answer in its own wire format: a whole
    answer (`render`) and a stream, either chunk by chunk (`render_chunk`, None to send
    nothing) or, for wire formats with state, by a `StreamRenderer` made per stream
    (`streamer`). All get the chat-completion form, after usage and finish reasons were
    observed."""

    render: Callable[[dict[str, Any]], dict[str, Any]] = _same
    render_chunk: Callable[[dict[str, Any]], dict[str, Any] | None] = _same
    streamer: Callable[[], StreamRenderer] | None = None

    def open_stream(self) -> StreamRenderer:
        return self.streamer() if self.streamer is not None else ChunkEvents(self.render_chunk)


#: Chat Completions: the pipeline's own format.
CHAT = Codec()


@dataclass
class Outcome:
    """What was sent and why: becomes the x-r2-* headers and the log line."""

    request_id: str
    deployment: str
    decision: Decision | None = None
    lambda_: float | None = None
    route_ms: float = 0.0
    fallback: str | None = None
    #: The calibrated trade-off behind `lambda_`, echoed as `x-r2-tradeoff`.
    tradeoff: float | None = None
    #: Whether this request's realised spend has reached spend pacing.
    spent: bool = False
    #: Realised cost (USD) from the upstream's usage, and whether an answer was cut at its cap.
    cost_usd: float | None = None
    truncated: bool = False
    #: The decision log's accumulator (usage, finish reason), when the log is on.
    trace: Any = None

    def response_headers(self) -> dict[str, str]:
        out = {"x-request-id": self.request_id}
        if self.decision is not None:
            c = self.decision.chosen
            out.update({
                "x-r2-model": self.deployment,
                "x-r2-budget": str(c.budget),
                "x-r2-predicted-quality": f"{c.predicted_quality:.4f}",
                "x-r2-predicted-cost-usd": f"{c.predicted_cost_usd:.8f}",
                "x-r2-lambda": repr(self.lambda_),
                "x-r2-route-ms": f"{self.route_ms:.2f}",
            })
        elif self.lambda_ is not None:  # routed, but without a decision (embedder fallback)
            out.update({"x-r2-model": self.deployment, "x-r2-lambda": repr(self.lambda_),
                        "x-r2-route-ms": f"{self.route_ms:.2f}"})
        if self.tradeoff is not None and "x-r2-lambda" in out:
            out["x-r2-tradeoff"] = repr(self.tradeoff)
        if self.fallback:
            out["x-r2-fallback"] = self.fallback
        return out


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client goes away first."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise APIError(499, "client closed the request", "client_closed", None, "client_closed")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def handle_chat(request: Request, body: dict[str, Any], svc: Service,
                      codec: Codec = CHAT) -> Response:
    """The one pipeline: `body` is a validated chat request (other endpoints convert theirs),
    routed or proxied, forwarded, and rendered back through `codec`."""
    request_id = getattr(request.state, "request_id", None) or new_request_id()
    model = body["model"]
    if model == R2_AUTO:
        outcome, upstream_body = await _route(request, body, svc, request_id)
    elif model in svc.deployment_names:
        if svc.deployments[model].kind != "chat":
            raise bad_request(f"'{model}' is an embedding deployment: it is served on "
                              "/v1/embeddings only", "model", "wrong_model_kind")
        outcome = Outcome(request_id, model)
        upstream_body = forward_cap(body, svc.deployments[model].cap_field)
    else:
        raise not_found_model()
    request.state.outcome = outcome  # for the request's log line (gateway/requestlog.py)
    if svc.decision_log is not None and outcome.lambda_ is not None:  # routed: logged
        outcome.trace = svc.decision_log.trace(body)
    return await _forward(request, upstream_body, svc, outcome, body, codec)


async def _route(request: Request, body: dict[str, Any], svc: Service,
                 request_id: str) -> tuple[Outcome, dict[str, Any]]:
    headers = parse_route_headers(request.headers, svc.request_default(),
                                  svc.checkpoint.tradeoff)
    start = time.perf_counter()
    try:
        decision = await svc.route(body["messages"], headers, client_cap(body),
                                   outputs=requested_outputs(body))
    except EmbedderError:
        fallback = svc.settings.fallback_deployment
        if fallback is None:
            raise
        svc.metrics.fallbacks.labels("embedder-unavailable").inc()
        outcome = Outcome(request_id, fallback, None, headers.lambda_,
                          (time.perf_counter() - start) * 1000, fallback="embedder-unavailable",
                          tradeoff=headers.tradeoff)
        return outcome, {**body, "model": fallback}
    outcome = Outcome(request_id, decision.model, decision, headers.lambda_,
                      (time.perf_counter() - start) * 1000, tradeoff=headers.tradeoff)
    svc.metrics.decisions.labels(decision.model, str(decision.budget)).inc()
    svc.metrics.predicted_cost.labels(decision.model).inc(decision.chosen.predicted_cost_usd)
    return outcome, _rewrite(body, svc, decision)


def _rewrite(body: dict[str, Any], svc: Service, decision: Decision) -> dict[str, Any]:
    dep = svc.deployments.get(decision.model)
    return apply_policy(body, decision.model, decision.policy, dep.max_tokens if dep else None,
                        dep.cap_field if dep else "max_tokens")


def _next_candidate(svc: Service, outcome: Outcome, failed: set[str]) -> Decision | None:
    """The best remaining candidate on a model that has not failed for this request."""
    decision = outcome.decision
    if decision is None:
        return None
    cooling = svc.upstream.cooldowns.cooling()
    for cand in decision.candidates:
        if cand.model not in failed and cand.model not in cooling:
            policy = svc.scorer.policy_for(cand.budget)
            return dataclasses.replace(decision, chosen=cand, policy=policy)
    return None


async def _forward(request: Request, body: dict[str, Any], svc: Service, outcome: Outcome,
                   original: dict[str, Any], codec: Codec = CHAT) -> Response:
    failed: set[str] = set()
    deadline = time.monotonic() + svc.settings.server.request_timeout_s
    while True:
        name = body["model"]
        start = time.perf_counter()
        remaining = deadline - time.monotonic()
        attempt = Attempt()
        try:
            if body.get("stream"):
                return await _open_stream(request, body, svc, outcome, remaining, attempt,
                                          codec)
            result = await until_disconnect(request,
                                            svc.upstream.complete(body, remaining, attempt))
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped through the one error table
            err = to_api_error(exc, svc.secrets)
            if name in svc.upstream.clients and not attempt.sent:
                raise _not_sent(exc, err) from None
            svc.metrics.upstream_errors.labels(name, str(err.status)).inc()
            if err.status not in RETRYABLE:
                raise err from None
            # A timeout cut short by the request's deadline says nothing about the deployment.
            if not (err.status == 504 and remaining < svc.upstream.timeout_for(name)):
                svc.upstream.cooldowns.failure(name)
            failed.add(name)
            nxt = _next_candidate(svc, outcome, failed)
            if nxt is None or deadline - time.monotonic() < MIN_ATTEMPT_S:
                raise err from None
            svc.metrics.fallbacks.labels("upstream-error").inc()
            outcome.decision, outcome.deployment = nxt, nxt.model
            outcome.fallback = f"upstream-error:{name}"
            body = _rewrite(original, svc, nxt)
            continue
        finally:
            svc.metrics.upstream_seconds.labels(name).observe(time.perf_counter() - start)
        svc.upstream.cooldowns.success(name)
        data = _to_dict(result)
        data["model"] = name
        _observe_usage(svc, outcome, data)
        _pace(svc, outcome, None)
        headers = outcome.response_headers()
        note = usage_note(attempt, name in svc.upstream.clients)
        if note:
            headers["x-r2-usage"] = note
        return JSONResponse(codec.render(data), headers=headers)


def _not_sent(exc: Exception, err: APIError) -> APIError:
    """An error raised before the request reached the network is the gateway's (a value it
    could not encode, a bug): never charged to the deployment, never retried elsewhere."""
    if err.status < 500 or err.status == 504:  # LiteLLM refused the request: still a 4xx
        return err
    log.warning("request failed before it was sent upstream: %s", type(exc).__name__)
    return APIError(500, "the request could not be sent upstream", "server_error", None,
                    "internal_error")


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return openai_shape(obj)
    dump = getattr(obj, "model_dump", None)
    data = dump(exclude_none=False) if dump else json.loads(obj.json())
    return openai_shape({k: v for k, v in data.items() if not k.startswith("_")})


def _observe_usage(svc: Service, outcome: Outcome, data: dict[str, Any]) -> None:
    usage = data.get("usage") or {}
    spec = svc.model_specs.get(outcome.deployment)
    completion = usage.get("completion_tokens")
    cost = None
    if isinstance(completion, int):
        svc.metrics.completion_tokens.labels(outcome.deployment).observe(completion)
        if spec is not None:
            cost = ((usage.get("prompt_tokens") or 0) * spec.input_price_per_million
                    + completion * spec.output_price_per_million) / 1e6
            svc.metrics.actual_cost.labels(outcome.deployment).inc(cost)
            outcome.cost_usd = cost
            _pace(svc, outcome, cost)
    for choice in data.get("choices") or []:
        if choice.get("finish_reason") == "length":
            outcome.truncated = True
            if outcome.decision is not None:
                svc.metrics.cut_at_budget.labels(outcome.deployment,
                                                 str(outcome.decision.budget)).inc()
    if outcome.trace is not None:
        outcome.trace.observe(data)


def _pace(svc: Service, outcome: Outcome, cost: float | None) -> None:
    """Tell spend pacing what this request cost, once: the realised cost from usage, or at
    the end, without usage (a stream without `include_usage`), the predicted cost."""
    if svc.pacing is None or outcome.spent:
        return
    if cost is None and outcome.decision is not None:
        cost = outcome.decision.chosen.predicted_cost_usd
    if cost is not None:
        outcome.spent = True
        svc.pacing.record(cost)


async def _open_stream(request: Request, body: dict[str, Any], svc: Service,
                       outcome: Outcome, remaining: float, attempt: Attempt,
                       codec: Codec = CHAT) -> Response:
    """Get the first chunk under the timeout (errors so far are ordinary HTTP errors)."""
    name = body["model"]
    timeout = svc.upstream.timeout_for(name)

    async def first() -> tuple[AsyncIterator[Any], Any]:
        iterator = await svc.upstream.stream(body, attempt)
        try:
            return iterator, await anext(iterator)
        except BaseException:  # cancelled or timed out too: release the connection now
            await _close(iterator)
            raise

    iterator, head = await until_disconnect(
        request, asyncio.wait_for(first(), min(timeout + 0.5, remaining)))
    svc.upstream.cooldowns.success(name)
    guarded = name in svc.upstream.clients
    return StreamingResponse(_sse(iterator, head, svc, outcome, timeout, request.state,
                                  attempt if guarded else None, codec),
                             media_type="text/event-stream",
                             headers={**outcome.response_headers(), "cache-control": "no-cache"})


async def _sse(iterator: AsyncIterator[Any], head: Any, svc: Service, outcome: Outcome,
               timeout: float, state: Any, attempt: Attempt | None = None,
               codec: Codec = CHAT) -> AsyncIterator[str]:
    """The stream's events. Each gap is bounded by the deployment's `timeout` and the whole
    stream by `server.max_stream_s`; its size by `server.max_response_bytes` (counted here as
    well as in the HTTP client, so that every provider is bounded).

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, `wait_for` returns the result
    and swallows a cancellation that arrives when the awaited chunk is already there, which
    with a fast upstream is nearly always, so a stream whose client had left was consumed to
    its end (issue 13, item 1)."""
    server = svc.settings.server
    deadline = time.monotonic() + server.max_stream_s
    sent = 0
    chunk: Any = head
    renderer = codec.open_stream()
    try:
        while True:
            data = _to_dict(chunk)
            data["model"] = outcome.deployment
            note = stream_usage(data, attempt)
            _observe_usage(svc, outcome, data)  # usage chunk and finish reasons
            if note:  # an SSE comment: clients ignore it, a reader of the stream sees it
                yield f": x-r2-usage {note}\n"
            for event in renderer.chunk(data):
                sent += len(event)
                if sent > server.max_response_bytes:
                    raise ResponseTooLargeError(server.max_response_bytes)
                yield event
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise _stream_too_long(server.max_stream_s)
                async with asyncio.timeout(min(timeout, left)):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except TimeoutError:
                # Which bound the wait had, not the clock afterwards: a timer may fire a hair
                # before `deadline` by time.monotonic() (uvloop's timers tick in milliseconds),
                # which reported a stream cut at the limit as an upstream timeout.
                if left <= timeout:
                    raise _stream_too_long(server.max_stream_s) from None
                raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the stream already started: report in-band
        err = to_api_error(exc, svc.secrets)
        svc.metrics.upstream_errors.labels(outcome.deployment, str(err.status)).inc()
        state.error = err.code
        for event in renderer.error(err):
            yield event
    finally:
        await _close(iterator)
        _pace(svc, outcome, None)
    for event in renderer.end():
        yield event


def _stream_too_long(limit_s: float) -> APIError:
    return APIError(504, f"the stream ran longer than the gateway's limit of {limit_s:g} s",
                    "timeout", None, "stream_too_long")


async def _close(iterator: AsyncIterator[Any]) -> None:
    closer = getattr(iterator, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # noqa: BLE001 - best effort on an already failed stream
            pass


async def handle_route(request: Request, body: dict[str, Any], svc: Service) -> Response:
    headers: RouteHeaders = parse_route_headers(request.headers, svc.request_default(),
                                                svc.checkpoint.tradeoff)
    start = time.perf_counter()
    decision = await svc.route(body["messages"], headers, client_cap(body),
                               outputs=requested_outputs(body))
    payload = decision.to_json(all_candidates=True)
    if headers.tradeoff is not None:
        payload["tradeoff"] = headers.tradeoff
    payload["route_ms"] = (time.perf_counter() - start) * 1000
    return JSONResponse(payload)
