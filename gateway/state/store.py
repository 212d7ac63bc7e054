"""The one small interface all shared state goes through, and its two implementations.

`Store` is a handful of key-value operations with expiry: a fixed-window counter, get (which
can extend a key's life), set, delete, multi-get and an atomic read-modify-write. Cooldowns,
spend pacing, sticky sessions and rate limits are written once over it.

- `MemoryStore`: a dict in the process (one replica, or the fallback).
- `RedisStore`: Redis through `redis.asyncio`, with a `MemoryStore` behind it. Every command is
  bounded by `timeout_s`; the first failure marks Redis down, and from then on operations go to
  the memory store at once (no request waits for a dead Redis) while a background task pings
  Redis every `reconnect_interval_s` and switches back when it answers. Writes (set, delete)
  go to both, so a session survives Redis going away on the replica that saw it; the keys set
  while Redis was away are written to it when it is back (unless another replica wrote them
  first), so a session started during an outage is shared after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

log = logging.getLogger("r2.gateway")

Status = Literal["in-process", "redis", "degraded"]
#: At most this many keys set during an outage are written to Redis when it is back.
MAX_REPLAY = 10_000

# Counter with a fixed window: created with the window's expiry by its first increment.
_INCR_WINDOW = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class Store(Protocol):
    """Key-value state with expiry; keys are given without the configured prefix."""

    async def incr_window(self, key: str, window_s: float) -> tuple[int, float]:
        """Add one to the counter of the current window; returns (count, seconds left)."""
        ...

    async def get(self, key: str, refresh_s: float | None = None) -> str | None:
        """The value, extending its life to `refresh_s` when given."""
        ...

    async def set(self, key: str, value: str, ttl_s: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def mget(self, keys: list[str]) -> list[str | None]: ...

    async def update(self, key: str, change: Callable[[str | None], str]) -> str:
        """Replace the value by `change(value)` atomically; returns the new value."""
        ...

    def status(self) -> Status: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """A dict with expiry on a monotonic clock, holding at most `max_keys` keys (the oldest
    written go first), so clients inventing keys (session ids, bearer tokens) cannot grow it
    without bound."""

    def __init__(self, max_keys: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._data: dict[str, tuple[str, float]] = {}

    def _live(self, key: str) -> tuple[str, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= self.clock():
            del self._data[key]
            return None
        return item

    def entry(self, key: str) -> tuple[str, float] | None:
        """The value and its seconds left, or None."""
        item = self._live(key)
        return None if item is None else (item[0], item[1] - self.clock())

    def _put(self, key: str, value: str, until: float) -> None:
        self._data.pop(key, None)  # re-inserted: the newest write
        self._data[key] = (value, until)
        if len(self._data) > self.max_keys:
            now = self.clock()
            for k in [k for k, (_, u) in self._data.items() if u <= now]:
                del self._data[k]
            while len(self._data) > self.max_keys:
                del self._data[next(iter(self._data))]

    async def incr_window(self, key: str, window_s: float) -> tuple[int, float]:
        item = self._live(key)
        now = self.clock()
        if item is None:
            self._put(key, "1", now + window_s)
            return 1, window_s
        count = int(item[0]) + 1
        self._data[key] = (str(count), item[1])
        return count, item[1] - now

    async def get(self, key: str, refresh_s: float | None = None) -> str | None:
        item = self._live(key)
        if item is None:
            return None
        if refresh_s is not None:
            self._put(key, item[0], self.clock() + refresh_s)
        return item[0]

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        self._put(key, value, self.clock() + ttl_s)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def mget(self, keys: list[str]) -> list[str | None]:
        return [item[0] if (item := self._live(k)) is not None else None for k in keys]

    async def update(self, key: str, change: Callable[[str | None], str]) -> str:
        item = self._live(key)
        value = change(item[0] if item else None)
        self._data[key] = (value, float("inf"))
        return value

    def status(self) -> Status:
        return "in-process"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class StoreMetrics(Protocol):
    def redis_up(self, up: bool) -> None: ...

    def redis_error(self) -> None: ...

    def round_trip(self) -> None: ...


class _NoMetrics:
    def redis_up(self, up: bool) -> None: ...

    def redis_error(self) -> None: ...

    def round_trip(self) -> None: ...


class RedisUnavailable(Exception):
    """Redis is marked down: the caller uses the memory store."""


class RedisStore:
    def __init__(self, url: str, prefix: str = "r2:", timeout_s: float = 0.1,
                 reconnect_interval_s: float = 1.0, fallback: MemoryStore | None = None,
                 metrics: StoreMetrics | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self.memory = fallback or MemoryStore()
        self.metrics = metrics or _NoMetrics()
        self._client: Any = None
        self._script: Any = None
        self._up = False
        self._reconnect: asyncio.Task[None] | None = None
        #: Keys set while Redis was down (the newest `MAX_REPLAY` of them), replayed to it.
        self._unsynced: dict[str, None] = {}

    # -- connection ------------------------------------------------------------------------------
    async def start(self) -> None:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries and short socket timeouts: a slow or dead Redis costs one bounded wait,
        # after which the store is marked down and requests stop waiting for it.
        self._client = Redis.from_url(
            self.url, decode_responses=True, socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 0),
            health_check_interval=0, lib_name=None, lib_version=None)
        self._script = self._client.register_script(_INCR_WINDOW)
        if await self._ping():
            self._mark(True)
        else:
            log.warning("state: Redis at %s is unreachable; serving on in-process state and "
                        "retrying every %.1f s", _safe_url(self.url), self.reconnect_interval_s)
            self._mark(False)

    async def close(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:  # noqa: BLE001 - closing at shutdown is best effort
                pass

    def status(self) -> Status:
        return "redis" if self._up else "degraded"

    async def _ping(self) -> bool:
        try:
            self.metrics.round_trip()
            await asyncio.wait_for(self._client.ping(), self.timeout_s * 2)
            return True
        except Exception:  # noqa: BLE001 - any failure means: not reachable now
            return False

    def _mark(self, up: bool) -> None:
        if up and not self._up:
            log.info("state: Redis at %s is reachable; sharing state", _safe_url(self.url))
        self._up = up
        self.metrics.redis_up(up)
        if not up and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        # The pooled connections of before the failure are dead or mid-reply: drop them, so the
        # first commands after recovery open fresh ones instead of each discovering a stale one
        # inside its short time budget (and marking Redis down again).
        try:
            await self._client.connection_pool.disconnect()
        except Exception:  # noqa: BLE001 - closing broken sockets is best effort
            pass
        while not self._up:
            await asyncio.sleep(self.reconnect_interval_s)
            if await self._ping():
                await self._replay()
                self._mark(True)

    async def _replay(self) -> None:
        """Write the keys set while Redis was down that are still alive here and that no other
        replica has written meanwhile (SET NX, with their remaining life)."""
        keys, self._unsynced = list(self._unsynced), {}
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            entry = self.memory.entry(key)
            if entry is not None:
                left = entry[1]
                pipe.set(self.prefix + key, entry[0], nx=True,
                         px=_ms(left) if left != float("inf") else None)
        try:
            await asyncio.wait_for(pipe.execute(), self.timeout_s * 4)
        except Exception as exc:  # noqa: BLE001 - these keys stay local, as during the outage
            log.warning("state: replaying %d keys to Redis failed (%s)", len(keys),
                        type(exc).__name__)

    async def _call(self, make: Callable[[], Any], round_trips: int = 1) -> Any:
        """One bounded call (`round_trips` x `timeout_s`), or `RedisUnavailable` (Redis
        marked down)."""
        if not self._up:
            raise RedisUnavailable
        try:
            self.metrics.round_trip()
            return await asyncio.wait_for(make(), self.timeout_s * round_trips)
        except Exception as exc:
            if self._up:
                log.warning("state: Redis failed (%s); serving on in-process state",
                            type(exc).__name__)
            self.metrics.redis_error()
            self._mark(False)
            raise RedisUnavailable from None

    # -- the interface ---------------------------------------------------------------------------
    async def incr_window(self, key: str, window_s: float) -> tuple[int, float]:
        try:
            count, ttl_ms = await self._call(lambda: self._script(
                keys=[self.prefix + key], args=[_ms(window_s)]))
            return int(count), int(ttl_ms) / 1000
        except RedisUnavailable:
            return await self.memory.incr_window(key, window_s)

    async def get(self, key: str, refresh_s: float | None = None) -> str | None:
        try:
            if refresh_s is None:
                value = await self._call(lambda: self._client.get(self.prefix + key))
            else:
                value = await self._call(lambda: self._client.getex(
                    self.prefix + key, px=_ms(refresh_s)))
            return value if value is None else str(value)
        except RedisUnavailable:
            return await self.memory.get(key, refresh_s)

    async def set(self, key: str, value: str, ttl_s: float) -> None:
        await self.memory.set(key, value, ttl_s)
        try:
            await self._call(lambda: self._client.set(self.prefix + key, value,
                                                      px=_ms(ttl_s)))
        except RedisUnavailable:
            self._unsynced.pop(key, None)
            self._unsynced[key] = None
            while len(self._unsynced) > MAX_REPLAY:
                del self._unsynced[next(iter(self._unsynced))]

    async def delete(self, *keys: str) -> None:
        await self.memory.delete(*keys)
        try:
            await self._call(lambda: self._client.delete(*(self.prefix + k for k in keys)))
        except RedisUnavailable:
            pass

    async def mget(self, keys: list[str]) -> list[str | None]:
        try:
            return list(await self._call(
                lambda: self._client.mget([self.prefix + k for k in keys])))
        except RedisUnavailable:
            return await self.memory.mget(keys)

    async def update(self, key: str, change: Callable[[str | None], str]) -> str:
        try:
            # WATCH, GET, MULTI/EXEC: three round trips, more when another replica interferes.
            value: str = await self._call(lambda: self._update(self.prefix + key, change), 6)
        except RedisUnavailable:
            return await self.memory.update(key, change)
        await self.memory.update(key, lambda _: value)
        return value

    async def _update(self, key: str, change: Callable[[str | None], str]) -> str:
        from redis.exceptions import WatchError

        # Retried until it commits: each conflict means another replica's write went in, so
        # this terminates; `_call`'s time budget bounds it (a conflict is not Redis failing,
        # and giving up after a fixed count marked a busy Redis down and lost the update).
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    value = change(await pipe.get(key))
                    pipe.multi()
                    pipe.set(key, value)
                    await pipe.execute()
                    return value
                except WatchError:  # another replica wrote in between: read again
                    continue


def _ms(seconds: float) -> int:
    """Seconds as Redis milliseconds (at least 1: Redis refuses an expiry of 0)."""
    return max(int(seconds * 1000), 1)


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
