"""The background writer: records leave the request path through a bounded queue.

`submit` never blocks: when the queue is full the record is dropped and counted. One daemon
thread takes what is queued, up to `batch_size` records or `flush_interval_s`, converts them and
writes them in one transaction. A store that fails (a read-only file, a database that went
away) costs only its records: they are counted as dropped, the connection is reopened after a
back-off, and requests never wait for it. Feedback goes through the same queue, so it always
lands after the record it scores.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .store import SQLStore

log = logging.getLogger("r2.decisionlog")
#: Seconds between attempts to reopen a store that failed.
REOPEN_S = 2.0
#: Seconds between retention sweeps.
SWEEP_S = 3600.0


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str
    score: float
    comment: str | None
    done: Future[bool]


@dataclass(frozen=True)
class FlushItem:
    done: Future[bool]


_STOP = object()
Convert = Callable[[list[Any]], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]


class Writer:
    def __init__(self, open_store: Callable[[], SQLStore], convert: Convert, queue_size: int,
                 batch_size: int, flush_interval_s: float, retention_s: float | None,
                 counted: Callable[[str, int], None]) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._open = open_store
        self._convert = convert
        self._batch = batch_size
        self._interval = flush_interval_s
        self._retention = retention_s
        self._count = counted
        self._store: SQLStore | None = None
        self._retry_at = 0.0
        # None: never swept. Not 0.0: time.monotonic() counts from boot, so on a machine up for
        # less than SWEEP_S the first sweep would wait until the hour was up.
        self._swept: float | None = None
        self._thread: threading.Thread | None = None

    # -- request side (event loop) ---------------------------------------------------------
    def submit(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self._count("queue_full", 1)
            return False

    def feedback(self, request_id: str, score: float, comment: str | None) -> Future[bool]:
        done: Future[bool] = Future()
        try:
            self.queue.put_nowait(FeedbackItem(request_id, score, comment, done))
        except queue.Full:
            done.set_exception(RuntimeError("decision log queue full"))
        return done

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown, reports)."""
        done: Future[bool] = Future()
        try:
            self.queue.put(FlushItem(done), timeout=timeout)
            return done.result(timeout)
        except Exception:  # noqa: BLE001 - full or stuck: report not flushed
            return False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="r2-decision-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self._connected()  # create the log now: a bad path shows in the log at start-up
        running = True
        while running:
            try:
                first = self.queue.get(timeout=self._interval)
            except queue.Empty:
                self._sweep()
                continue
            items = [first]
            deadline = time.monotonic() + self._interval
            while len(items) < self._batch and items[-1] is not _STOP:
                left = deadline - time.monotonic()
                try:
                    items.append(self.queue.get(timeout=left) if left > 0
                                 else self.queue.get_nowait())
                except queue.Empty:
                    break
            running = items[-1] is not _STOP
            self._handle([i for i in items if i is not _STOP])
            self._sweep()
        if self._store is not None:
            self._store.close()

    def _handle(self, items: Sequence[Any]) -> None:
        records: list[Any] = []
        for item in items:
            if isinstance(item, FeedbackItem | FlushItem):
                self._write(records)
                records = []
                if isinstance(item, FeedbackItem):
                    self._feedback(item)
                else:
                    item.done.set_result(True)
            else:
                records.append(item)
        self._write(records)

    def _connected(self) -> SQLStore | None:
        if self._store is None and time.monotonic() >= self._retry_at:
            try:
                self._store = self._open()
            except Exception as exc:  # noqa: BLE001 - retried after a back-off
                log.warning("decision log store unavailable: %s", exc)
                self._retry_at = time.monotonic() + REOPEN_S
        return self._store

    def _failed(self, exc: BaseException) -> None:
        log.warning("decision log write failed (%s); reopening in %.0f s",
                    type(exc).__name__, REOPEN_S)
        if self._store is not None:
            self._store.close()
        self._store = None
        self._retry_at = time.monotonic() + REOPEN_S

    def _write(self, records: list[Any]) -> None:
        if not records:
            return
        try:
            rows, arms = self._convert(records)
        except Exception:  # noqa: BLE001 - a bug in conversion must not stop the writer
            log.exception("decision log: could not convert %d records", len(records))
            self._count("convert_error", len(records))
            return
        store = self._connected()
        if store is None:
            self._count("store_error", len(rows))
            return
        try:
            store.write(rows, arms)
            self._count("written", len(rows))
        except Exception as exc:  # noqa: BLE001 - any store failure: drop and count
            self._failed(exc)
            self._count("store_error", len(rows))

    def _feedback(self, item: FeedbackItem) -> None:
        store = self._connected()
        if store is None:
            item.done.set_exception(RuntimeError("decision log store unavailable"))
            return
        try:
            item.done.set_result(store.feedback(item.request_id, item.score, item.comment))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            item.done.set_exception(RuntimeError("decision log store failed"))

    def _sweep(self) -> None:
        if self._retention is None or (self._swept is not None
                                       and time.monotonic() - self._swept < SWEEP_S):
            return
        store = self._connected()
        if store is None:
            return
        self._swept = time.monotonic()
        try:
            removed = store.delete_before(time.time() - self._retention)
            if removed:
                log.info("decision log retention: deleted %d records", removed)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
