"""`DecisionLog`: the object the app holds (`app.state.decision_log`) when `log:` is set.

It owns the writer thread and the store, gives the router its decision hook (keeping the
embedding, exploring when configured), turns finished requests into queued records
(`on_finish`, a request observer the request-log middleware tells once per request),
stores feedback and answers `summary(since)`, the report dict shared with `r2 report --json`
and the dashboard.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import SecretStr
from starlette.datastructures import Headers

from router_core import Decision
from router_core.scoring import Scorer

from ..apikeys import presented_key
from .explore import Explorer, KeepEmbedding, LoggedDecision
from .record import Finished, Trace, embedding_of, new_trace, to_row
from .report import summarize
from .settings import ExploreSettings, LogSettings
from .store import SQLStore, open_store
from .writer import Writer

DecisionHook = Callable[[Decision, Any], Decision]


def decision_hook(log: LogSettings | None, explore: ExploreSettings | None,
                  scorer: Scorer) -> DecisionHook | None:
    """What `Service.decide` passes each decision through (None: nothing to do)."""
    if explore is not None and explore.rate > 0:
        return Explorer(explore, scorer)
    if log is not None:
        return KeepEmbedding()
    return None


class DecisionLog:
    def __init__(self, settings: LogSettings, scorer: Scorer, registry: CollectorRegistry,
                 api_keys: Sequence[SecretStr] = ()) -> None:
        self.settings = settings
        self.scorer = scorer
        self.target = settings.database_url or settings.path
        self._keys = [k.get_secret_value().encode() for k in api_keys]
        self.records = Counter("r2_decision_log_records_total",
                               "Decision records by result: written, or why dropped "
                               "(queue_full, store_error, convert_error)", ["result"],
                               registry=registry)
        retention = None if settings.retention_days is None else settings.retention_days * 86400
        self.writer = Writer(self.open, self._convert, settings.queue_size, settings.batch_size,
                             settings.flush_interval_s, retention,
                             lambda result, n: self.records.labels(result).inc(n))
        Gauge("r2_decision_log_queue", "Decision records waiting for the writer",
              registry=registry).set_function(lambda: self.writer.queue.qsize())
        self._reader: SQLStore | None = None
        self._reading = threading.Lock()  # one reader connection, one report at a time

    def open(self) -> SQLStore:
        return open_store(self.target)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.writer.start()

    def stop(self) -> None:
        self.writer.stop()
        with self._reading:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- request side -------------------------------------------------------------------------
    def trace(self, body: dict[str, Any]) -> Trace:
        return new_trace(body, self.settings.content)

    def key_id(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """`key-N`: which configured key authenticated the request (never the key)."""
        if not self._keys:
            return None
        token = presented_key(Headers(raw=list(headers))).encode()
        if token:
            for i, key in enumerate(self._keys):
                if hmac.compare_digest(token, key):
                    return f"key-{i}"
        return None

    def on_finish(self, scope: dict[str, Any], state: dict[str, Any], status: int,
                  latency_s: float) -> None:
        """Queue the record of a finished routed request (cheap; never raises)."""
        outcome = state.get("outcome")
        trace = getattr(outcome, "trace", None)
        if outcome is None or not isinstance(trace, Trace):
            return
        self.writer.submit(Finished(
            time.time(), outcome.request_id, self.key_id(scope.get("headers") or ()),
            str(scope.get("path"))[:64], outcome, trace, status, state.get("error"),
            latency_s * 1000.0))

    async def feedback(self, request_id: str, score: float, comment: str | None) -> bool:
        """Store feedback on a record; False when no record has that id. Raises
        `RuntimeError` when the store cannot take it (full queue, store down)."""
        done = self.writer.feedback(request_id, score, comment)
        return await asyncio.wait_for(asyncio.wrap_future(done), timeout=10.0)

    async def summary(self, since: float | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._summary, since)

    def _summary(self, since: float | None) -> dict[str, Any]:
        with self._reading:
            if self._reader is None:
                self._reader = self.open()
            try:
                return summarize(self._reader, since)
            except Exception:
                self._reader.close()
                self._reader = None
                raise

    def flush(self, timeout: float = 10.0) -> bool:
        return self.writer.flush(timeout)

    # -- writer thread ------------------------------------------------------------------------
    def _convert(self, items: list[Finished]) -> tuple[list[tuple[Any, ...]],
                                                      list[tuple[Any, ...]]]:
        rows = [to_row(item, self.settings) for item in items]
        return rows, self._arm_totals(items)

    def _arm_totals(self, items: list[Finished]) -> list[tuple[Any, ...]]:
        """Every arm's predicted quality and cost summed over the batch's routed requests (one
        GEMM): what always sending them to that arm would have cost."""
        embs, tokens = [], []
        for item in items:
            decision = item.outcome.decision
            emb = embedding_of(decision)
            if emb is not None and emb.shape[0] == self.scorer.dim:
                embs.append(emb)
                tokens.append(float(decision.input_tokens))
        if not embs:
            return []
        scores = self.scorer.predict(np.vstack(embs), np.asarray(tokens))
        q, c = scores.quality.sum(axis=0), scores.cost.sum(axis=0)
        ts = max(item.ts for item in items)
        labels = self.scorer.labels()
        observed = self.scorer.ckpt.arrays.get("arm_observed")
        out = []
        for i, model in enumerate(self.scorer.models):
            for j, label in enumerate(labels):
                if observed is not None and observed[i, j] <= 0.5:
                    continue
                out.append((ts, model, str(label), len(embs), float(q[i, j]), float(c[i, j])))
        return out


__all__ = ["DecisionLog", "LoggedDecision", "decision_hook"]
