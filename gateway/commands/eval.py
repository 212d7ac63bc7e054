"""`r2 eval`: quality-cost curves and AUDC / QNC / peak of a checkpoint on the test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from router_core.text import COMPOSITIONS, DEFAULT_COMPOSITION

from .train import add_subset_flags, names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on outcome data (test split)",
        description="Sweep lambda and compare r2, point, oracle, random and best-single "
                    "routers by AUDC, QNC and peak quality on the test queries with every arm "
                    "(definitions in docs/training.md).")
    p.add_argument("data", nargs="+", metavar="DATA", help="outcome files with .meta.json")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--point-policy", metavar="NAME",
                   help="policy of the point router (default: the best validation AUDC on the "
                        "train split, recorded by r2 train)")
    add_subset_flags(p)
    p.add_argument("--json", metavar="OUT", help="write metrics and curves as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="draw the curves (matplotlib)")
    p.add_argument("--embedder", metavar="NAME",
                   help="embedder kind or JSON config (default: the one the checkpoint was "
                        "trained with)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="split to evaluate (default test)")
    p.add_argument("--system-prompt", metavar="FILE",
                   help="evaluate as if every query came after this system prompt (the data's "
                        "prompt is the user turn): how the router does on your traffic's shape")
    p.add_argument("--unbilled-system-prompt", action="store_true",
                   help="with --system-prompt: leave its input tokens out of predicted and "
                        "realised cost, so only the routing text differs from a plain eval")
    p.add_argument("--routing-text", metavar="NAME", choices=sorted(COMPOSITIONS),
                   help="composition of the routing text to evaluate (default: the gateway's, "
                        f"{DEFAULT_COMPOSITION})")
    p.add_argument("--cache-dir", metavar="DIR", help="embedding cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from router_core import load_checkpoint, make_embedder
    from router_core.training import embedder_config, evaluate, format_table, plot_report
    from router_core.training.plot import require_matplotlib

    if args.plot:
        require_matplotlib()  # before the evaluation, not after it
    models, policies = names(args.models, "--models"), names(args.policies, "--policies")
    system_prompt = _read_system_prompt(args.system_prompt)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = (embedder_config(args.embedder) if args.embedder
           else ckpt.provenance.get("embedder_config") or {"kind": "local"})
    embedder = make_embedder(cfg)
    try:
        ckpt = load_checkpoint(args.checkpoint, expected_embedder=(embedder.id, embedder.dim))
        report = evaluate(args.data, ckpt, embedder, args.point_policy, args.cache_dir,
                          split=args.split, progress=not args.no_progress, models=models,
                          policies=policies, log=print, system_prompt=system_prompt,
                          composition=args.routing_text,
                          bill_system_prompt=not args.unbilled_system_prompt)
    finally:
        embedder.close()
    title = ", ".join(Path(d).name.split(".")[0] for d in args.data)
    if system_prompt:
        title += f" (system prompt {Path(args.system_prompt).name}, {len(system_prompt)} chars)"
    print(format_table(report, title))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    if args.plot:
        plot_report(report, args.plot, title)
    return 0


def _read_system_prompt(path: str | None) -> str | None:
    from router_core.training import DataError

    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the system prompt: {exc}", file=path) from None
    if not text.strip():
        raise DataError("the system prompt file is empty", file=path)
    return text.strip()
