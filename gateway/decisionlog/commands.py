"""The `--from-log` halves of `r2 train` and `r2 calibrate` (their parsers stay in
gateway/commands/; these functions do the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_from_log_flags(p: Any, train: bool) -> None:
    p.add_argument("--from-log", metavar="DB",
                   help="decision log (SQLite file or postgresql:// URL): "
                        + ("refit on its feedback-scored records, weighted by inverse "
                           "propensity" if train else "calibrate on its logged requests"))
    p.add_argument("--since", metavar="T", help="with --from-log: records from T on "
                   "(epoch seconds, ISO date/time, or an age such as 7d)")
    if train:
        p.add_argument("--checkpoint", metavar="DIR",
                       help="with --from-log alone: the checkpoint to refit (the one served "
                            "when the log was written)")


def train_from_log(args: argparse.Namespace, train_data: Any) -> int:
    """`r2 train --from-log DB [DATA...] --out DIR [--checkpoint BASE]`."""
    from router_core import InvalidInputError, load_checkpoint, save_checkpoint
    from router_core.tradeoff import calibrate

    from ..commands.report import open_log, parse_since
    from .learn import read_queries, read_scored, refit

    if args.data:
        train_data(args)  # the outcome files first, into --out: that is the base
        base_dir = args.out
    elif args.checkpoint:
        base_dir = args.checkpoint
    else:
        raise InvalidInputError("--from-log alone needs --checkpoint DIR (the checkpoint that "
                                "served the log), or outcome files to train the base on",
                                param="checkpoint")
    base = load_checkpoint(base_dir)
    since = parse_since(args.since)
    store = open_log(args.from_log)
    try:
        rows = read_scored(store, base, since)
        emb, tokens = read_queries(store, base.embedder.dim, since)
    finally:
        store.close()
    print(f"log: {len(rows.ids)} feedback-scored records over {len(set(rows.arm.tolist()))} "
          f"served arms (inverse-propensity weights {rows.weight.min():.3g}.."
          f"{rows.weight.max():.3g})")
    result = refit(base, rows)
    from router_core import Scorer

    ckpt = result.checkpoint
    ckpt.tradeoff = calibrate(Scorer(ckpt), emb, tokens,
                              source=f"decision log ({emb.shape[0]} requests)")
    save_checkpoint(ckpt, args.out)
    v = result.validation
    if v:
        print(f"validation AUDC (off-policy IPS estimate on {v['records']} held-out records): "
              f"base {v['base']['audc']:.4f} -> refit {v['refit']['audc']:.4f} "
              f"(change {v['change']:+.4f}; records matching the router's pick per lambda: "
              f"{v['base']['matched_records_mean']:.1f} -> "
              f"{v['refit']['matched_records_mean']:.1f})")
        print(f"mean feedback at the logged lambdas (IPS): base "
              f"{v['base']['value_at_logged_lambda']:.4f} ({v['base']['matched_at_logged_lambda']}"
              f" records match) -> refit {v['refit']['value_at_logged_lambda']:.4f} "
              f"({v['refit']['matched_at_logged_lambda']} match)")
    else:
        print("validation AUDC: too few records to hold any out")
    print(f"wrote {Path(args.out)}: refit of {base_dir} on {result.rows} records "
          f"({result.arms} arms, alpha {result.alpha:g})")
    return 0


def calibrate_from_log(args: argparse.Namespace, ckpt: Any) -> tuple[Any, Any, str]:
    """Embeddings, input tokens and a source name for `r2 calibrate --from-log DB`."""
    from ..commands.report import open_log, parse_since
    from .learn import read_queries

    store = open_log(args.from_log)
    try:
        emb, tokens = read_queries(store, ckpt.embedder.dim, parse_since(args.since))
    finally:
        store.close()
    return emb, tokens, f"decision log ({emb.shape[0]} requests)"
