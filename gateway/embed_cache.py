"""A bounded LRU of routing-text embeddings in front of the micro-batcher.

Agents resend the same conversation turn after turn, so the same routing text comes back
often; a hit skips the embedder (the local one costs milliseconds of CPU per text). Keys are a
128-bit BLAKE2b digest of the routing text, so the cache holds no request content, and its
memory is bounded by `size` vectors (`size * dim * 4` bytes: 6 MB for 4096 MiniLM vectors).

Concurrent misses of one text share one embedding (single flight): the first starts it, the
others wait for the same result. A failed or cancelled embedding is never stored; its waiters
get its error and the next request tries again. When every waiter of a flight has gone (client
disconnects, timeouts), the flight is cancelled, so the batcher skips the text as it would have
without the cache.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
Embed = Callable[[str], Awaitable[Vector]]
#: Called with True for a hit (stored, or joined an embedding in flight), False for a miss.
Observer = Callable[[bool], None]


def text_key(text: str) -> bytes:
    # surrogatepass: JSON may carry lone surrogates, which plain UTF-8 refuses to encode.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Vector]) -> None:
        self.task = task
        self.waiters = 0


class EmbeddingCache:
    """`embed(text)` through `embed_fn`, remembering the last `size` results (0: no cache)."""

    def __init__(self, embed_fn: Embed, size: int, observe: Observer | None = None) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self._embed = embed_fn
        self._observe = observe
        self._store: OrderedDict[bytes, Vector] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self._observe is not None:
            self._observe(hit)

    async def embed(self, text: str) -> Vector:
        if self.size == 0:
            return await self._embed(text)
        key = text_key(text)
        vector = self._store.get(key)
        if vector is not None:
            self._store.move_to_end(key)
            self._count(True)
            return vector
        flight = self._flights.get(key)
        self._count(flight is not None)
        if flight is None:
            flight = _Flight(asyncio.ensure_future(self._embed(text)))
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._landed, key, flight))
        flight.waiters += 1
        try:
            # Shielded: one waiter leaving must not cancel the embedding the others wait for.
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()

    def _landed(self, key: bytes, flight: _Flight, _task: object) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.task.cancelled() or flight.task.exception() is not None:
            return  # never cached: the next request for this text embeds it again
        # A copy, read-only: a batch row is a view that would keep its whole batch alive, and
        # the one stored vector is handed to every later request.
        vector = np.array(flight.task.result(), dtype=np.float32, copy=True)
        vector.flags.writeable = False
        self._store[key] = vector
        self._store.move_to_end(key)
        while len(self._store) > self.size:
            self._store.popitem(last=False)
