"""A lean HTTP/1.1 load generator on asyncio streams, for `load.py`.

A Python load generator on the same few cores as the gateway must cost far less per request
than the gateway, or it measures itself: httpx costs about as much per request as the thing under
test. So this speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) over raw streams.
Two shapes: closed loop (N workers back to back: capacity and latency at a concurrency) and
open loop (a fixed arrival rate whatever the answers: soak and overload).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

CLIENT_TIMEOUT_S = 30.0


@dataclass
class Sample:
    status: int  # 0: connection failed or the client gave up (a hang): see `error`
    seconds: float
    retry_after: bool = False
    error: str = ""


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rps(self) -> float:
        """Successful (2xx) answers per second."""
        ok = len(self.samples) - self.non_2xx()
        return ok / self.elapsed_s if self.elapsed_s else 0.0

    def latencies(self, status: int | None = 200) -> list[float]:
        return sorted(s.seconds for s in self.samples if status is None or s.status == status)

    def count(self, status: int) -> int:
        return sum(1 for s in self.samples if s.status == status)

    def non_2xx(self) -> int:
        return sum(1 for s in self.samples if not 200 <= s.status < 300)

    def failures(self) -> dict[str, int]:
        """Non-2xx answers by status, and client-side failures by exception name."""
        out: dict[str, int] = {}
        for s in self.samples:
            if not 200 <= s.status < 300:
                key = s.error or str(s.status)
                out[key] = out.get(key, 0) + 1
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Conn:
    """One keep-alive connection; `post` returns (status, has Retry-After)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.body = b""  # of the last response

    async def post(self, path: str, body: bytes) -> tuple[int, bool]:
        if self.writer is None:
            return await self._post(path, body)
        try:
            return await self._post(path, body)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # The server closed this idle keep-alive connection as we reused it: nothing of
            # the request was processed (no byte came back), so send it on a new connection.
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            self.close()
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> tuple[int, bool]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(),
                                                               len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        self.body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return status, "retry-after" in headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _timed(conn: Conn, path: str, body: bytes) -> Sample:
    start = time.perf_counter()
    try:
        status, retry = await asyncio.wait_for(conn.post(path, body), CLIENT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        conn.close()
        return Sample(0, time.perf_counter() - start, False, type(exc).__name__)
    return Sample(status, time.perf_counter() - start, retry)


async def closed_loop(host: str, port: int, path: str, bodies: list[bytes], concurrency: int,
                      duration_s: float, warmup_s: float = 1.0) -> Result:
    """`concurrency` workers, each sending the next request when the last one is answered."""
    result = Result()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker(offset: int) -> None:
        conn = Conn(host, port)
        i = offset
        while time.perf_counter() < stop_at:
            sample = await _timed(conn, path, bodies[i % len(bodies)])
            i += concurrency
            if time.perf_counter() - sample.seconds >= measure_from:
                result.samples.append(sample)
        conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed_s = time.perf_counter() - measure_from
    return result


async def open_loop(host: str, port: int, path: str, bodies: list[bytes], rate: float,
                    duration_s: float, max_connections: int = 1024) -> Result:
    """Requests start at `rate` per second for `duration_s`, each on an idle connection (or a
    new one, up to `max_connections`), whether or not earlier ones were answered."""
    result = Result()
    idle: list[Conn] = []
    slots = asyncio.Semaphore(max_connections)
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: bytes) -> None:
        async with slots:
            conn = idle.pop() if idle else Conn(host, port)
            sample = await _timed(conn, path, body)
            result.samples.append(sample)
            if conn.writer is not None:
                idle.append(conn)

    start = time.perf_counter()
    n = int(rate * duration_s)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(bodies[i % len(bodies)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    result.elapsed_s = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return result
