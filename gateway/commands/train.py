"""`r2 train`: fit a checkpoint on the train split of outcome data (see docs/training.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train a router checkpoint on outcome data (train split)",
        description="Embed every prompt (cached), choose a head variant by cross-validation on "
                    "the train split, fit it and write a checkpoint with prices and policies.")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="outcome files (.jsonl, .jsonl.gz, .csv, .parquet) with .meta.json")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--embedder", default="local", metavar="NAME",
                   help="embedder kind (local, hash, local-st, remote) or a JSON config "
                        "(default: local, all-MiniLM-L6-v2 int8 ONNX)")
    p.add_argument("--policies", metavar="FILE",
                   help="YAML/JSON with the instruction and max_tokens of named policies")
    p.add_argument("--variant", default="auto", metavar="NAME",
                   help="head variant: auto (chosen by validation AUDC), ridge, ridge-log, "
                        "shared, shared-log, shared-monotone, mlp")
    p.add_argument("--folds", type=int, default=5,
                   help="cross-validation folds on the train split (default 5; 0 with a "
                        "named variant skips validation)")
    p.add_argument("--interpolate-budgets", metavar="B1,B2",
                   help="add numeric budgets between the trained ones, heads interpolated in "
                        "log-budget (linear heads only)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default $R2_CACHE_DIR or ~/.cache/r2-gateway/embeddings)")
    p.add_argument("--name", help="checkpoint name (default: the directory name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _budgets(text: str | None) -> list[int]:
    from router_core.training import DataError

    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DataError("--interpolate-budgets must be a comma list of integers",
                        field="interpolate_budgets") from None


def run(args: argparse.Namespace) -> int:
    from router_core.training import embedder_config, train

    ckpt = train(args.data, args.out, embedder_config(args.embedder), args.policies,
                 variant=args.variant, folds=args.folds, cache_dir=args.cache_dir,
                 name=args.name, interpolate=_budgets(args.interpolate_budgets),
                 progress=not args.no_progress)
    print(f"wrote {args.out}: {len(ckpt.models)} models x {len(ckpt.policies)} policies, "
          f"{ckpt.head_kind} heads, variant {ckpt.provenance.get('variant')}, "
          f"embedder {ckpt.embedder.id}")
    return 0
