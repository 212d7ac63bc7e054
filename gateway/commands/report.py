"""`r2 report --log DB [--since T] [--json OUT] [--plot OUT.png]`: spend, calibration, feedback
and the estimated saving of a decision log (SQLite file or `postgresql://` URL)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="spend, calibration, feedback and savings of a decision log",
        description="Requests and spend per model and policy, realised vs predicted cost and "
                    "output tokens, truncation rate per (model, budget), feedback scores and "
                    "the estimated saving against always the best single arm.")
    p.add_argument("--log", required=True, metavar="DB",
                   help="decision log: a SQLite file or a postgresql:// URL")
    p.add_argument("--since", metavar="T",
                   help="only records from T on: epoch seconds, an ISO date/time, or an age "
                        "such as 30m, 24h, 7d")
    p.add_argument("--json", metavar="OUT", help="write the report dict as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot spend and output-token calibration")
    p.set_defaults(func=run)


def parse_since(text: str | None, now: float | None = None) -> float | None:
    from router_core import InvalidInputError

    if text is None:
        return None
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        return (now if now is not None else time.time()) - float(match[1]) * _UNITS[match[2]]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"--since {value!r}: give epoch seconds, an ISO date/time or an "
                                "age such as 24h", param="since") from None
    return stamp.timestamp()


def open_log(target: str) -> Any:
    """The store of an existing log (a missing SQLite file is an error, not a new log)."""
    from router_core import InvalidInputError

    from ..decisionlog import StoreError, open_store
    from ..decisionlog.store import is_postgres

    if not is_postgres(target) and not Path(target).is_file():
        raise InvalidInputError(f"no decision log at {target}", param="log")
    try:
        return open_store(target)
    except StoreError as exc:
        raise InvalidInputError(str(exc), param="log") from None


def run(args: argparse.Namespace) -> int:
    from ..decisionlog.report import format_report, plot_report, summarize

    since = parse_since(args.since)
    store = open_log(args.log)
    try:
        start = time.perf_counter()
        rep = summarize(store, since)
        elapsed = time.perf_counter() - start
    finally:
        store.close()
    print(format_report(rep))
    print(f"(report computed in {elapsed:.2f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    if args.plot:
        plot_report(rep, args.plot)
    return 0
