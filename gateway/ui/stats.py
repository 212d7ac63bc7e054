"""Live statistics for the dashboard: a ring of per-minute buckets fed as requests finish.

`LiveStats.observe` is a request observer (`gateway/requestlog.py` calls every observer in
`app.state.request_observers` once a response has ended, a stream included); it reads what the
handlers left in the request state (`outcome`: deployment, decision, fallback, realised cost,
truncation) and adds it to the bucket of the current minute. `snapshot()` renders the last
`minutes` buckets as JSON for `/ui/api/live`.

Scope: one process. With several workers (`r2 serve --workers`) each worker keeps its own ring,
and the page shows the worker that answered its poll; Prometheus (`/metrics`, the Grafana board
in deploy/grafana/) is the place for fleet-wide numbers.

Latency quantiles come from a per-bucket histogram with geometric bins (ratio 1.25 from 1 ms),
so p50/p95 are exact to within one bin (+-12%) while a bucket costs a fixed few hundred bytes
whatever the traffic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Minutes kept (and shown).
WINDOW_MINUTES = 60
BUCKET_S = 60.0
#: Latency histogram: bin i holds [LAT_MIN_S * RATIO**(i-1), LAT_MIN_S * RATIO**i).
LAT_MIN_S = 0.001
LAT_RATIO = 1.25
LAT_BINS = 64
_LOG_RATIO = math.log(LAT_RATIO)
#: Endpoints that serve traffic; the dashboard's own polls, routing previews (`/v1/route`),
#: model lists and probes are not traffic.
TRAFFIC_PREFIX = "/v1/"
NOT_TRAFFIC = frozenset({"/v1/route", "/v1/models", "/v1/feedback"})
#: The policy shown for a request served without a routing decision (a deployment named by
#: the client, or the embedder-unavailable fallback).
DIRECT = "direct"


def _lat_bin(seconds: float) -> int:
    if not seconds > LAT_MIN_S:
        return 0
    return min(LAT_BINS - 1, 1 + int(math.log(seconds / LAT_MIN_S) / _LOG_RATIO))


def _quantile(hist: list[int], q: float) -> float | None:
    """The upper edge (seconds) of the bin holding quantile `q`, interpolated geometrically."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            if i == 0:
                return LAT_MIN_S
            lo, hi = LAT_MIN_S * LAT_RATIO ** (i - 1), LAT_MIN_S * LAT_RATIO ** i
            return float(lo * (hi / lo) ** ((rank - seen) / count))
        seen += count
    return LAT_MIN_S * LAT_RATIO ** (LAT_BINS - 1)


@dataclass
class Bucket:
    """One minute of traffic."""

    minute: int
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    fallbacks: int = 0
    spend_usd: float = 0.0
    predicted_usd: float = 0.0
    #: Requests whose realised cost was known (usage reported), and their predicted cost.
    costed: int = 0
    costed_predicted_usd: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * LAT_BINS)
    #: Requests per arm ("model@policy"), and those cut at the budget.
    arms: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """What the dashboard keeps of one finished request."""

    status: int
    seconds: float
    model: str | None = None
    policy: str | None = None
    fallback: bool = False
    predicted_usd: float | None = None
    spend_usd: float | None = None
    truncated: bool = False


def finished_from_state(state: dict[str, Any], status: int, seconds: float) -> Finished:
    """Read a request's outcome (`gateway/chat.py`'s `Outcome`) from its ASGI state."""
    outcome = state.get("outcome")
    if outcome is None:
        return Finished(status, seconds)
    decision = getattr(outcome, "decision", None)
    chosen = decision.chosen if decision is not None else None
    return Finished(
        status, seconds, model=getattr(outcome, "deployment", None),
        policy=str(chosen.budget) if chosen is not None else DIRECT,
        fallback=bool(getattr(outcome, "fallback", None)),
        predicted_usd=chosen.predicted_cost_usd if chosen is not None else None,
        spend_usd=getattr(outcome, "cost_usd", None),
        truncated=bool(getattr(outcome, "truncated", False)))


