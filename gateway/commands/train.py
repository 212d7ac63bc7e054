"""`r2 train`: fit a checkpoint on the train split of outcome data (see docs/training.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

POLICY_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train a router checkpoint on outcome data (train split)",
        description="Check the whole data and print its coverage, embed every prompt (cached), "
                    "choose a head variant by cross-validation on the train split, fit it and "
                    "write a checkpoint with prices and policies.")
    p.add_argument("data", nargs="*", metavar="DATA",
                   help="outcome files (.jsonl, .jsonl.gz, .csv, .parquet) with .meta.json")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--embedder", default="local-q8", metavar="NAME",
                   help="embedder kind (local-q8, local, static-minilm, hash, local-st, remote) "
                        "or a JSON config (default: local-q8, all-MiniLM-L6-v2 int8 ONNX)")
    add_subset_flags(p)
    p.add_argument("--policy-file", metavar="FILE",
                   help="YAML/JSON with the instruction and max_tokens of named policies "
                        "(also accepted as --policies FILE.yaml)")
    p.add_argument("--min-arm-rows", type=int, default=None, metavar="N",
                   help="train rows an arm needs; sparser arms are left out with a warning "
                        "(default 20)")
    p.add_argument("--strict", action="store_true",
                   help="refuse data with arms sparser than --min-arm-rows instead of "
                        "leaving them out")
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
    from ..decisionlog.commands import add_from_log_flags

    add_from_log_flags(p, train=True)
    p.set_defaults(func=run)


def add_subset_flags(p: Any) -> None:
    p.add_argument("--models", metavar="A,B", help="use only these models")
    p.add_argument("--policies", metavar="P,Q", help="use only these policies")


def names(text: str | None, flag: str) -> list[str] | None:
    """A comma list of a subset flag; None when the flag is not given."""
    from router_core.training import DataError

    if text is None:
        return None
    out = [part.strip() for part in text.split(",") if part.strip()]
    if not out:
        raise DataError(f"{flag} names nothing", field=flag.lstrip("-"),
                        fix=f"pass a comma list, e.g. {flag} a,b")
    return out


def _budgets(text: str | None) -> list[int]:
    from router_core.training import DataError

    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DataError("--interpolate-budgets must be a comma list of integers",
                        field="interpolate_budgets", fix="e.g. --interpolate-budgets 150,300") \
            from None


def run(args: argparse.Namespace) -> int:
    if args.from_log:
        from ..decisionlog.commands import train_from_log

        return train_from_log(args, _train)
    if not args.data:
        from router_core.training import DataError

        raise DataError("no data files given", fix="pass outcome files, or --from-log DB")
    return _train(args)


def _train(args: argparse.Namespace) -> int:
    from router_core.training import DEFAULT_MIN_ARM_ROWS, embedder_config, train

    policy_file, policies = args.policy_file, args.policies
    # `--policies FILE.yaml` was the policies file before `--policies P,Q` meant a subset.
    if policies and policy_file is None and (policies.endswith(POLICY_FILE_SUFFIXES)
                                             or Path(policies).is_file()):
        policy_file, policies = policies, None
    ckpt = train(args.data, args.out, embedder_config(args.embedder), policy_file,
                 variant=args.variant, folds=args.folds, cache_dir=args.cache_dir,
                 name=args.name, interpolate=_budgets(args.interpolate_budgets),
                 progress=not args.no_progress, models=names(args.models, "--models"),
                 policies=names(policies, "--policies"),
                 min_arm_rows=(DEFAULT_MIN_ARM_ROWS if args.min_arm_rows is None
                               else args.min_arm_rows),
                 strict=args.strict)
    print(f"wrote {args.out}: {len(ckpt.models)} models x {len(ckpt.policies)} policies, "
          f"{ckpt.head_kind} heads, variant {ckpt.provenance.get('variant')}, "
          f"embedder {ckpt.embedder.id}")
    return 0
