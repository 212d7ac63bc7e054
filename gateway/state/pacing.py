"""Spend pacing shared through a `Store`: one controller state for all replicas.

`Pacer` changes its state only through `PacingState.modify(change)` with a pure `change` (add
spend at a time, take a step at a time), so sharing it needs no new controller: each replica
applies a change to its local copy at once (requests never wait) and queues it; every sync
interval the queue is replayed onto the shared snapshot in one atomic read-modify-write, and the
result becomes the local copy. A step that another replica already took is a no-op on replay
(the step checks the time since the last one). The clock is the wall clock, common to replicas.
While the store is unreachable the changes apply to the process's copy and are replayed when it
is back (at most `MAX_PENDING` of them are kept).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from ..pacing import MemoryPacingState, PacingSnapshot
from .store import Store

KEY = "pacing"
MAX_PENDING = 10_000


def encode(snap: PacingSnapshot) -> str:
    return json.dumps(dataclasses.asdict(snap))


def decode(text: str) -> PacingSnapshot:
    return PacingSnapshot(**json.loads(text))


class SharedPacingState(MemoryPacingState):
    """The in-process state, also queueing its changes; kept in step with the store by `sync()`."""

    def __init__(self, initial: PacingSnapshot, store: Store) -> None:
        super().__init__(initial)
        self.store = store
        #: The last shared snapshot (or the initial one): `_snap` without the pending changes.
        self._base = initial
        self._pending: list[Callable[[PacingSnapshot], PacingSnapshot]] = []

    def modify(self, change: Callable[[PacingSnapshot], PacingSnapshot]) -> PacingSnapshot:
        with self._lock:
            self._snap = change(self._snap)
            self._pending.append(change)
            del self._pending[:-MAX_PENDING]
            return self._snap

    async def sync(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        initial = self._base

        def replay(text: str | None) -> str:
            snap = decode(text) if text else initial
            for change in pending:
                snap = change(snap)
            return encode(snap)

        if self.store.status() != "redis":
            with self._lock:  # keep them for when the store is back
                self._pending[:0] = pending
            return
        if pending:
            shared = decode(await self.store.update(KEY, replay))
        else:  # nothing to add: one GET
            text = await self.store.get(KEY)
            shared = decode(text) if text else initial
        with self._lock:
            self._base = shared
            for change in self._pending:  # arrived during the round trip
                shared = change(shared)
            self._snap = shared