class LiveStats:
    """The ring of per-minute buckets. Thread-safe (stream ends may finish off the loop)."""

    def __init__(self, minutes: int = WINDOW_MINUTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self.clock = clock
        self._ring: list[Bucket | None] = [None] * minutes
        self._lock = threading.Lock()

    # -- feeding -----------------------------------------------------------------------------
    def observe(self, scope: Mapping[str, Any], state: dict[str, Any], status: int,
                seconds: float) -> None:
        """A request observer (see `gateway/requestlog.py`)."""
        path = str(scope.get("path"))
        if path.startswith(TRAFFIC_PREFIX) and path not in NOT_TRAFFIC:
            self.record(finished_from_state(state, status, seconds))

    def record(self, f: Finished) -> None:
        with self._lock:
            b = self._bucket(int(self.clock() // BUCKET_S))
            b.requests += 1
            if f.status >= 500 or f.status == 0:
                b.errors += 1
            elif f.status >= 400:
                b.client_errors += 1
            b.fallbacks += f.fallback
            b.latency[_lat_bin(f.seconds)] += 1
            if f.model is not None:
                arm = f"{f.model}@{f.policy or DIRECT}"
                b.arms[arm] = b.arms.get(arm, 0) + 1
                if f.truncated:
                    b.truncated[arm] = b.truncated.get(arm, 0) + 1
            if f.predicted_usd is not None:
                b.predicted_usd += f.predicted_usd
            if f.spend_usd is not None:
                b.spend_usd += f.spend_usd
                b.costed += 1
                b.costed_predicted_usd += f.predicted_usd or 0.0

    def _bucket(self, minute: int) -> Bucket:
        slot = minute % self.minutes
        b = self._ring[slot]
        if b is None or b.minute != minute:
            b = self._ring[slot] = Bucket(minute)
        return b

    # -- reading -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The last `minutes` minutes, oldest first, empty minutes included."""
        now = self.clock()
        current = int(now // BUCKET_S)
        with self._lock:
            buckets = []
            for minute in range(current - self.minutes + 1, current + 1):
                b = self._ring[minute % self.minutes]
                buckets.append(b if b is not None and b.minute == minute else Bucket(minute))
            return _render(buckets, now)


TOTALS = ("requests", "errors", "client_errors", "fallbacks", "spend_usd", "predicted_usd",
          "costed", "costed_predicted_usd")


def _render(buckets: list[Bucket], now: float) -> dict[str, Any]:
    total_hist = [0] * LAT_BINS
    arms: dict[str, list[int]] = {}
    minutes: list[dict[str, Any]] = []
    for b in buckets:
        for i, n in enumerate(b.latency):
            total_hist[i] += n
        for arm, n in b.arms.items():
            arms.setdefault(arm, [0, 0])[0] += n
        for arm, n in b.truncated.items():
            arms.setdefault(arm, [0, 0])[1] += n
        minutes.append({
            "start": b.minute * BUCKET_S, "requests": b.requests, "errors": b.errors,
            "client_errors": b.client_errors, "fallbacks": b.fallbacks,
            "p50_ms": _ms(_quantile(b.latency, 0.5)), "p95_ms": _ms(_quantile(b.latency, 0.95)),
            "spend_usd": b.spend_usd, "predicted_usd": b.predicted_usd,
            "costed": b.costed, "costed_predicted_usd": b.costed_predicted_usd,
            "arms": dict(b.arms)})
    totals: dict[str, Any] = {key: sum(getattr(b, key) for b in buckets) for key in TOTALS}
    totals["p50_ms"] = _ms(_quantile(total_hist, 0.5))
    totals["p95_ms"] = _ms(_quantile(total_hist, 0.95))
    arm_rows = []
    for arm, (n, cut) in sorted(arms.items(), key=lambda kv: -kv[1][0]):
        model, _, policy = arm.rpartition("@")
        arm_rows.append({"arm": arm, "model": model, "policy": policy, "requests": n,
                         "truncated": cut, "truncation_rate": cut / n if n else 0.0})
    return {"now": now, "bucket_s": BUCKET_S, "minutes": minutes, "totals": totals,
            "arms": arm_rows}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
