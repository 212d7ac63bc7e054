"""The shared-state interface, run on both implementations (a dict, and a real redis-server),
and the parts built on it: cooldowns and spend pacing shared by two replicas, Redis going away
and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redisd import RedisServer

from gateway.pacing import Pacer, PacingSnapshot
from gateway.state.cooldowns import SharedCooldowns
from gateway.state.pacing import SharedPacingState
from gateway.state.store import MemoryStore, RedisStore, Store
from gateway.upstream import Cooldowns


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


async def redis_store(server: RedisServer, prefix: str, timeout_s: float = 0.5,
                      reconnect_s: float = 0.2) -> RedisStore:
    store = RedisStore(server.url, prefix, timeout_s=timeout_s, reconnect_interval_s=reconnect_s)
    await store.start()
    return store


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server: RedisServer
                ) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    s = await redis_store(redis_server, f"t{time.monotonic_ns()}:")
    assert s.status() == "redis"
    yield s
    await s.close()


async def test_window_counter_counts_and_expires(store: Store) -> None:
    assert (await store.incr_window("c", 0.3))[0] == 1
    count, left = await store.incr_window("c", 0.3)
    assert count == 2 and 0 < left <= 0.3
    await asyncio.sleep(0.35)
    assert (await store.incr_window("c", 0.3))[0] == 1  # a new window


async def test_get_set_refresh_delete_mget(store: Store) -> None:
    await store.set("a", "1", 0.3)
    await store.set("b", "2", 10)
    assert await store.mget(["a", "b", "nope"]) == ["1", "2", None]
    await asyncio.sleep(0.2)
    assert await store.get("a", refresh_s=0.3) == "1"  # extended from now
    await asyncio.sleep(0.2)
    assert await store.get("a") == "1"
    await asyncio.sleep(0.15)
    assert await store.get("a") is None
    await store.delete("b")
    assert await store.get("b") is None


async def test_update_is_atomic_under_concurrent_writers(store: Store,
                                                         redis_server: RedisServer) -> None:
    # Two clients of one Redis (two replicas), each incrementing concurrently.
    other: Store = store if isinstance(store, MemoryStore) else await redis_store(
        redis_server, store.prefix, timeout_s=1.0)  # type: ignore[attr-defined]
    if isinstance(store, RedisStore):
        store.timeout_s = 1.0

    def add(text: str | None) -> str:
        return str(int(text or 0) + 1)

    async def writer(s: Store) -> None:
        for _ in range(40):  # one writer per replica, as the pacing sync runs
            await s.update("n", add)

    await asyncio.gather(writer(store), writer(other))
    assert await store.get("n") == "80"
    assert store.status() in ("in-process", "redis")
    if other is not store:
        await other.close()


def test_memory_store_is_bounded() -> None:
    store = MemoryStore(max_keys=3)

    async def fill() -> list[str | None]:
        for i in range(10):
            await store.set(f"k{i}", str(i), 60)
        return await store.mget([f"k{i}" for i in range(10)])

    assert asyncio.run(fill()) == [None] * 7 + ["7", "8", "9"]


async def test_redis_down_falls_back_at_once_and_reconnects(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r").start()
    store = await redis_store(server, "down:", reconnect_s=0.1)
    try:
        await store.set("s", "kept", 60)
        server.stop()
        start = time.perf_counter()
        assert (await store.incr_window("c", 60))[0] == 1  # counted in the process
        assert store.status() == "degraded"
        assert await store.get("s") == "kept"  # written through before Redis went away
        for _ in range(20):
            await store.incr_window("c", 60)
        assert time.perf_counter() - start < 0.5  # one bounded failure, then no waiting
        server.start()
        for _ in range(50):
            if store.status() == "redis":
                break
            await asyncio.sleep(0.05)
        assert store.status() == "redis"
        assert (await store.incr_window("c", 60))[0] == 1  # Redis's own count
    finally:
        await store.close()
        server.stop()


async def test_a_hung_redis_costs_one_short_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r").start()
    store = await redis_store(server, "hung:", timeout_s=0.05, reconnect_s=0.1)
    try:
        server.freeze()
        start = time.perf_counter()
        for _ in range(10):
            await store.incr_window("c", 60)
        assert time.perf_counter() - start < 0.5
        assert store.status() == "degraded"
        server.resume()
        for _ in range(50):
            if store.status() == "redis":
                break
            await asyncio.sleep(0.05)
        assert store.status() == "redis"
    finally:
        server.resume()
        await store.close()
        server.stop()


async def test_cooldown_on_one_replica_is_seen_by_the_other(redis_server: RedisServer) -> None:
    prefix = f"cd{time.monotonic_ns()}:"
    a_store, b_store = (await redis_store(redis_server, prefix),
                        await redis_store(redis_server, prefix))
    a = SharedCooldowns(Cooldowns(2, 60, 30), a_store, ["x", "y"])
    b = SharedCooldowns(Cooldowns(2, 60, 30), b_store, ["x", "y"])
    try:
        a.failure("x")
        b.failure("x")  # two failures, one on each replica: the shared count reaches 2
        await asyncio.sleep(0.05)
        await a.sync()
        await b.sync()
        assert a.cooling() == b.cooling() == {"x"}
        b.success("x")  # answered on B: healthy for everyone
        await asyncio.sleep(0.05)
        await a.sync()
        assert "x" not in a.cooling()
    finally:
        await a_store.close()
        await b_store.close()


async def test_pacing_state_is_one_controller_across_replicas(redis_server: RedisServer
                                                              ) -> None:
    prefix = f"pace{time.monotonic_ns()}:"
    now = [1000.0]
    pacers, states = [], []
    for _ in range(2):
        store = await redis_store(redis_server, prefix)
        state = SharedPacingState(PacingSnapshot(0.5, 0.0, now[0], now[0], now[0]), store)
        pacers.append(Pacer(3.6, 0.5, 2.0, time_constant_s=60, state=state,
                            clock=lambda: now[0]))
        states.append(state)
    try:
        now[0] += 30  # past the warm-up window
        pacers[0].record(0.01)
        pacers[1].record(0.01)
        for s in states:
            await s.sync()
        for s in states:
            await s.sync()
        alone = Pacer(3.6, 0.5, 2.0, time_constant_s=60, clock=lambda: now[0])
        alone.state = type(alone.state)(PacingSnapshot(0.5, 0.0, 1000.0, 1000.0, 1000.0))
        alone.record(0.01)
        alone.record(0.01)
        # Both replicas see the spend of both, as one process would.
        for p in pacers:
            assert p.spend_usd_per_hour() == pytest.approx(alone.spend_usd_per_hour())
        now[0] += 10
        stepped = pacers[0].tradeoff()
        await states[0].sync()
        await states[1].sync()
        assert pacers[1].current == pytest.approx(stepped)
        assert stepped != 0.5
    finally:
        for s in states:
            await s.store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("patch", "field"), [
    ({"state": {"redis_url": "http://redis:6379"}}, "state.redis_url"),
    ({"state": {"redis_url": "redis://r:6379", "timeout_s": 0}}, "state.timeout_s"),
    ({"server": {"workers": 0}}, "server.workers"),
    ({"server": {"rate_limits": {"requests": 0}}}, "server.rate_limits.requests"),
    ({"sessions": {"ttl_s": -1}}, "sessions.ttl_s"),
])
def test_bad_scale_settings_name_their_field(tmp_path: Path, patch: dict[str, object],
                                             field: str) -> None:
    from helpers import gateway_settings, tiny_checkpoint

    from gateway.config import ConfigError, parse_settings

    settings = {**gateway_settings(tiny_checkpoint(tmp_path / "ck"), "http://127.0.0.1:9/v1"),
                **patch}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_settings(settings)


async def test_keys_set_during_an_outage_reach_redis_when_it_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r").start()
    store = await redis_store(server, "replay:", reconnect_s=0.1)
    try:
        server.stop()
        await store.set("mine", "weak", 60)  # marks Redis down: kept in the process
        await store.set("theirs", "mine-too", 60)
        await store.set("gone", "x", 60)
        await store.delete("gone")
        assert store.status() == "degraded"
        server.start()  # empty, as after a crash
        other = server.client()
        other.set("replay:theirs", "other-replica")  # another replica wrote it first
        for _ in range(50):
            if store.status() == "redis":
                break
            await asyncio.sleep(0.05)
        assert store.status() == "redis"
        assert other.get("replay:mine") == "weak"
        assert 0 < other.pttl("replay:mine") <= 60_000
        assert other.get("replay:theirs") == "other-replica"  # not overwritten
        assert other.get("replay:gone") is None
        assert await store.get("mine") == "weak"
    finally:
        await store.close()
        server.stop()
