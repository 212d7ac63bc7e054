"""The savings and calibration report over a decision log: `r2 report` and `summary()`.

Everything is aggregated in SQL (one GROUP BY over `decisions`, one over `arm_totals`), so a
report over a million records reads no record into Python. The dict is the contract shared
with the dashboard (`docs/production-learning.md`):

    {"requests", "spend_usd", "predicted_spend_usd",
     "by_arm": [{"model", "policy", "requests", "spend_usd", "predicted_cost_usd",
                 "mean_output_tokens", "predicted_output_tokens", "truncation_rate",
                 "feedback_mean", "feedback_count"}],
     "saving": {"baseline_arm", "baseline_cost_usd", "actual_cost_usd", "saving_usd",
                "saving_fraction", "assumptions"}}

plus a few extra keys (`since`, `failed_requests`, `explored_requests`, `feedback_count`,
`feedback_mean`, `requests_with_usage`).
"""

from __future__ import annotations

from typing import Any

from .store import SQLStore

_BY_ARM = """
SELECT model, policy, COUNT(*),
       SUM(COALESCE(cost_usd, 0)),
       SUM(COALESCE(predicted_cost_usd, 0)),
       AVG(completion_tokens),
       AVG(CASE WHEN completion_tokens IS NOT NULL THEN predicted_output_tokens END),
       AVG(CASE WHEN status < 400 THEN truncated END),
       AVG(feedback_score), COUNT(feedback_score),
       SUM(CASE WHEN cost_usd IS NOT NULL THEN 1 ELSE 0 END),
       SUM(CASE WHEN cost_usd IS NOT NULL THEN predicted_cost_usd ELSE 0 END),
       SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
       SUM(explored),
       SUM(COALESCE(cost_usd, predicted_cost_usd, 0)),
       SUM(predicted_quality)
FROM decisions WHERE ts >= ? AND model IS NOT NULL
GROUP BY model, policy ORDER BY model, policy
"""
_ARMS = """
SELECT model, policy, SUM(n), SUM(sum_quality), SUM(sum_cost)
FROM arm_totals WHERE ts >= ? GROUP BY model, policy
"""


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def summarize(store: SQLStore, since: float | None = None) -> dict[str, Any]:
    """The report dict over records with `ts >= since` (all records when None)."""
    start = float(since) if since is not None else -1e300
    rows = store.query(_BY_ARM, (start,))
    by_arm = []
    totals = {"requests": 0, "spend": 0.0, "predicted": 0.0, "usage": 0, "failed": 0,
              "explored": 0, "fb_sum": 0.0, "fb_n": 0, "actual": 0.0, "pred_usage": 0.0,
              "served_quality": 0.0, "decided": 0}
    for (model, policy, n, spend, predicted, mean_out, pred_out, trunc, fb_mean, fb_n, usage,
         pred_usage, failed, explored, actual, quality) in rows:
        n, fb_n = int(n), int(fb_n)
        by_arm.append({
            "model": model, "policy": policy or "none", "requests": n, "spend_usd": float(spend),
            "predicted_cost_usd": float(predicted), "mean_output_tokens": _f(mean_out),
            "predicted_output_tokens": _f(pred_out), "truncation_rate": _f(trunc),
            "feedback_mean": _f(fb_mean), "feedback_count": fb_n,
            "realised_over_predicted_cost": (float(spend) / float(pred_usage)
                                             if usage and pred_usage else None),
        })
        totals["requests"] += n
        totals["spend"] += float(spend)
        totals["predicted"] += float(predicted)
        totals["usage"] += int(usage or 0)
        totals["pred_usage"] += float(pred_usage or 0)
        totals["failed"] += int(failed or 0)
        totals["explored"] += int(explored or 0)
        totals["actual"] += float(actual or 0)
        if quality is not None:
            totals["served_quality"] += float(quality)
            totals["decided"] += n
        if fb_n:
            totals["fb_sum"] += float(fb_mean) * fb_n
            totals["fb_n"] += fb_n
    out: dict[str, Any] = {
        "requests": totals["requests"], "spend_usd": totals["spend"],
        "predicted_spend_usd": totals["predicted"], "by_arm": by_arm,
        "saving": _saving(store, start, totals),
        "since": since, "requests_with_usage": totals["usage"],
        "failed_requests": totals["failed"], "explored_requests": totals["explored"],
        "feedback_count": totals["fb_n"],
        "feedback_mean": totals["fb_sum"] / totals["fb_n"] if totals["fb_n"] else None,
    }
    return out


