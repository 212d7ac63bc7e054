"""`SharedState`: builds the store and the shared parts from the settings, runs their sync.

Without `state.redis_url` the store is a `MemoryStore` and the upstream's cooldowns and the
pacer keep their in-process state, exactly as with one process. With it, cooldowns and pacing
are wrapped to read and write the shared store (`cooldowns.py`, `pacing.py`); sessions and rate
limits go through the store either way. `/readyz` reports `state` (`in-process`, `redis`,
`degraded`); degraded is still ready (200): the gateway serves on in-process state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from router_core import Policy

from ..pacing import PacingSnapshot
from .cooldowns import SharedCooldowns
from .pacing import SharedPacingState
from .ratelimit import RateLimiter
from .sessions import Sessions
from .settings import StateSettings
from .store import MemoryStore, RedisStore, Status, Store

if TYPE_CHECKING:
    from ..config import GatewaySettings
    from ..metrics import Metrics
    from ..pacing import Pacer
    from ..upstream import Upstream

log = logging.getLogger("r2.gateway")


class StateMetrics:
    """`r2_state_*` on the app's registry (per process; summed or min'd across workers)."""

    def __init__(self, metrics: Metrics, shared: bool) -> None:
        r = metrics.registry
        #: Only with `state.redis_url`: without it there is nothing to be up or down.
        self.up = Gauge("r2_state_redis_up", "1 while the shared-state Redis answers, 0 while "
                        "the gateway serves on in-process state (min over workers)",
                        registry=r, multiprocess_mode="livemin") if shared else None
        self.errors = Counter("r2_state_redis_errors_total",
                              "Redis commands that failed or timed out", registry=r)
        self.round_trips = Counter("r2_state_redis_round_trips_total",
                                   "Commands and transactions sent to Redis", registry=r)
        self.rate_limited = Counter("r2_rate_limited_total",
                                    "Requests refused by server.rate_limits", registry=r)

    def redis_up(self, up: bool) -> None:
        if self.up is not None:
            self.up.set(1 if up else 0)

    def redis_error(self) -> None:
        self.errors.inc()

    def round_trip(self) -> None:
        self.round_trips.inc()


class SharedState:
    def __init__(self, settings: GatewaySettings, metrics: Metrics,
                 policy_for: Callable[[int | str], Policy]) -> None:
        cfg = settings.state or StateSettings()
        self.settings = cfg
        self.metrics = StateMetrics(metrics, cfg.redis_url is not None)
        #: With workers, gauges read at scrape time are polled (gateway/metrics.py).
        self._refresh: Callable[[], None] | None = metrics.refresh if metrics.multiprocess \
            else None
        sessions = settings.sessions
        memory = MemoryStore(max_keys=sessions.max_local)
        self.store: Store = memory if cfg.redis_url is None else RedisStore(
            cfg.redis_url, cfg.key_prefix, cfg.timeout_s, cfg.reconnect_interval_s, memory,
            self.metrics)
        self.sessions = Sessions(sessions, self.store, policy_for)
        limits = settings.server.rate_limits
        self.limiter = RateLimiter(limits, self.store) if limits is not None else None
        self.cooldowns: SharedCooldowns | None = None
        self.pacing: SharedPacingState | None = None
        self._sync: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        return self.settings.redis_url is not None

    def share(self, upstream: Upstream, pacer: Pacer | None) -> None:
        """Wrap the upstream's cooldowns and the pacer's state to use the shared store."""
        if not self.shared:
            return
        self.cooldowns = SharedCooldowns(upstream.cooldowns, self.store,
                                         list(upstream.timeouts))
        upstream.cooldowns = self.cooldowns
        if pacer is not None:
            # Replicas share the state, so its times must be on a clock they share.
            pacer.clock = time.time
            start = pacer.state.read()
            now = time.time()
            self.pacing = SharedPacingState(PacingSnapshot(start.tradeoff, 0.0, now, now, now),
                                            self.store)
            pacer.state = self.pacing

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.start()
        if self.shared or self._refresh is not None:
            self._sync = asyncio.ensure_future(self._sync_loop())

    async def stop(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
        await self.store.close()
        if self._refresh is not None:  # this worker's live gauges leave the sums
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    async def sync_once(self) -> None:
        if self.cooldowns is not None:
            await self.cooldowns.sync()
        if self.pacing is not None:
            await self.pacing.sync()
        if self._refresh is not None:
            self._refresh()

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.debug("state sync failed", exc_info=True)
            await asyncio.sleep(self.settings.sync_interval_s)

    # -- request hooks ---------------------------------------------------------------------------
    async def rate_limit(self, headers: Mapping[str, str]) -> None:
        if self.limiter is None:
            return
        try:
            await self.limiter.check(headers)
        except Exception:
            self.metrics.rate_limited.inc()
            raise

    def status(self) -> Status:
        return self.store.status()

    def annotate(self, ready: bool, report: dict[str, Any]) -> None:
        """Add `state` to a /readyz report; a ready gateway on degraded state says so."""
        status = self.status()
        report["state"] = status
        if ready and status == "degraded":
            report["status"] = "degraded"
