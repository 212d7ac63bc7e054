"""Quality-cost curve metrics: AUDC, QNC and peak quality.

A router swept over lambda gives points (mean realised cost, mean realised quality).

- Envelope: the upper Pareto envelope of the points (those no other point beats on both cost
  and quality), sorted by cost and linearly interpolated; flat to the right of its last point
  and 0 to the left of its first.
- AUDC: the mean of the envelope over cost c in [C_lo, C_hi], where C_lo and C_hi are the
  mean costs of the cheapest and the dearest single arm (the same range for every router).
- QNC: the least cost at which the envelope reaches the best single arm's quality, divided by
  that arm's mean cost; infinity if it never does.
- Peak: the highest quality over the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
GRID_POINTS = 10_001


def pareto_envelope(costs: npt.ArrayLike, qualities: npt.ArrayLike) -> tuple[F64, F64]:
    """The Pareto-optimal points, by increasing cost (and so strictly increasing quality)."""
    c = np.asarray(costs, dtype=np.float64).ravel()
    q = np.asarray(qualities, dtype=np.float64).ravel()
    order = np.lexsort((-q, c))
    keep_c: list[float] = []
    keep_q: list[float] = []
    for i in order:
        if not keep_q or q[i] > keep_q[-1]:
            if keep_c and c[i] == keep_c[-1]:
                continue
            keep_c.append(float(c[i]))
            keep_q.append(float(q[i]))
    return np.array(keep_c), np.array(keep_q)


def envelope_at(costs: npt.ArrayLike, qualities: npt.ArrayLike, at: npt.ArrayLike) -> F64:
    """The envelope evaluated at costs `at` (0 left of the first point, flat right of the last)."""
    ec, eq = pareto_envelope(costs, qualities)
    x = np.asarray(at, dtype=np.float64)
    y = np.interp(x, ec, eq, right=float(eq[-1]))
    return np.where(x < ec[0], 0.0, y)


def audc(costs: npt.ArrayLike, qualities: npt.ArrayLike, c_lo: float, c_hi: float) -> float:
    """Mean of the envelope over [c_lo, c_hi] (a fine uniform grid; the envelope is piecewise
    linear, so this is the integral divided by the range up to grid error)."""
    if not c_hi > c_lo:
        return float(envelope_at(costs, qualities, [c_lo])[0])
    grid = np.linspace(c_lo, c_hi, GRID_POINTS)
    return float(np.mean(envelope_at(costs, qualities, grid)))


def qnc(costs: npt.ArrayLike, qualities: npt.ArrayLike, target_quality: float,
        target_cost: float) -> float:
    """Least envelope cost reaching `target_quality`, over `target_cost`; inf if never."""
    ec, eq = pareto_envelope(costs, qualities)
    tol = 1e-12
    if eq[-1] < target_quality - tol:
        return math.inf
    k = int(np.argmax(eq >= target_quality - tol))
    if k == 0:
        cost = float(ec[0])
    else:  # interpolate on the segment where the envelope crosses the target
        frac = (target_quality - eq[k - 1]) / (eq[k] - eq[k - 1])
        cost = float(ec[k - 1] + frac * (ec[k] - ec[k - 1]))
    return cost / target_cost if target_cost > 0 else math.inf


def peak(qualities: Sequence[float] | F64) -> float:
    return float(np.max(np.asarray(qualities, dtype=np.float64)))