def _saving(store: SQLStore, start: float, totals: dict[str, Any]) -> dict[str, Any]:
    arms = store.query(_ARMS, (start,))
    arms = [a for a in arms if a[2]]
    actual = float(totals["actual"])
    if not arms:
        return {"baseline_arm": None, "baseline_cost_usd": None, "actual_cost_usd": actual,
                "saving_usd": None, "saving_fraction": None,
                "assumptions": "no per-arm predictions logged (no routed request with an "
                               "embedding in this period)"}
    model, policy, n, sum_q, sum_c = max(
        arms, key=lambda a: (float(a[3]) / int(a[2]), -float(a[4])))
    n = int(n)
    decided = int(totals["decided"]) or n
    # The arm totals cover the routed requests the writer saw with an embedding; scale them to
    # the records counted here (they differ only by records dropped or routed without one).
    baseline = float(sum_c) * decided / n
    # Predicted and realised costs differ (input tokens counted another way, output lengths):
    # the baseline's predicted cost is scaled by what the served traffic's predictions were
    # off by, so that the two sides compare realised with realised.
    factor = (totals["spend"] / totals["pred_usage"]
              if totals["spend"] > 0 and totals["pred_usage"] > 0 else 1.0)
    baseline *= factor
    saving = baseline - actual
    served_q = totals["served_quality"] / decided if decided else float("nan")
    assumptions = (
        f"baseline: every one of the {decided} routed requests sent to {model}@{policy}, the "
        f"arm with the highest mean predicted quality on them ({float(sum_q) / n:.4f}; the "
        f"served arms' mean predicted quality is {served_q:.4f}), priced at its predicted cost "
        "per request (the request's input tokens as the gateway counted them, the arm's "
        "predicted output tokens, the configured prices), scaled by realised/predicted cost "
        f"of the served requests with usage ({factor:.3f}); actual: realised cost from the "
        "provider's usage, or the predicted cost where no usage was reported "
        f"({totals['requests'] - totals['usage']} requests); failed requests count at what "
        "they cost. Quality is predicted, not measured: feedback scores are reported per arm.")
    return {"baseline_arm": f"{model}@{policy}", "baseline_cost_usd": baseline,
            "actual_cost_usd": actual, "saving_usd": saving,
            "saving_fraction": saving / baseline if baseline > 0 else None,
            "assumptions": assumptions}


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"requests {rep['requests']}  spend ${rep['spend_usd']:.6f} (realised, "
             f"{rep['requests_with_usage']} with usage)  "
             f"predicted ${rep['predicted_spend_usd']:.6f}"
             f"  failed {rep['failed_requests']}  explored {rep['explored_requests']}  "
             f"feedback {rep['feedback_count']} (mean {_num(rep['feedback_mean'], '.3f')})", ""]
    head = (f"{'model':<24} {'policy':>12} {'requests':>8} {'spend $':>11} {'pred $':>11} "
            f"{'real/pred':>9} {'out tok':>8} {'pred tok':>8} {'trunc':>6} {'feedback':>12}")
    lines += [head, "-" * len(head)]
    for a in rep["by_arm"]:
        fb = f"{_num(a['feedback_mean'], '.3f')} ({a['feedback_count']})"
        lines.append(
            f"{a['model']:<24} {a['policy']:>12} {a['requests']:>8} {a['spend_usd']:>11.6f} "
            f"{a['predicted_cost_usd']:>11.6f} {_num(a['realised_over_predicted_cost'], '.3f'):>9} "
            f"{_num(a['mean_output_tokens'], '.1f'):>8} "
            f"{_num(a['predicted_output_tokens'], '.1f'):>8} "
            f"{_num(a['truncation_rate'], '.3f'):>6} {fb:>12}")
    s = rep["saving"]
    lines.append("")
    if s["baseline_arm"] is None:
        lines.append(f"saving: not estimated ({s['assumptions']})")
    else:
        lines.append(f"saving vs always {s['baseline_arm']}: ${s['saving_usd']:.6f} of "
                     f"${s['baseline_cost_usd']:.6f} ({_num(s['saving_fraction'], '.1%')}); "
                     f"actual ${s['actual_cost_usd']:.6f}")
        lines.append(f"assumptions: {s['assumptions']}")
    return "\n".join(lines)


def plot_report(rep: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = rep["by_arm"]
    labels = [f"{a['model']}@{a['policy']}" for a in arms]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(arms))
    ax1.bar([i - 0.2 for i in x], [a["spend_usd"] for a in arms], 0.4, label="realised")
    ax1.bar([i + 0.2 for i in x], [a["predicted_cost_usd"] for a in arms], 0.4,
            label="predicted")
    ax1.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("USD")
    ax1.set_title(f"spend per arm ({rep['requests']} requests)")
    ax1.legend()
    ax2.scatter([a["predicted_output_tokens"] or 0 for a in arms],
                [a["mean_output_tokens"] or 0 for a in arms])
    top = max([1.0] + [max(a["predicted_output_tokens"] or 0, a["mean_output_tokens"] or 0)
                       for a in arms])
    ax2.plot([0, top], [0, top], "k--", lw=0.8)
    for a, label in zip(arms, labels, strict=True):
        ax2.annotate(label, (a["predicted_output_tokens"] or 0, a["mean_output_tokens"] or 0),
                     fontsize=7)
    ax2.set_xlabel("predicted output tokens (mean)")
    ax2.set_ylabel("realised output tokens (mean)")
    s = rep["saving"]
    if s["baseline_arm"] is not None:
        ax2.set_title(f"saving vs {s['baseline_arm']}: {_num(s['saving_fraction'], '.1%')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
