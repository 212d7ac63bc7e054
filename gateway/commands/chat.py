"""`r2 chat "text" --config gateway.yaml [--lambda L] [--json]`: route and generate, no server.

Uses the same `Service` as the gateway (checkpoint, embedder, prices, rewrite, LiteLLM), so the
answer is what `r2-auto` would have returned for a one-message conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("chat", help="route a prompt and generate the answer via the deployments "
                       "(needs them reachable, e.g. a local LLM server)")
    p.add_argument("text", help="the user message")
    p.add_argument("--config", required=True, help="gateway YAML file")
    p.add_argument("--lambda", dest="lambda_", type=float, metavar="L",
                   help="cost weight in [0, 1]: 0 = quality only, 1 = cost only")
    p.add_argument("--system", help="optional system message")
    p.add_argument("--max-tokens", type=int, help="client cap on output tokens")
    p.add_argument("--json", action="store_true", help="print the decision and answer as JSON")
    p.set_defaults(func=run)


async def _chat(args: argparse.Namespace) -> dict[str, Any]:
    from router_core.tradeoff import resolve_lambda

    from ..chat import _rewrite, _to_dict
    from ..config import load_settings
    from ..errors import to_api_error
    from ..protocol import RouteHeaders
    from ..service import Service

    settings = load_settings(args.config)
    messages = [{"role": "user", "content": args.text}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    svc = Service(settings)
    lam = (resolve_lambda(svc.default_knob, svc.checkpoint.tradeoff) if args.lambda_ is None
           else args.lambda_)
    await svc.start()
    try:
        decision = await svc.route(messages, RouteHeaders(lam, None, None), args.max_tokens)
        body: dict[str, Any] = {"model": "r2-auto", "messages": messages}
        if args.max_tokens:
            body["max_tokens"] = args.max_tokens
        try:
            result = _to_dict(await svc.upstream.complete(_rewrite(body, svc, decision)))
        except Exception as exc:  # noqa: BLE001 - reported as one line by the CLI
            err = to_api_error(exc, svc.secrets)
            raise RuntimeError(f"{decision.model} failed: {err.message} ({err.code})") from None
    finally:
        await svc.stop()
    choice = (result.get("choices") or [{}])[0]
    return {
        "decision": decision.to_json(),
        "answer": (choice.get("message") or {}).get("content") or "",
        "finish_reason": choice.get("finish_reason"),
        "usage": result.get("usage"),
    }


def run(args: argparse.Namespace) -> int:
    if args.lambda_ is not None and not 0.0 <= args.lambda_ <= 1.0:
        print("r2 chat: error: --lambda must be a number in [0, 1]", file=sys.stderr)
        return 2
    if not args.text.strip():
        print("r2 chat: error: the message is empty", file=sys.stderr)
        return 2
    try:
        out = asyncio.run(_chat(args))
    except RuntimeError as exc:  # the upstream failed: an error like any other, exit 2
        print(f"r2 chat: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
        return 0
    d = out["decision"]
    print(f"Selected LLM: {d['model']}")
    print(f"Selected budget: {d['budget']}")
    print(f"Predicted quality: {d['predicted_quality']:.4f}  cost: "
          f"${d['predicted_cost_usd']:.8f}  (lambda={d['lambda']})")
    print(f"Finish reason: {out['finish_reason']}  usage: {out['usage']}")
    print("\n" + out["answer"])
    return 0
