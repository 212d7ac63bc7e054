"""Quality-cost plot of an evaluation: every router's Pareto envelope and the single arms.

matplotlib (the `train` extra) is imported when a plot is drawn, with the non-interactive Agg
backend, so this works on a server without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError
from .evaluate import EvalReport
from .metrics import envelope_at

STYLES = {
    "r2": ("tab:red", "-"),
    "point": ("tab:blue", "--"),
    "oracle": ("tab:green", ":"),
    "random": ("tab:gray", "-."),
    "best-single": ("black", (0, (1, 3))),
}


def plot_report(report: EvalReport, out: str | Path, title: str = "") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("--plot needs matplotlib (pip install 'r2-gateway[train]')") from None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, result in report.routers.items():
        color, style = STYLES.get(name, ("tab:purple", "-"))
        # Sampled densely: the envelope is linear in cost, the axis is logarithmic.
        start = float(np.min(result.curve.cost))
        xs = np.geomspace(max(start, 1e-12), max(report.c_hi, start), 400)
        ys = envelope_at(result.curve.cost, result.curve.quality, xs)
        ax.plot(xs, ys, color=color, linestyle=style, label=f"{name} (AUDC {result.audc:.3f})")
    points = report.info.get("tradeoff_points") or []
    if points:  # where x-r2-tradeoff 0, 0.25, ... lands (realised cost and quality)
        ax.scatter([p["cost"] for p in points], [p["quality"] for p in points],
                   color=STYLES["r2"][0], marker="D", s=30, zorder=4, label="r2 x-r2-tradeoff")
        for p in points:
            ax.annotate(f"t={p['tradeoff']:g}", (p["cost"], p["quality"]), fontsize=7,
                        color=STYLES["r2"][0], xytext=(-4, 6), textcoords="offset points")
    arms = report.arms
    ax.scatter(arms.mean_cost, arms.mean_quality, color="black", s=18, zorder=3,
               label="single arms")
    for label, c, q in zip(arms.labels, arms.mean_cost, arms.mean_quality, strict=True):
        ax.annotate(label, (c, q), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.axvspan(report.c_lo, report.c_hi, color="0.95", zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(title or "quality vs cost")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
