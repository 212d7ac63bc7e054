"""Quality-cost plot of an evaluation: every router's Pareto envelope and the single arms.

matplotlib (the `train` extra) is imported when a plot is drawn, with the non-interactive Agg
backend, so this works on a server without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def require_matplotlib() -> None:
    """Fail now (before an evaluation) if `--plot` cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DataError("--plot needs matplotlib", field="plot",
                        fix="pip install 'r2-gateway[train]', or drop --plot") from None


def plot_report(report: EvalReport, out: str | Path, title: str = "") -> Path:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
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
    arms = report.arms
    ax.scatter(arms.mean_cost, arms.mean_quality, color="black", s=18, zorder=3,
               label="single arms")
    ax.axvspan(report.c_lo, report.c_hi, color="0.95", zorder=0)
    ax.set_xscale("log")
    lo, hi = float(np.min(arms.mean_cost)), float(np.max(arms.mean_cost))
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(title or "quality vs cost")
    ax.grid(True, alpha=0.3)
    # Outside the axes, so that it never covers a point or a curve.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    # Arm and trade-off labels are laid out together, so that none overlaps another.
    _label_arms(fig, ax, [*arms.labels, *(f"t={p['tradeoff']:g}" for p in points)],
                [*arms.mean_cost, *(p["cost"] for p in points)],
                [*arms.mean_quality, *(p["quality"] for p in points)],
                colors=["black"] * len(arms.labels) + [STYLES["r2"][0]] * len(points))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _label_arms(fig: Any, ax: Any, labels: list[str], xs: Any, ys: Any,
                fontsize: float = 7.0, colors: list[str] | None = None) -> None:
    """Arm labels beside their points, none overlapping another label or a point, all inside
    the axes.

    Greedy in pixel space: each label tries positions right and left of its point, then one
    line higher or lower, two lines, ...; the first box inside the axes that touches no placed
    label and no point wins. A label moved off its point's line gets a thin leader line.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    points = [tuple(ax.transData.transform((float(x), float(y)))) for x, y in zip(xs, ys,
                                                                                 strict=True)]
    line = fontsize * fig.dpi / 72 * 1.3
    pad, dot = 5.0, 4.0
    taken = [(px - dot, py - dot, px + dot, py + dot) for px, py in points]
    to_data = ax.transData.inverted().transform
    order = sorted(range(len(labels)), key=lambda k: (points[k][1], points[k][0]))
    for k in order:
        px, py = points[k]
        probe = ax.text(0, 0, labels[k], fontsize=fontsize)
        width = probe.get_window_extent(renderer).width
        probe.remove()
        best = None
        for step in range(0, 40):
            dy = (step + 1) // 2 * line * (1 if step % 2 else -1) if step else 0.0
            for side in (1, -1):
                x0 = px + pad if side > 0 else px - pad - width
                cand = (x0, py + dy - line / 2, x0 + width, py + dy + line / 2)
                inside = (cand[0] >= box.x0 + 2 and cand[2] <= box.x1 - 2
                          and cand[1] >= box.y0 + 2 and cand[3] <= box.y1 - 2)
                if inside and not any(_overlaps(cand, t) for t in taken):
                    best = (cand, side, dy)
                    break
            if best:
                break
        if best is None:  # nowhere free: right of the point, clamped inside
            x0 = min(px + pad, box.x1 - 2 - width)
            best = ((x0, py - line / 2, x0 + width, py + line / 2), 1, 0.0)
        cand, side, dy = best
        taken.append(cand)
        anchor = (cand[0], py + dy) if side > 0 else (cand[2], py + dy)
        ax.annotate(labels[k], xy=tuple(to_data((px, py))), xytext=tuple(to_data(anchor)),
                    textcoords="data", fontsize=fontsize, va="center",
                    color=colors[k] if colors else "black",
                    ha="left" if side > 0 else "right",
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5}
                    if abs(dy) > 0 else None, annotation_clip=False)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
