"""One `r2 collect` run as a library call: check everything, resume, ask, summarize.

All checks happen before the first request (deployments, prices, policies, questions, the judge
for open-ended questions, and that the output's meta agrees with this run), so a mistake costs
nothing. The upstream is built here unless a caller (a test) passes its own `Completer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, GatewaySettings
from .plan import (
    deployment_prices,
    parse_labels,
    plan_arms,
    resolve_policies,
    select_deployments,
)
from .questions import load_questions
from .runner import Collector, Completer, RunOptions, RunReport
from .store import OutcomeStore, policy_spec, write_meta
from .summary import ArmSummary, summarize


@dataclass
class CollectResult:
    report: RunReport
    summary: list[ArmSummary]
    skipped: int
    meta_path: Path
    repaired_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def collect(settings: GatewaySettings, question_files: Sequence[str | Path], out: str | Path,
            policies: str, models: str | None = None, policy_file: str | Path | None = None,
            options: RunOptions | None = None, limit: int | None = None,
            upstream: Completer | None = None) -> CollectResult:
    """Collect the missing rows of `out` and return the run's report and summary."""
    import asyncio

    options = options or RunOptions()
    if options.samples < 1 or options.concurrency < 1 or options.judge_concurrency < 1:
        raise ConfigError("--samples and --concurrency must be at least 1")
    deployments = select_deployments(settings, models)
    labels = parse_labels(policies)
    resolved, pfile = resolve_policies(labels, policy_file)
    warnings = []
    override = settings.override_protocol()
    if override is not None:
        resolved = tuple(p.with_protocol(override) for p in resolved)
        warnings.append(f"budget_protocol_override: numeric budgets are collected as "
                        f"{override.describe()}, as the gateway would serve them")
    questions = load_questions(question_files, limit)
    open_ended = sum(not q.is_multiple_choice for q in questions)
    if open_ended and settings.judge is None:
        raise ConfigError(f"judge: {open_ended} question(s) have no multiple-choice answer and "
                          "need an LLM judge; add `judge: {deployment: NAME}` to the config")
    priced = [d.name for d in deployments]
    if open_ended and settings.judge is not None:
        priced.append(settings.judge.deployment)
    prices = deployment_prices(settings, dict.fromkeys(priced))
    store = OutcomeStore.open(out)
    try:
        specs = {str(p.label): policy_spec(p) for p in resolved}
        per_million = {name: (price.input_per_million, price.output_per_million)
                       for name, price in prices.items()}
        meta = write_meta(store.path, {d.name: per_million[d.name] for d in deployments},
                          specs, (str(f) for f in question_files), _run_info(settings, options))
        arms = plan_arms(questions, deployments, resolved, store.done)
        skipped = len(questions) * len(deployments) * len(resolved) - len(arms)
        if upstream is None:
            from ..upstream import Upstream

            upstream = Upstream(settings, prices=per_million)
        collector = Collector(upstream, settings, store, prices, options)
        report = asyncio.run(collector.run(arms)) if arms else RunReport()
    finally:
        store.close()
    wanted = {q.query_id for q in questions}
    rows = [r for r in store.rows if r.get("query_id") in wanted]
    summary = summarize(rows, [d.name for d in deployments], [p.label for p in resolved])
    return CollectResult(report, summary, skipped, meta, store.repaired_bytes, warnings)


def _run_info(settings: GatewaySettings, options: RunOptions) -> dict[str, Any]:
    judge = settings.judge
    return {"samples": options.samples, "temperature": options.temperature,
            "judge": judge.deployment if judge else None}
