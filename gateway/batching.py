"""Micro-batching of embedding calls, off the event loop.

Concurrent requests wait up to `window_s` (or until `max_batch` texts are queued) and are
embedded together in one worker thread call: a batch of 16 costs far less than 16 calls on a
2-core machine. One batch runs at a time, so CPU-bound embedders do not oversubscribe cores.

The worker is the batcher's own thread, not the event loop's default executor: LiteLLM runs
part of every completion call in that executor, so a batch there could queue behind completion
work, and a slow batch (the local embedder, tens of ms) would hold a worker LiteLLM needs.

Texts over `LONG_CHARS` are embedded on a second worker thread at low OS priority
(`lowprio.py`), apart from the short ones: a text at the local embedder's full window costs
~25x a short question (~85 ms of ONNX), and on the one worker every short text queued behind it
waited for it. ONNX Runtime releases the interpreter lock while it runs and its sessions may be
run from two threads at once; one long batch runs at a time, so they do not pile onto the CPU.

A batch that fails is retried text by text (unless the embedder is unavailable altogether), so
a text the embedder cannot take fails its own request only.

An embedder that says it is `inline` (an optional attribute: a static embedder costs
microseconds a text) is called on the event loop, unbatched: the hop to the worker thread and
back costs more than its embedding, and under load it waits behind every other callback on the
loop (measured with a static embedder at concurrency 1-64: 37 ms mean queueing per text,
140 ms per routed embedding, for 0.06 ms of embedding).

`observe_stage(stage, seconds)` reports where the time goes: `embed_queue` per text (from
`embed()` to its batch starting: the window, the previous batch, the hop to the worker), and per
batch the embedder's own stages when it reports them (`last_stages` of the local embedders:
`embed_tokenize`, `embed_onnx`; their graphs pool, so there is no separate pooling stage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from router_core import Embedder, EmbedderUnavailableError
from router_core.text import truncate

from .lowprio import low_priority_executor

Observer = Callable[[float, int], None]
#: Texts longer than this (characters, after truncation) are embedded after the batch's others.
LONG_CHARS = 1000
StageObserver = Callable[[str, float], None]


class MicroBatcher:
    def __init__(self, embedder: Embedder, window_s: float = 0.002, max_batch: int = 32,
                 timeout_s: float = 10.0, observe: Observer | None = None,
                 observe_stage: StageObserver | None = None) -> None:
        self.embedder = embedder
        self.window_s = window_s
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.observe = observe
        self.observe_stage = observe_stage
        self.inline = bool(getattr(embedder, "inline", False))
        #: (text, its waiter, when it was queued)
        self._queue: list[tuple[str, asyncio.Future[npt.NDArray[np.float32]], float]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._long_worker: ThreadPoolExecutor | None = None
        #: Long batches in flight on `_long_worker` (cancelled by `stop`).
        self._long_tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2-embed")
        self._long_worker = low_priority_executor("r2-embed-long")
        self._task = asyncio.create_task(self._run(), name="r2-embed-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task in list(self._long_tasks):
            task.cancel()
        for _, fut, _ in self._queue:
            if not fut.done():
                fut.cancel()
        self._queue.clear()
        for worker in (self._worker, self._long_worker):
            if worker is not None:
                # A batch still running finishes in its thread; nothing waits for it.
                worker.shutdown(wait=False, cancel_futures=True)
        self._worker = self._long_worker = None

    async def embed(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one text; raises `EmbedderUnavailableError` after `timeout_s`."""
        assert self._wakeup is not None, "MicroBatcher.start() was not called"
        if self.inline:
            start = time.perf_counter()
            vector: npt.NDArray[np.float32] = self.embedder.embed(
                [truncate(text, self.embedder.max_chars)])[0]
            if self.observe is not None:
                self.observe(time.perf_counter() - start, 1)
            return vector
        fut: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._queue.append((truncate(text, self.embedder.max_chars), fut, time.perf_counter()))
        self._wakeup.set()
        try:
            # No shield: a waiter that times out or is cancelled (client gone) cancels its
            # future, so the batcher skips the text instead of embedding it for nobody.
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            raise EmbedderUnavailableError("embedding timed out") from None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Wait for company only when others are already queued: a lone request on an idle
            # gateway goes straight through; under load the queue fills while we embed.
            if self.window_s > 0 and 1 < len(self._queue) < self.max_batch:
                await asyncio.sleep(self.window_s)
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                live = [x for x in batch if not x[1].done()]
                if self.observe_stage is not None:
                    now = time.perf_counter()
                    for _, _, queued in live:
                        self.observe_stage("embed_queue", now - queued)
                # Long texts on their own low-priority worker, not awaited here: the short
                # texts queued behind them go on being embedded meanwhile (module docstring).
                short = [(t, f) for t, f, _ in live if len(t) <= LONG_CHARS]
                long = [(t, f) for t, f, _ in live if len(t) > LONG_CHARS]
                if long:
                    task = asyncio.create_task(self._embed_batch(long, self._long_worker))
                    self._long_tasks.add(task)
                    task.add_done_callback(self._long_tasks.discard)
                if short:
                    await self._embed_batch(short, self._worker)

    async def _embed_batch(
        self, batch: list[tuple[str, asyncio.Future[npt.NDArray[np.float32]]]],
        worker: ThreadPoolExecutor | None,
    ) -> None:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            vectors = await loop.run_in_executor(
                worker, self.embedder.embed, [t for t, _ in batch])
        except EmbedderUnavailableError as exc:  # the embedder is down: for everyone
            _deliver(batch, [exc] * len(batch))
            return
        except Exception:  # noqa: BLE001 - one text may be at fault: isolate it
            # Each text alone, so that a text the embedder cannot take fails by itself
            # instead of failing every request that happened to share its batch.
            _deliver(batch, await loop.run_in_executor(
                worker, self._embed_each, [t for t, _ in batch]))
            return
        if self.observe is not None:
            self.observe(time.perf_counter() - start, len(batch))
        stages = getattr(self.embedder, "last_stages", None)
        if self.observe_stage is not None and isinstance(stages, dict):
            for stage, seconds in stages.items():
                self.observe_stage(f"embed_{stage}", seconds)
        _deliver(batch, list(vectors))

    def _embed_each(self, texts: list[str]) -> list[npt.NDArray[np.float32] | BaseException]:
        out: list[npt.NDArray[np.float32] | BaseException] = []
        for text in texts:
            try:
                out.append(self.embedder.embed([text])[0])
            except Exception as exc:  # noqa: BLE001 - delivered to this text's waiter only
                out.append(exc)
        return out


def _deliver(batch: list[tuple[str, asyncio.Future[npt.NDArray[np.float32]]]],
             results: list[npt.NDArray[np.float32] | BaseException]) -> None:
    for (_, fut), result in zip(batch, results, strict=True):
        if fut.done():
            continue
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)
