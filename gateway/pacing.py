"""Spend pacing: a feedback controller that moves the *default* trade-off so spend tracks a target.

`pacing: {usd_per_hour: X}` in gateway.yaml. Requests that send their own knob keep it; all
realised spend (from upstream usage, priced with the deployment prices) is measured.

The controller, with `tau = time_constant_s`:

- measurement: an exponentially weighted spend rate with time constant `tau/4` (each spend of
  `x` USD adds `x/(tau/4)` to a rate that decays as `exp(-dt/(tau/4))`; bias-corrected while the
  window is still filling);
- control: integral action on the log error, scaled by the checkpoint's calibrated cost span
  `R = log(C(t=0)/C(t=1))` (the table makes `log C` about linear in `t` with slope `-R`):
  `dt_knob/dtime = log(rate/target) / (R * tau)`. Without the measurement lag the log error
  would decay as `exp(-time/tau)`; with the `tau/4` window the loop is critically damped, and
  spend is within 10% of the target after about `3*tau` for a steady load;
- bounds: the trade-off stays within `[min_tradeoff, max_tradeoff]` (the integrator cannot wind
  up past them), the log error per step is clipped to `[-2, 2]`, and one step covers at most
  `tau/10` of elapsed time (a long idle gap does not make one big jump);
- unreachable: at a bound while the error still pushes past it by more than 10% (the target is
  below the cheapest or above the dearest spend): `unreachable` is +1 (overspending at the
  cheapest setting) or -1 (cannot spend that much), 0 otherwise.

The state lives behind `PacingState` (read and an atomic read-modify-write) so that replicas
can share it: `MemoryPacingState` in process, `gateway.state.pacing.SharedPacingState` through
the shared store. Steps are taken lazily when the default is read (no background task), on the
injected `clock`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from router_core import Checkpoint
from router_core.tradeoff import CALIBRATE_HINT, Knob

from .config import ConfigError, GatewaySettings

DEFAULT_TRADEOFF = 0.5
#: The release's default lambda, for uncalibrated checkpoints without a configured default.
LEGACY_LAMBDA = 0.99999
#: The measurement window as a fraction of the time constant (critically damped loop).
WINDOW_FRACTION = 0.25
#: Controller steps per time constant, and the most elapsed time one step may cover.
STEPS_PER_TAU = 30
MAX_STEP_FRACTION = 0.1
MAX_LOG_ERROR = 2.0
#: At a bound, an error beyond this (10%) means the target cannot be reached.
UNREACHABLE_LOG_ERROR = math.log(1.1)


@dataclass(frozen=True)
class PacingSnapshot:
    tradeoff: float
    #: Spend rate estimate (USD/s) as of `rate_at`, not yet bias-corrected.
    rate: float
    rate_at: float
    started_at: float
    stepped_at: float
    unreachable: int = 0


class PacingState(Protocol):
    """Where the controller keeps its state; one per gateway, or shared by replicas."""

    def read(self) -> PacingSnapshot: ...

    def modify(self, change: Callable[[PacingSnapshot], PacingSnapshot]) -> PacingSnapshot:
        """Apply `change` atomically and return the new snapshot."""
        ...


class MemoryPacingState:
    """In-process state behind a lock (requests on the loop, spend from stream tasks)."""

    def __init__(self, initial: PacingSnapshot) -> None:
        self._snap = initial
        self._lock = threading.Lock()

    def read(self) -> PacingSnapshot:
        return self._snap

    def modify(self, change: Callable[[PacingSnapshot], PacingSnapshot]) -> PacingSnapshot:
        with self._lock:
            self._snap = change(self._snap)
            return self._snap


class Pacer:
    """The spend-pacing controller over a `PacingState`."""

    def __init__(self, usd_per_hour: float, start_tradeoff: float, log_cost_span: float,
                 time_constant_s: float = 600.0, bounds: tuple[float, float] = (0.0, 1.0),
                 state: PacingState | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = usd_per_hour / 3600.0
        self.tau = time_constant_s
        self.window = time_constant_s * WINDOW_FRACTION
        self.bounds = bounds
        # A flat table (span ~0) would make the gain infinite; 0.1 e-folds is a floor.
        self.span = max(log_cost_span, 0.1)
        self.clock = clock
        now = clock()
        start = min(max(start_tradeoff, bounds[0]), bounds[1])
        self.state: PacingState = state or MemoryPacingState(
            PacingSnapshot(start, 0.0, now, now, now))

    # -- measurement ---------------------------------------------------------------------------
    def record(self, usd: float) -> None:
        """Add realised spend (USD) now."""
        if not (usd > 0 and math.isfinite(usd)):
            return
        now = self.clock()

        def add(s: PacingSnapshot) -> PacingSnapshot:
            decayed = s.rate * math.exp(-max(now - s.rate_at, 0.0) / self.window)
            return replace(s, rate=decayed + usd / self.window, rate_at=now)

        self.state.modify(add)

    def _rate(self, s: PacingSnapshot, now: float) -> float:
        decayed = s.rate * math.exp(-max(now - s.rate_at, 0.0) / self.window)
        filled = 1.0 - math.exp(-max(now - s.started_at, 0.0) / self.window)
        return decayed / filled if filled > 1e-9 else 0.0

    def spend_usd_per_hour(self) -> float:
        """The measured (smoothed) spend rate."""
        return self._rate(self.state.read(), self.clock()) * 3600.0

    # -- control ---------------------------------------------------------------------------------
    def tradeoff(self) -> float:
        """The current default trade-off, stepping the controller if a step is due."""
        now = self.clock()
        snap = self.state.read()
        if now - snap.stepped_at < self.tau / STEPS_PER_TAU:
            return snap.tradeoff
        return self.state.modify(lambda s: self._step(s, now)).tradeoff

    def _step(self, s: PacingSnapshot, now: float) -> PacingSnapshot:
        elapsed = now - s.stepped_at
        if elapsed < self.tau / STEPS_PER_TAU:  # another caller stepped meanwhile
            return s
        if now - s.started_at < self.window:  # the rate estimate is still warming up
            return replace(s, stepped_at=now)
        rate = self._rate(s, now)
        error = math.log(rate / self.target) if rate > 0 else -MAX_LOG_ERROR
        error = min(max(error, -MAX_LOG_ERROR), MAX_LOG_ERROR)
        dt = min(elapsed, self.tau * MAX_STEP_FRACTION)
        lo, hi = self.bounds
        t = min(max(s.tradeoff + dt / self.tau * error / self.span, lo), hi)
        unreachable = 0
        if t >= hi and error > UNREACHABLE_LOG_ERROR:
            unreachable = 1
        elif t <= lo and error < -UNREACHABLE_LOG_ERROR:
            unreachable = -1
        return replace(s, tradeoff=t, stepped_at=now, unreachable=unreachable)

    @property
    def unreachable(self) -> int:
        return self.state.read().unreachable

    @property
    def current(self) -> float:
        """The trade-off now, without stepping (for gauges)."""
        return self.state.read().tradeoff


# -- wiring -----------------------------------------------------------------------------------
def default_knob(settings: GatewaySettings, ckpt: Checkpoint) -> Knob:
    """The knob for requests that send none: `default_tradeoff` or `default_lambda`; with
    neither, trade-off 0.5 on a calibrated checkpoint and the release's lambda 0.99999 else."""
    if settings.default_tradeoff is not None:
        if ckpt.tradeoff is None:
            raise ConfigError(f"default_tradeoff: {CALIBRATE_HINT}")
        return Knob("tradeoff", settings.default_tradeoff)
    if settings.default_lambda is not None:
        return Knob("lambda", settings.default_lambda)
    if ckpt.tradeoff is not None:
        return Knob("tradeoff", DEFAULT_TRADEOFF)
    return Knob("lambda", LEGACY_LAMBDA)


def make_pacer(settings: GatewaySettings, ckpt: Checkpoint, default: Knob,
               clock: Callable[[], float] = time.monotonic) -> Pacer | None:
    cfg = settings.pacing
    if cfg is None:
        return None
    if ckpt.tradeoff is None:
        raise ConfigError(f"pacing: {CALIBRATE_HINT}")
    start = default.value if default.kind == "tradeoff" else DEFAULT_TRADEOFF
    return Pacer(cfg.usd_per_hour, start, ckpt.tradeoff.log_cost_span, cfg.time_constant_s,
                 (cfg.min_tradeoff, cfg.max_tradeoff), clock=clock)
