"""`r2 collect QUESTIONS --config gateway.yaml --policies 10,50,unlimited --out FILE.jsonl`.

Builds outcome data for the configured deployments (see docs/collect.md); rerunning the same
command resumes. Exit codes: 0 every row is in FILE, 1 some rows are missing (failed calls or
the cost cap; rerun to continue), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "collect", help="build outcome data for your deployments (question x model x policy)",
        description="Ask every question under every policy of every model through the "
                    "gateway's forwarding path, score the answers and append outcome rows "
                    "that `r2 train` and `r2 eval` read. Rerun to resume.")
    p.add_argument("questions", nargs="+", metavar="QUESTIONS",
                   help="question files (.jsonl): multiple choice or plain prompts")
    p.add_argument("--config", required=True, help="gateway YAML (deployments, prices, judge)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="outcome file to append")
    p.add_argument("--policies", required=True, metavar="LIST",
                   help="comma list of token budgets, `unlimited` and named policies")
    p.add_argument("--models", metavar="LIST",
                   help="comma list of deployment names (default: all but the judge)")
    p.add_argument("--policy-file", metavar="FILE",
                   help="instructions of named policies (the file `r2 train --policies` reads)")
    p.add_argument("--samples", type=int, default=1, help="answers per arm; score = mean")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature sent with every answer (default: not sent)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight per model")
    p.add_argument("--judge-concurrency", type=int, default=4, help="judge calls in flight")
    p.add_argument("--retries", type=int, default=3, help="retries of a transient failure")
    p.add_argument("--max-cost-usd", type=float, help="hard cap on the money this run spends")
    p.add_argument("--limit", type=int, help="at most N questions from each file")
    p.add_argument("--json-summary", metavar="OUT", help="also write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..collect import RunOptions, collect, format_summary
    from ..config import ConfigError, load_settings

    if args.max_cost_usd is not None and args.max_cost_usd < 0:
        raise ConfigError("--max-cost-usd must be >= 0")
    if args.retries < 0 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--retries must be >= 0 and --limit >= 1")
    options = RunOptions(samples=args.samples, concurrency=args.concurrency,
                         judge_concurrency=args.judge_concurrency, retries=args.retries,
                         max_cost_usd=args.max_cost_usd, temperature=args.temperature,
                         progress=not args.no_progress)
    settings = load_settings(args.config)
    result = collect(settings, args.questions, args.out, args.policies, args.models,
                     args.policy_file, options, args.limit)
    for warning in result.warnings:
        print(f"r2 collect: warning: {warning}", file=sys.stderr)
    report = result.report
    if result.repaired_bytes:
        print(f"cut a torn last line ({result.repaired_bytes} bytes) left by an interrupted run",
              file=sys.stderr)
    print(format_summary(result.summary))
    print(f"\nrows: {report.written} written, {result.skipped} already in {args.out}, "
          f"{report.missing} missing; spent ${report.spent_usd:.6f} "
          f"(judge ${report.judge_usd:.6f}); meta {result.meta_path}")
    for reason, count in report.failures.most_common():
        print(f"  failed x{count}: {reason}", file=sys.stderr)
    for name, reason in report.stopped_deployments.items():
        print(f"  stopped asking {name}: {reason}", file=sys.stderr)
    if report.cost_cap_hit:
        print(f"  stopped at the cost cap (${args.max_cost_usd:g}); rerun with a higher "
              "--max-cost-usd to continue", file=sys.stderr)
    if args.json_summary:
        with open(args.json_summary, "w", encoding="utf-8") as fh:
            json.dump({"arms": [s.to_json() for s in result.summary],
                       "written": report.written, "skipped": result.skipped,
                       "missing": report.missing,
                       "spent_usd": report.spent_usd, "judge_usd": report.judge_usd,
                       "cost_cap_hit": report.cost_cap_hit}, fh, indent=1)
    if report.complete:
        return 0
    print("r2 collect: some rows are missing; rerun the same command to resume",
          file=sys.stderr)
    return 1
