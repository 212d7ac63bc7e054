"""Apply a routing decision to a chat request: model, output cap and the policy's instruction.

Rules (what the client allowed is never exceeded):
- the client's cap is the smaller of `max_tokens` and `max_completion_tokens` when it sends
  both; the policy's cap (`Policy.cap`) is lowered to it;
- the cap is written to the field the deployment honours (`Deployment.cap_field`); when the
  client sent both fields, both carry the cap, so no larger value reaches the provider;
- the budget-free arm (or a policy without a cap) keeps the client's cap, or the deployment's
  `max_tokens` when there is none;
- a request whose output must parse (`tools`, `functions`, or a JSON `response_format`) gets
  the policy's instruction but not the policy's cap: a JSON object cut at 128 tokens does not
  parse, so only the client's own cap (or the deployment's) applies;
- the instruction goes where the policy says: merged into the first system message (kept, not
  replaced) or added as a new leading one (`placement: system`), or appended to the latest
  user turn (`placement: user_suffix`).
"""

from __future__ import annotations

import copy
from typing import Any

from router_core import Policy

from .protocol import CAP_FIELDS, client_cap

STRUCTURED_FIELDS = ("tools", "functions")


def merge_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    out = list(messages)
    for i, msg in enumerate(out):
        if msg.get("role") in ("system", "developer"):
            out[i] = _append(msg, instruction)
            return out
    return [{"role": "system", "content": instruction}, *out]


def append_to_user(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """The instruction appended to the latest user turn (as R2-Bench was collected)."""
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            out[i] = _append(out[i], instruction)
            return out
    return [*out, {"role": "user", "content": instruction}]


def _append(msg: dict[str, Any], instruction: str) -> dict[str, Any]:
    merged = dict(msg)
    content = msg.get("content")
    if isinstance(content, list):
        merged["content"] = [*content, {"type": "text", "text": instruction}]
    elif content:
        merged["content"] = f"{content}\n\n{instruction}"
    else:
        merged["content"] = instruction
    return merged


def needs_whole_output(body: dict[str, Any]) -> bool:
    """Whether the answer must parse (tool calls, JSON mode, a JSON schema)."""
    if any(body.get(key) for key in STRUCTURED_FIELDS):
        return True
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") not in (None, "text")


def output_cap(body: dict[str, Any], policy: Policy, deployment_max_tokens: int | None
               ) -> int | None:
    """The `max_tokens` the upstream gets under `policy` (None: send none)."""
    client = client_cap(body)
    cap = None if needs_whole_output(body) else policy.cap
    if cap is not None:
        return min(cap, client) if client is not None else cap
    return client if client is not None else deployment_max_tokens


def apply_policy(body: dict[str, Any], deployment: str, policy: Policy,
                 deployment_max_tokens: int | None = None,
                 cap_field: str = "max_tokens") -> dict[str, Any]:
    """A new body for `deployment` under `policy`; `body` itself is not modified."""
    out = copy.copy(body)
    out["model"] = deployment
    _set_cap(out, body, output_cap(body, policy, deployment_max_tokens), cap_field)
    instruction = policy.render_instruction()
    if instruction:
        messages = list(body["messages"])
        out["messages"] = (append_to_user(messages, instruction)
                           if policy.placement == "user_suffix"
                           else merge_instruction(messages, instruction))
    return out


def forward_cap(body: dict[str, Any], cap_field: str) -> dict[str, Any]:
    """A named deployment's request with the client's cap in the field the deployment
    honours (both fields at the smaller value when the client sent both)."""
    sent = [name for name in CAP_FIELDS if body.get(name) is not None]
    if not sent or sent == [cap_field]:
        return body
    out = copy.copy(body)
    _set_cap(out, body, client_cap(body), cap_field)
    return out


def _set_cap(out: dict[str, Any], body: dict[str, Any], cap: int | None, cap_field: str) -> None:
    """Write `cap` into `out`: in `cap_field`, or in both fields when the client sent both
    (so that neither is forwarded uncapped); None removes both."""
    sent_both = all(body.get(f) is not None for f in CAP_FIELDS)
    for name in CAP_FIELDS:
        out.pop(name, None)
    if cap is not None:
        for name in (CAP_FIELDS if sent_both else (cap_field,)):
            out[name] = cap
