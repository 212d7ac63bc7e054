"""The gateway's serving objects, built once at start-up and shared by all requests.

`Service` holds the verified checkpoint's scorer, the embedder behind its micro-batcher, the
LiteLLM upstream, the metrics and the admission counter. Building it fails fast with a clear
error when the checkpoint, the embedder or the deployments do not fit together.

Routing a request: the routing text (`text.routing_text`) is embedded through the embedding
cache (`embed_cache.py`) and, on a miss, the micro-batcher, while its input tokens are counted
per deployment tokenizer (`tokens.InputTokenCounter`); both run off the event loop for large
requests, and scoring runs off the loop for MLP heads (the linear heads' one GEMV costs less
than the hop to a thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

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
)
from router_core.checkpoint import MANIFEST, sha256_file
from router_core.embedders import serving_config
from router_core.router import policy_input_tokens
from router_core.text import routing_text
from router_core.tradeoff import Knob

from . import redaction
from .batching import MicroBatcher
from .config import ConfigError, GatewaySettings
from .embed_cache import EmbeddingCache
from .errors import APIError, bad_request
from .metrics import Metrics
from .pacing import Pacer, default_knob, make_pacer
from .protocol import RouteHeaders
from .state.core import SharedState
from .tokens import InputTokenCounter
from .upstream import Upstream

log = logging.getLogger("r2.gateway")


def apply_prices(ckpt: Checkpoint, settings: GatewaySettings) -> Checkpoint:
    """Each model priced by the one rule of `pricing.py` (deployment, else checkpoint)."""
    from .pricing import resolve_price

    models = []
    for spec in ckpt.models:
        dep = settings.deployment(spec.name)
        if dep is None or dep.kind != "chat":
            raise ConfigError(f"deployments: checkpoint model {spec.name!r} has no chat deployment")
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


#: Requests with more characters than this are counted off the event loop.
OFFLOAD_CHARS = 20_000


def _check_policies(ckpt: Checkpoint) -> None:
    for pol in ckpt.policies:
        if pol.kind == "style" and not pol.instruction:
            raise ConfigError(f"checkpoint: named policy {pol.name!r} has no instruction; add it "
                              "with a policies file at training time")


def served_policies(ckpt: Checkpoint, settings: GatewaySettings) -> Checkpoint:
    """The checkpoint's policies, or its numeric budgets under gateway.yaml's named override
    (`budget_protocol_override`), which is logged: heads measured under one protocol predict
    another's outcomes only approximately."""
    override = settings.override_protocol()
    if override is None:
        return ckpt
    budgets = [p for p in ckpt.policies if p.kind == "budget"]
    if budgets:
        log.warning("budget_protocol_override: serving %d numeric budgets as %s instead of the "
                    "checkpoint's protocol (%s)", len(budgets), override.describe(),
                    ckpt.provenance.get("protocol_description") or "as trained")
    return dataclasses.replace(ckpt, policies=tuple(p.with_protocol(override)
                                                    for p in ckpt.policies))


def _size(messages: list[dict[str, Any]]) -> int:
    total = 0
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(p.get("text") or "")) for p in content if isinstance(p, dict))
    return total


class _SwitchInterval:
    """The interpreter's switch interval while any gateway of this process serves: the first
    `enter` remembers the process's own value, the last `leave` puts it back (tests and
    applications may run several gateways in one process, started and stopped in any order)."""

    def __init__(self) -> None:
        self._serving = 0
        self._original = 0.0

    def enter(self, seconds: float) -> None:
        if self._serving == 0:
            self._original = sys.getswitchinterval()
        self._serving += 1
        sys.setswitchinterval(seconds)

    def leave(self) -> None:
        self._serving = max(0, self._serving - 1)
        if self._serving == 0:
            sys.setswitchinterval(self._original)


_switch_interval = _SwitchInterval()


