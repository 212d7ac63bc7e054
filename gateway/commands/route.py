"""`r2 route`: route one text, or a batch of precomputed embeddings, and print the decision."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

DEFAULT_CHECKPOINT = "checkpoints/default"
#: Embedder config implied by a checkpoint's embedder id when no --config names one.
KNOWN_EMBEDDERS = {
    "all-MiniLM-L6-v2-onnx-int8": {"kind": "local"},
    "all-MiniLM-L6-v2-onnx-dq8pc-mha": {"kind": "local-q8"},
    "sentence-transformers/all-MiniLM-L6-v2": {"kind": "local-st"},
    "hash": {"kind": "hash"},
    "static-minilm-l6-v2-m2v256-int8": {"kind": "static-minilm"},
}


def register(sub: Any) -> None:
    p = sub.add_parser("route", help="pick the (model, budget) for a text or embeddings")
    p.add_argument("text", nargs="?", help="the query to route")
    p.add_argument("--checkpoint", metavar="DIR",
                   help=f"checkpoint directory (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--config", metavar="F",
                   help="gateway YAML: checkpoint, embedder and default lambda")
    p.add_argument("--embedder", metavar="NAME",
                   help="embedder kind or JSON config (default: the config's, else the one "
                        "the checkpoint's embedder id implies)")
    p.add_argument("--lambda", dest="lambda_", type=float, metavar="L",
                   help="cost weight in [0, 1]: 0 = quality only, 1 = cost only")
    p.add_argument("--embeddings", metavar="X.npy",
                   help="route each row of this .npy file instead of a text")
    p.add_argument("--input-tokens", type=int, metavar="N",
                   help="input tokens for cost (with --embeddings)")
    p.add_argument("--models", metavar="A,B", help="comma list of allowed models")
    p.add_argument("--policies", metavar="P,Q",
                   help="comma list of allowed policies (budgets such as 100, or names such "
                        "as concise_cot, as the checkpoint lists them)")
    p.add_argument("--max-budget", type=int, metavar="N", help="largest budget to consider")
    p.add_argument("--max-cost-usd", type=float, metavar="USD",
                   help="largest predicted cost to accept")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verbose", action="store_true", help="list every candidate by utility")
    p.add_argument("--tradeoff", type=float, metavar="T",
                   help="calibrated trade-off: 0 best quality .. 1 cheapest (needs a table)")
    p.add_argument("--usd-per-quality", type=float, metavar="W",
                   help="USD per request you would pay for +1.0 predicted quality (lambda "
                        "1/(1+W))")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"r2 route: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from router_core import Constraints, InvalidInputError, Router, load_checkpoint

    if args.lambda_ is not None and not (math.isfinite(args.lambda_) and 0 <= args.lambda_ <= 1):
        return _fail("--lambda must be a number in [0, 1]")
    given = [f for f, v in (("--lambda", args.lambda_), ("--tradeoff", args.tradeoff),
                            ("--usd-per-quality", args.usd_per_quality)) if v is not None]
    if len(given) > 1:
        return _fail(f"give one of --lambda, --tradeoff, --usd-per-quality, not {given}")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    ckpt_dir, embedder_cfg, knob = _resolve(args)
    if args.embedder:
        from router_core.training import embedder_config

        embedder_cfg = embedder_config(args.embedder)
    ckpt = load_checkpoint(ckpt_dir)
    policies, unknown = _policy_names(args.policies, ckpt)
    if unknown:
        return _fail(f"--policies: the checkpoint has no policy {unknown!r}; it has "
                     f"{', '.join(str(p.label) for p in ckpt.policies)}")
    constraints = Constraints(models, args.max_budget, args.max_cost_usd, policies)
    lam = _lambda(knob, ckpt)
    if args.embeddings:
        return _route_embeddings(args, ckpt, lam, constraints)
    if not args.text or not args.text.strip():
        return _fail("give a non-empty text to route, or --embeddings FILE.npy")
    if embedder_cfg is None:
        embedder_cfg = KNOWN_EMBEDDERS.get(ckpt.embedder.id)
        if embedder_cfg is None:
            raise InvalidInputError(
                f"checkpoint needs embedder {ckpt.embedder.id!r}; pass --config with an "
                "embedder section (e.g. a remote /v1/embeddings URL)", param="embedder")
    router = Router.load(ckpt_dir, embedder_cfg)
    decision = router.route(args.text, lam, constraints)
    if args.json:
        print(json.dumps(decision.to_json(all_candidates=args.verbose)))
        return 0
    print(f"Candidate LLMs: {', '.join(router.models)}")
    print(f"Selected LLM: {decision.model}")
    print(f"Selected budget: {decision.budget}")
    c = decision.chosen
    print(f"Predicted quality: {c.predicted_quality:.4f}  output tokens: "
          f"{c.predicted_output_tokens:.1f}  cost: ${c.predicted_cost_usd:.8f}  "
          f"(lambda={decision.lambda_}, input tokens={decision.input_tokens})")
    if args.verbose:
        print(f"\n{'rank':>4}  {'model':<36} {'budget':>9} {'quality':>8} {'tokens':>8} "
              f"{'cost_usd':>12} {'utility':>12}")
        for i, cand in enumerate(decision.candidates, 1):
            print(f"{i:>4}  {cand.model:<36} {cand.budget!s:>9} {cand.predicted_quality:>8.4f} "
                  f"{cand.predicted_output_tokens:>8.1f} {cand.predicted_cost_usd:>12.8f} "
                  f"{cand.utility:>12.8f}")
    return 0


def _resolve(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None, Any]:
    """Checkpoint, embedder config and the knob (`Knob`, or None for the checkpoint's own
    default) from the flags and the optional gateway config."""
    from router_core.tradeoff import Knob

    knob: Knob | None = None
    for kind, value in (("lambda", args.lambda_), ("tradeoff", args.tradeoff),
                        ("usd_per_quality", args.usd_per_quality)):
        if value is not None:
            knob = Knob(kind, value)  # type: ignore[arg-type]
    if args.config:
        from ..config import load_settings

        settings = load_settings(args.config)
        ckpt = Path(args.checkpoint) if args.checkpoint else settings.checkpoint
        if knob is None and settings.default_tradeoff is not None:
            knob = Knob("tradeoff", settings.default_tradeoff)
        elif knob is None and settings.default_lambda is not None:
            knob = Knob("lambda", settings.default_lambda)
        return ckpt, dict(settings.embedder), knob
    return Path(args.checkpoint or DEFAULT_CHECKPOINT), None, knob


def _policy_names(arg: str | None, ckpt: Any) -> tuple[tuple[str, ...] | None, str | None]:
    """The policy names `--policies` allows (each given as its label, e.g. `100`, or its name),
    and the first item that names none of the checkpoint's policies."""
    if arg is None:
        return None, None
    by_label = {str(p.label): p.name for p in ckpt.policies}
    by_label.update({p.name: p.name for p in ckpt.policies})
    items = [x.strip() for x in arg.split(",") if x.strip()]
    if not items:
        return None, arg
    for item in items:
        if item not in by_label:
            return None, item
    return tuple(dict.fromkeys(by_label[x] for x in items)), None


def _lambda(knob: Any, ckpt: Any) -> float:
    """The knob's lambda; without one, trade-off 0.5 on a calibrated checkpoint, else the
    checkpoint's default lambda (as the gateway does)."""
    from router_core.tradeoff import Knob, resolve_lambda

    if knob is None:
        knob = (Knob("tradeoff", 0.5) if ckpt.tradeoff is not None
                else Knob("lambda", ckpt.default_lambda))
    return resolve_lambda(knob, ckpt.tradeoff)


def _route_embeddings(args: argparse.Namespace, ckpt: Any, lam: float,
                      constraints: Any) -> int:
    import numpy as np

    from router_core import Router

    try:
        emb = np.load(args.embeddings, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return _fail(f"cannot read embeddings {args.embeddings}: {exc}")
    if args.input_tokens is None or args.input_tokens < 0:
        return _fail("--input-tokens N (>= 0) is required with --embeddings")
    router = Router(ckpt)
    for cand in router.route_embeddings(emb, args.input_tokens, lam, constraints):
        print(json.dumps(cand.to_json()))
    return 0
