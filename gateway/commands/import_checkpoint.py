"""`r2 import-checkpoint SRC DEST [--trust-pickle]`: convert the published R2-Router release."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("import-checkpoint",
                       help="convert the R2-Router release (joblib) to a pickle-free checkpoint")
    p.add_argument("src", help="the release's r2_router/ folder (config.json + checkpoints/)")
    p.add_argument("dest", help="output checkpoint directory")
    p.add_argument("--protocol", default="r2bench", choices=("r2bench", "generate"),
                   help="how numeric budgets are served: r2bench (default; the R2-Bench "
                        "collection the heads were fitted on: instruction appended to the user "
                        "turn, max_tokens = N + 10) or generate (the release's generate(): a "
                        "system message, no max_tokens)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling the release's joblib files (runs code they contain)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from router_core.upstream_import import import_release

    ckpt = import_release(args.src, args.dest, trust_pickle=args.trust_pickle,
                          protocol=args.protocol)
    heads = len(ckpt.models) * len(ckpt.policies)
    print(f"imported {len(ckpt.models)} models x {len(ckpt.policies)} policies "
          f"({heads} quality heads, {ckpt.embedder.dim}-d {ckpt.embedder.id}) into {args.dest}; "
          f"budgets served as {ckpt.provenance['protocol_description']}; licence notice and "
          "provenance in its README.md")
    return 0
