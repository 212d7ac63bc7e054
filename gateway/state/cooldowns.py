"""Deployment cooldowns shared through a `Store`: a deployment that fails on one replica is
avoided by all of them within one sync interval.

Routing asks `cooling()` synchronously (it may run in a worker thread), so the shared view is
a mirror: each replica keeps its own `Cooldowns` (exact, as with one process) and reads the
shared failure counts and cooldowns every `sync_interval_s` (one MGET). A failure is counted in
the shared store as well (a fixed window from the first failure, where the local count slides);
a success on any replica ends the shared cooldown. While the store is unreachable the mirror is
emptied and the local cooldowns decide alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..upstream import Cooldowns
from .store import Store


class SharedCooldowns(Cooldowns):
    """`Cooldowns` whose answers also include what the other replicas saw."""

    def __init__(self, local: Cooldowns, store: Store, names: list[str]) -> None:
        super().__init__(local.allowed_fails, local.window_s, local.cooldown_s, local.clock)
        self.store = store
        self.names = list(names)
        self._shared_cooling: set[str] = set()
        self._shared_fails: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- writes: local at once, shared in the background -------------------------------------
    def failure(self, name: str) -> None:
        super().failure(name)
        self._spawn(self._shared_failure(name))

    def success(self, name: str) -> None:
        super().success(name)
        if name in self._shared_cooling or self._shared_fails.get(name):
            self._shared_cooling.discard(name)
            self._shared_fails.pop(name, None)
            self._spawn(self.store.delete(f"fails:{name}", f"cooling:{name}"))

    async def _shared_failure(self, name: str) -> None:
        count, _ = await self.store.incr_window(f"fails:{name}", self.window_s)
        self._shared_fails[name] = count
        if count >= self.allowed_fails:
            await self.store.set(f"cooling:{name}", "1", self.cooldown_s)
            await self.store.delete(f"fails:{name}")
            self._shared_cooling.add(name)
            self._shared_fails.pop(name, None)

    def _spawn(self, work: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # called off the loop (a test's thread): nothing to share
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reads ---------------------------------------------------------------------------------
    def cooling(self) -> set[str]:
        return super().cooling() | self._shared_cooling

    def recent_failures(self) -> dict[str, int]:
        local = super().recent_failures()
        names = set(local) | set(self._shared_fails)
        return {n: max(local.get(n, 0), self._shared_fails.get(n, 0)) for n in names}

    async def sync(self) -> None:
        """Read the shared view (one MGET); emptied while the store is unreachable."""
        keys = [f"cooling:{n}" for n in self.names] + [f"fails:{n}" for n in self.names]
        values = await self.store.mget(keys)
        if self.store.status() != "redis":
            self._shared_cooling, self._shared_fails = set(), {}
            return
        k = len(self.names)
        self._shared_cooling = {n for n, v in zip(self.names, values[:k], strict=True)
                                if v is not None}
        self._shared_fails = {n: int(v) for n, v in zip(self.names, values[k:], strict=True)
                              if v is not None}
