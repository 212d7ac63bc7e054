"""Text renderings of an evaluation: the terminal table and a Markdown table for docs."""

from __future__ import annotations

import math

from .evaluate import ROUTERS, EvalReport


def _num(value: float, digits: int = 4) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _opt(value: float | None) -> str:
    return "inf" if value is None else f"{value:.4f}"


def format_table(report: EvalReport, title: str = "") -> str:
    info = report.info
    arms = report.arms
    best = arms.best
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{info.get('split', 'test')} queries with every arm (the common set): "
                 f"{info.get('queries', '?')} ({info.get('queries_missing_arms', 0)} lacking "
                 "some arms left out)")
    lines.append(f"point policy: {info.get('point_policy', '?')} (chosen by "
                 f"{info.get('point_policy_chosen_by', '?')})")
    judged = info.get("judged_queries")
    if isinstance(judged, dict) and len(set(judged.values())) > 1:
        lines.append("judged on (queries where the router's arms were observed): "
                     + ", ".join(f"{k} {v}" for k, v in judged.items())
                     + "; the table compares them on the common set")
    lines.append(f"{'router':<12} {'AUDC':>7} {'QNC':>7} {'peak':>7}")
    for name in ROUTERS:
        if name in report.routers:
            r = report.routers[name]
            lines.append(f"{name:<12} {_num(r.audc):>7} {_num(r.qnc, 3):>7} {_num(r.peak):>7}")
    lines.append(f"best single arm: {arms.labels[best]} (quality {arms.mean_quality[best]:.4f}, "
                 f"cost ${arms.mean_cost[best]:.6f}); cost range ${report.c_lo:.6f} .. "
                 f"${report.c_hi:.6f}")
    by_policy = info.get("point_by_policy")
    if isinstance(by_policy, dict) and len(by_policy) > 1:
        lines.append("point router by policy: AUDC on the common set / on its own set (queries)")
        for label, row in by_policy.items():
            own = row["own"]
            lines.append(f"  {label:<14} {_opt(row['audc'])} / {_opt(own['audc'])} "
                         f"({own['queries']})")
    at = info.get("default_lambda")
    if isinstance(at, dict):
        lines.append(f"r2 at lambda {at['lambda']}: quality {at['quality']:.4f}, "
                     f"cost ${at['cost']:.6f}")
    for p in info.get("tradeoff_points") or ():
        lines.append(f"r2 at tradeoff {p['tradeoff']:<4}: quality {p['quality']:.4f}, cost "
                     f"${p['cost']:.6f} (predicted ${p['predicted_cost']:.6f}, lambda "
                     f"{p['lambda']:.6g})")
    return "\n".join(lines)