class Service:
    def __init__(self, settings: GatewaySettings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder if embedder is not None else make_embedder(
            serving_config(settings.embedder))
        _check_pin(settings)
        ckpt = load_checkpoint(settings.checkpoint,
                               expected_embedder=(self.embedder.id, self.embedder.dim))
        _check_policies(ckpt)
        self.checkpoint = served_policies(apply_prices(ckpt, settings), settings)
        kind = settings.input_tokens or self.checkpoint.input_tokens
        self.scorer = Scorer(self.checkpoint, policy_input_tokens(self.checkpoint, kind))
        limits = [p.limit for p in self.checkpoint.policies if p.limit is not None]
        #: A client cap below this is below every policy's.
        self._least_limit = min(limits) if limits else 0
        #: The policies a cap below every limit chooses among (fixed per checkpoint).
        self._smallest_policies = self.scorer.smallest_policies()
        self.token_counter = InputTokenCounter(
            self.checkpoint.model_names, {d.name: d.model for d in settings.deployments}, kind,
            [m.input_token_scale for m in self.checkpoint.models])
        # CPU work of large requests (token counts, MLP scoring), off the event loop and apart
        # from the embedder's thread.
        self._cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2-route-cpu")
        self.metrics = Metrics()
        self.default_knob = default_knob(settings, self.checkpoint)
        self.pacing: Pacer | None = make_pacer(settings, self.checkpoint, self.default_knob)
        if self.pacing is not None:
            self.metrics.add_pacing(self.pacing)
        self.upstream = make_upstream(settings, self.checkpoint)
        #: Cooldowns, pacing, sessions and rate limits, shared with replicas via Redis if set.
        self.state = SharedState(settings, self.metrics, self.scorer.policy_for)
        self.state.share(self.upstream, self.pacing)
        srv = settings.server
        self.batcher = MicroBatcher(self.embedder, srv.embed_batch_window_ms / 1000,
                                    srv.embed_max_batch, srv.embed_timeout_s,
                                    observe=self._observe_embed,
                                    observe_stage=self._observe_stage)
        #: What routing embeds through: warm-up and readiness go to the batcher itself.
        self.embed_cache = EmbeddingCache(self.batcher.embed, srv.embed_cache_size,
                                          observe=self._observe_cache)
        self.metrics.add_embed_cache(self.embed_cache)
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
        #: The decision log (gateway/decisionlog/) and its hook on every decision, when on.
        self.decision_log: Any = None
        self.after_decide: Callable[[Decision, Any], Decision] | None = None

    def request_default(self) -> Knob:
        """The knob of a request that sends none (moved by spend pacing when configured)."""
        if self.pacing is not None:
            return Knob("tradeoff", self.pacing.tradeoff())
        return self.default_knob

    def _observe_embed(self, seconds: float, size: int) -> None:
        self.metrics.embed_seconds.observe(seconds)
        self.metrics.embed_batch.observe(size)

    def _observe_stage(self, stage: str, seconds: float) -> None:
        self.metrics.stage_seconds.labels(stage).observe(seconds)

    def _observe_cache(self, hit: bool) -> None:
        (self.metrics.embed_cache_hits if hit else self.metrics.embed_cache_misses).inc()

    async def start(self) -> None:
        self._unredact = redaction.install(self.secrets)
        _switch_interval.enter(self.settings.server.gil_switch_interval_ms / 1000)
        self.batcher.start()
        await self.state.start()
        # Warm the embedder (ONNX session, tokenizer) off the request path; a remote embedder
        # that is down at start-up only makes /readyz say so.
        self._warmup: asyncio.Future[None] = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._cpu,
                                                             self.token_counter.warm_up)
        except Exception:  # noqa: BLE001 - counting falls back to cl100k per request
            log.info("token counter warm-up failed")
        try:
            await self.batcher.embed("warm-up")
        except Exception:  # noqa: BLE001 - readiness reports embedder failures
            log.info("embedder warm-up failed; /readyz will report it")

    async def stop(self) -> None:
        _switch_interval.leave()
        self._warmup.cancel()
        await self.batcher.stop()
        self._cpu.shutdown(wait=False, cancel_futures=True)
        await self.upstream.aclose()
        await self.state.stop()
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
                    client_cap: int | None, exclude: set[str] | None = None,
                    outputs: int = 1) -> Decision:
        """Embed the routing text, count the input tokens, decide under the constraints."""
        text = routing_text(messages, self.embedder.max_chars)
        if not text.strip():
            raise bad_request("the conversation has no system or user text to route",
                              "messages", "empty_content")
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        if _size(messages) > OFFLOAD_CHARS:
            counting = loop.run_in_executor(self._cpu, self.token_counter.count, messages)
            embedding, tokens = await asyncio.gather(self.embed_cache.embed(text), counting)
            # counted alongside the embedding: `route_embed` covers both
            embedded = counted = time.perf_counter()
        else:
            embedding = await self.embed_cache.embed(text)
            embedded = time.perf_counter()
            tokens = self.token_counter.count(messages)
            counted = time.perf_counter()
        args = (embedding, tokens, headers, client_cap, exclude, outputs)
        if self.checkpoint.head_kind == "linear":
            decision = self.decide(*args)
        else:
            decision = await loop.run_in_executor(self._cpu, self.decide, *args)
        decision = await self.state.sessions.stick(decision, self.upstream.cooldowns.cooling())
        end = time.perf_counter()
        self.metrics.route_seconds.observe(end - start)
        stage = self.metrics.stage_seconds
        stage.labels("route_embed").observe(embedded - start)
        if counted > embedded:
            stage.labels("route_count").observe(counted - embedded)
        stage.labels("route_score").observe(end - counted)
        return decision

    def decide(self, embedding: Any, input_tokens: Any, headers: RouteHeaders,
               client_cap: int | None, exclude: set[str] | None = None,
               outputs: int = 1) -> Decision:
        allowed = list(headers.models) if headers.models else list(self.scorer.models)
        unknown = [m for m in allowed if m not in self.scorer.models]
        if unknown:
            raise bad_request("x-r2-models names a model this router does not serve",
                              "x-r2-models", "model_not_found")
        avoid = (exclude or set()) | self.upstream.cooldowns.cooling()
        healthy = [m for m in allowed if m not in avoid]
        allowed = healthy or [m for m in allowed if m not in (exclude or set())] or allowed
        tokens = np.asarray(input_tokens, dtype=np.float64)
        constraints = Constraints(tuple(allowed), client_cap, headers.max_cost_usd,
                                  outputs=outputs)
        if client_cap is not None and client_cap < self._least_limit:
            # The client's cap is below every policy's: choose among the policies that ask for
            # the least (never a longer style, nor the budget-free arm, which would be cut);
            # the rewrite sends the client's own, smaller cap.
            constraints = dataclasses.replace(constraints, max_budget=None,
                                              policies=self._smallest_policies)
        try:
            decision = self.scorer.decide(embedding, tokens, headers.lambda_, constraints)
        except NoFeasibleCandidateError:
            raise bad_request("no model and budget fit within x-r2-max-cost-usd",
                              "x-r2-max-cost-usd", "no_feasible_candidate") from None
        # Exploration and the decision log (never past `constraints`: candidates are feasible).
        return decision if self.after_decide is None else self.after_decide(decision, embedding)

