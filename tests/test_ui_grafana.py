"""deploy/grafana/r2-gateway.json: it parses, and every PromQL expression names only series a
live gateway exports (scraped from its /metrics after real traffic), with label names those
series carry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from ui_helpers import traffic, ui_gateway

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "r2-gateway.json"
SERIES = re.compile(r"\b(r2_[a-zA-Z0-9_]+)\b")
#: `by (...)` / `without (...)` / `on (...)` / `ignoring (...)` clauses and `{label op "..."}`.
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def exported(text: str) -> dict[str, set[str]]:
    """Sample names (with their _total/_bucket/_count/_sum suffixes) and their label names."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def problems(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What is wrong with one PromQL expression against the exported series."""
    names = set(SERIES.findall(expr))
    if not names:
        return ["no r2_* series"]
    out = [f"not exported: {n}" for n in sorted(names - set(series))]
    labels = set().union(*(series.get(n, set()) for n in names)) | {"le"}
    grouped = [x.strip() for clause in GROUPING.findall(expr) for x in clause.split(",")]
    out += [f"no such label: {x}" for x in grouped + MATCHER.findall(expr)
            if x and x not in labels]
    if "histogram_quantile" in expr and not all(n.endswith("_bucket") for n in names):
        out.append("histogram_quantile over a series that is not a histogram's _bucket")
    return out


def test_dashboard_parses_and_names_only_exported_series(
        make_gateway: Any, standin: Any, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = expressions(dashboard)
    assert len(exprs) >= 15

    gw = ui_gateway(make_gateway, standin, tmp_path, pacing=1.0)  # pacing gauges too
    traffic(gw, standin)  # arms, cuts, a fallback, an upstream error
    series = exported(httpx.get(f"{gw.url}/metrics").text)
    assert "r2_budget_cut_total" in series and "r2_fallbacks_total" in series

    used: set[str] = set()
    for expr in exprs:
        assert problems(expr, series) == [], expr
        used |= set(SERIES.findall(expr))
    # the check itself catches what it is for
    assert problems("sum(rate(r2_request_total[5m]))", series)
    assert problems("sum by (modell) (rate(r2_decisions_total[5m]))", series)
    assert problems('rate(r2_requests_total{endpont="/v1/route"}[5m])', series)
    assert problems("histogram_quantile(0.5, rate(r2_upstream_seconds_sum[5m]))", series)
    assert problems("vector(1)", series)
    # the board covers what the dashboard page shows
    for needed in ("r2_requests_total", "r2_decisions_total", "r2_upstream_seconds_bucket",
                   "r2_upstream_errors_total", "r2_fallbacks_total", "r2_budget_cut_total",
                   "r2_actual_cost_usd_total", "r2_predicted_cost_usd_total",
                   "r2_pacing_target_usd_per_hour"):
        assert needed in used, needed
