"""The gateway's serving objects, built once at start-up and shared by all requests.

`Service` holds the verified checkpoint's scorer, the embedder behind its micro-batcher, the
LiteLLM upstream, the metrics and the admission counter. Building it fails fast with a clear
error when the checkpoint, the embedder or the deployments do not fit together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from router_core import (
    Checkpoint,
    CheckpointError,
    Constraints,
    Decision,
    Embedder,
    NoFeasibleCandidateError,
    Scorer,
    load_checkpoint,
    make_embedder,
    messages_text,
    token_counter,
)
from router_core.checkpoint import MANIFEST, sha256_file
from router_core.text import TokenCounter
from router_core.tradeoff import Knob

from . import redaction
from .batching import MicroBatcher
from .config import ConfigError, GatewaySettings
from .errors import APIError, bad_request
from .metrics import Metrics
from .pacing import Pacer, default_knob, make_pacer
from .protocol import RouteHeaders
from .upstream import Upstream

log = logging.getLogger("r2.gateway")


def apply_prices(ckpt: Checkpoint, settings: GatewaySettings) -> Checkpoint:
    """Each model priced by the one rule of `pricing.py` (deployment, else checkpoint)."""
    from .pricing import resolve_price

    models = []
    for spec in ckpt.models:
        dep = settings.deployment(spec.name)
        if dep is None:
            raise ConfigError(f"deployments: checkpoint model {spec.name!r} has no deployment")
        price = resolve_price(dep, settings.deployments.index(dep), spec)
        models.append(dataclasses.replace(spec, input_price_per_million=price.input_per_million,
                                          output_price_per_million=price.output_per_million))
    return dataclasses.replace(ckpt, models=tuple(models))


def make_upstream(settings: GatewaySettings, ckpt: Checkpoint) -> Upstream:
    """The LiteLLM upstream, told each model's price from `ckpt` (prices already applied)."""
    return Upstream(settings, prices={
        m.name: (m.input_price_per_million, m.output_price_per_million) for m in ckpt.models})


def _check_pin(settings: GatewaySettings) -> None:
    """The manifest is not hashed by itself: a pinned digest catches any changed byte in it."""
    if settings.checkpoint_sha256 is None:
        return
    manifest = settings.checkpoint / MANIFEST
    try:
        digest = sha256_file(manifest)
    except OSError:
        raise CheckpointError("manifest missing", file=str(manifest)) from None
    if digest != settings.checkpoint_sha256.lower():
        raise CheckpointError("sha256 does not match checkpoint_sha256: the manifest was changed",
                              file=str(manifest), field="checkpoint_sha256")


def _check_policies(ckpt: Checkpoint) -> None:
    for pol in ckpt.policies:
        if pol.budget is None and not pol.is_unlimited and not pol.instruction:
            raise ConfigError(f"checkpoint: named policy {pol.name!r} has no instruction; add it "
                              "with a policies file at training time")


