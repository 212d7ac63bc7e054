"""The spend-pacing controller (gateway/pacing.py) on a simulated clock and cost model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.pacing import MemoryPacingState, Pacer, PacingSnapshot

SPAN = math.log(40.0)  # the table's cost span: t=0 costs 40x t=1


def simulate(target_per_hour: float, hours: float = 2.0, tau: float = 300.0, rate: float = 1.0,
             bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0,
             miscalibration: float = 2.0) -> tuple[Pacer, list[tuple[float, float, float]]]:
    """Poisson requests; each costs what the table predicts at the current default, times a
    miscalibration factor and lognormal noise (what the feedback has to absorb)."""
    now = [0.0]
    pacer = Pacer(target_per_hour, 0.5, SPAN, tau, bounds, clock=lambda: now[0])
    rng = np.random.default_rng(seed)
    log: list[tuple[float, float, float]] = []
    while now[0] < hours * 3600:
        now[0] += float(rng.exponential(1 / rate))
        t = pacer.tradeoff()
        usd = 0.004 * math.exp(-SPAN * t) * miscalibration * float(rng.lognormal(0, 0.8))
        pacer.record(usd)
        log.append((now[0], usd, t))
    return pacer, log


def spend_per_hour(log: list[tuple[float, float, float]], start: float, end: float) -> float:
    return sum(u for t, u, _ in log if start <= t < end) / (end - start) * 3600


def test_spend_settles_within_ten_percent_after_three_time_constants() -> None:
    target = 3.0  # USD/hour; reachable: 1 req/s spans ~0.7 .. 29 USD/hour here
    pacer, log = simulate(target)
    settled = spend_per_hour(log, 3 * 300, 2 * 3600)
    assert settled == pytest.approx(target, rel=0.10)
    assert pacer.unreachable == 0
    assert pacer.spend_usd_per_hour() == pytest.approx(target, rel=0.3)
    assert 0.0 < pacer.current < 1.0


def test_unreachable_targets_clamp_and_say_so() -> None:
    low, _ = simulate(0.05, hours=1.0)
    assert low.current == 1.0 and low.unreachable == 1
    high, _ = simulate(500.0, hours=1.0)
    assert high.current == 0.0 and high.unreachable == -1


def test_bounds_and_idle_gaps() -> None:
    pacer, _ = simulate(0.05, hours=1.0, bounds=(0.2, 0.7))
    assert pacer.current == 0.7 and pacer.unreachable == 1
    now = [0.0]
    p = Pacer(3.0, 0.5, SPAN, 300.0, clock=lambda: now[0])
    now[0] = 10_000.0  # a long idle gap without spend: one step moves at most tau/10 worth
    assert p.tradeoff() >= 0.5 - 0.1 * 2.0 / SPAN - 1e-9


def test_state_interface_is_what_the_pacer_uses() -> None:
    state = MemoryPacingState(PacingSnapshot(0.3, 0.0, 0.0, 0.0, 0.0))
    now = [0.0]
    p = Pacer(1.0, 0.9, SPAN, 60.0, state=state, clock=lambda: now[0])
    assert p.current == 0.3  # shared state wins over the local start value
    p.record(0.5)
    assert state.read().rate > 0
