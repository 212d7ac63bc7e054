"""Apply a routing decision to a chat request: model, output cap and budget instruction.

Rules (what the client allowed is never exceeded):
- the client's own `max_tokens` / `max_completion_tokens` caps the candidates; the rewritten
  cap is written back into the same field the client used;
- a numeric budget or a named policy with `max_tokens` sets the cap to min(policy, client);
- the budget-free arm keeps the client's value, or the deployment's default when none;
- the policy's instruction is merged into the first system message (kept, not replaced), or
  added as a new leading system message.
"""

from __future__ import annotations

import copy
from typing import Any

from router_core import Policy

from .protocol import client_max_tokens


def merge_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    out = list(messages)
    for i, msg in enumerate(out):
        if msg.get("role") in ("system", "developer"):
            merged = dict(msg)
            content = msg.get("content")
            if isinstance(content, list):
                merged["content"] = [*content, {"type": "text", "text": instruction}]
            elif content:
                merged["content"] = f"{content}\n\n{instruction}"
            else:
                merged["content"] = instruction
            out[i] = merged
            return out
    return [{"role": "system", "content": instruction}, *out]


def apply_policy(body: dict[str, Any], deployment: str, policy: Policy,
                 instruction_template: str, deployment_max_tokens: int | None) -> dict[str, Any]:
    """A new body for `deployment` under `policy`; `body` itself is not modified."""
    field, client_cap = client_max_tokens(body)
    out = copy.copy(body)
    out["model"] = deployment
    cap = policy.cap
    if cap is not None:
        out[field] = min(cap, client_cap) if client_cap is not None else cap
    elif client_cap is None and deployment_max_tokens is not None:
        out[field] = deployment_max_tokens
    instruction = policy.render_instruction(instruction_template)
    if instruction:
        out["messages"] = merge_instruction(list(body["messages"]), instruction)
    return out