class Service:
    def __init__(self, settings: GatewaySettings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder if embedder is not None else make_embedder(settings.embedder)
        _check_pin(settings)
        ckpt = load_checkpoint(settings.checkpoint,
                               expected_embedder=(self.embedder.id, self.embedder.dim))
        _check_policies(ckpt)
        self.checkpoint = apply_prices(ckpt, settings)
        self.scorer = Scorer(self.checkpoint)
        self.count_tokens: TokenCounter = token_counter(
            settings.input_tokens or self.checkpoint.input_tokens)
        self.metrics = Metrics()
        self.default_knob = default_knob(settings, self.checkpoint)
        self.pacing: Pacer | None = make_pacer(settings, self.checkpoint, self.default_knob)
        if self.pacing is not None:
            self.metrics.add_pacing(self.pacing)
        self.upstream = make_upstream(settings, self.checkpoint)
        srv = settings.server
        self.batcher = MicroBatcher(self.embedder, srv.embed_batch_window_ms / 1000,
                                    srv.embed_max_batch, srv.embed_timeout_s,
                                    observe=self._observe_embed)
        self.in_flight = 0
        self.deployment_names = [d.name for d in settings.deployments]
        # Looked up on every request: built once.
        self.deployments = {d.name: d for d in settings.deployments}
        self.model_specs = {m.name: m for m in self.checkpoint.models}
        #: Every configured key, masked in any upstream message that reaches a client.
        self.secrets = tuple(
            [d.api_key.get_secret_value() for d in settings.deployments if d.api_key]
            + [k.get_secret_value() for k in srv.api_keys])
        self._unredact: Callable[[], None] = lambda: None

    def request_default(self) -> Knob:
        """The knob of a request that sends none (moved by spend pacing when configured)."""
        if self.pacing is not None:
            return Knob("tradeoff", self.pacing.tradeoff())
        return self.default_knob

    def _observe_embed(self, seconds: float, size: int) -> None:
        self.metrics.embed_seconds.observe(seconds)
        self.metrics.embed_batch.observe(size)

    async def start(self) -> None:
        self._unredact = redaction.install(self.secrets)
        self.batcher.start()
        # Warm the embedder (ONNX session, tokenizer) off the request path; a remote embedder
        # that is down at start-up only makes /readyz say so.
        self._warmup: asyncio.Future[None] = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        try:
            await self.batcher.embed("warm-up")
        except Exception:  # noqa: BLE001 - readiness reports embedder failures
            log.info("embedder warm-up failed; /readyz will report it")

    async def stop(self) -> None:
        self._warmup.cancel()
        await self.batcher.stop()
        await self.upstream.aclose()
        self.embedder.close()
        self._unredact()

    # -- admission ---------------------------------------------------------------------------
    def admit(self) -> None:
        if self.in_flight >= self.settings.server.max_concurrency:
            self.metrics.rejected.inc()
            raise APIError(503, "the gateway is at its concurrency limit; retry shortly",
                           "service_unavailable", None, "overloaded", {"Retry-After": "1"})
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    # -- routing -----------------------------------------------------------------------------
    async def route(self, messages: list[dict[str, Any]], headers: RouteHeaders,
                    client_cap: int | None, exclude: set[str] | None = None) -> Decision:
        """Embed the conversation and decide under the request's constraints."""
        text = messages_text(messages)
        if not text.strip():
            raise bad_request("the conversation has no system or user text to route",
                              "messages", "empty_content")
        start = time.perf_counter()
        embedding = await self.batcher.embed(text)
        decision = self.decide(embedding, self.count_tokens(text), headers, client_cap, exclude)
        self.metrics.route_seconds.observe(time.perf_counter() - start)
        return decision

    def decide(self, embedding: Any, input_tokens: int, headers: RouteHeaders,
               client_cap: int | None, exclude: set[str] | None = None) -> Decision:
        allowed = list(headers.models) if headers.models else list(self.scorer.models)
        unknown = [m for m in allowed if m not in self.scorer.models]
        if unknown:
            raise bad_request("x-r2-models names a model this router does not serve",
                              "x-r2-models", "model_not_found")
        avoid = (exclude or set()) | self.upstream.cooldowns.cooling()
        healthy = [m for m in allowed if m not in avoid]
        allowed = healthy or [m for m in allowed if m not in (exclude or set())] or allowed
        constraints = Constraints(tuple(allowed), client_cap, headers.max_cost_usd)
        try:
            return self.scorer.decide(embedding, input_tokens, headers.lambda_, constraints)
        except NoFeasibleCandidateError:
            if headers.max_cost_usd is not None:
                raise bad_request("no model and budget fit within x-r2-max-cost-usd",
                                  "x-r2-max-cost-usd", "no_feasible_candidate") from None
            # The client's max_tokens is below every budget: use the smallest budget; the
            # rewrite sends the client's own (smaller) value.
            smallest = min((p.budget for p in self.scorer.policies if p.budget), default=None)
            relaxed = Constraints(tuple(allowed), smallest, None)
            return self.scorer.decide(embedding, input_tokens, headers.lambda_, relaxed)
