"""`/readyz`: can this process serve a request now? Answered from what it already knows.

Two parts. The embedder: one real embedding through the batcher, cached for
`server.readiness_cache_s` (and shared by concurrent probes), so a probe every 100 ms costs one
embedding per cache period, not one per probe. The upstreams: never probed (a probe would cost
provider calls and say little about real requests); their health comes from the outcomes of
recent requests, as the cooldowns record them. Ready means the embedder answers and at least one
deployment is not cooling down.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .batching import MicroBatcher
from .upstream import Cooldowns


class Readiness:
    def __init__(self, batcher: MicroBatcher, cooldowns: Cooldowns, deployments: list[str],
                 cache_s: float) -> None:
        self.batcher = batcher
        self.cooldowns = cooldowns
        self.deployments = deployments
        self.cache_s = cache_s
        self._checked_at = -float("inf")
        self._ok = False
        self._probe: asyncio.Future[bool] | None = None

    async def embedder_ok(self) -> bool:
        if time.monotonic() - self._checked_at < self.cache_s:
            return self._ok
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._embed())
        return await asyncio.shield(self._probe)

    async def _embed(self) -> bool:
        try:
            await self.batcher.embed("ready")
            ok = True
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            ok = False
        self._ok, self._checked_at = ok, time.monotonic()
        return ok

    def upstreams(self) -> dict[str, dict[str, Any]]:
        cooling = self.cooldowns.cooling()
        recent = self.cooldowns.recent_failures()
        return {name: {"status": "cooling" if name in cooling
                       else "failing" if recent.get(name) else "ok",
                       "recent_failures": recent.get(name, 0)}
                for name in self.deployments}

    async def report(self) -> tuple[bool, dict[str, Any]]:
        embedder = await self.embedder_ok()
        upstreams = self.upstreams()
        serving = any(u["status"] != "cooling" for u in upstreams.values())
        ready = embedder and serving
        return ready, {"status": "ready" if ready else "not ready", "checkpoint": True,
                       "embedder": embedder, "upstreams": upstreams}
