"""What the client sees of an upstream answer: the OpenAI schema, and honest token counts.

LiteLLM's response objects carry fields of its own (`provider_specific_fields`, and as nulls
`citations`, `moderation`, `obfuscation`) and a `usage.cost`; none is in OpenAI's schema and
strict clients reject unknown fields, so they are removed here (the gateway's own extras go in
`x-r2-*` headers). Token counts come from the provider when it sent usable ones; when LiteLLM had
to estimate them (the provider sent none, or nonsense that the transport dropped), the client is
told: `x-r2-usage: estimated` (or `unavailable`, when a JSON answer's counts were dropped) on a
JSON answer, an SSE comment line `: x-r2-usage estimated` before the usage event of a stream.
"""

from __future__ import annotations

from typing import Any

from .transport import Attempt

#: LiteLLM-only fields, dropped wherever they appear (top level, choice, message, delta).
LITELLM_FIELDS = ("provider_specific_fields",)
#: Dropped when null: fields LiteLLM adds to every chunk whatever the provider sent.
LITELLM_NULL_FIELDS = ("citations", "moderation", "obfuscation")
COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def openai_shape(data: dict[str, Any]) -> dict[str, Any]:
    """Remove LiteLLM's own fields from a completion or chunk (in place; returns it)."""
    for key in LITELLM_FIELDS:
        data.pop(key, None)
    for key in LITELLM_NULL_FIELDS:
        if key in data and data[key] is None:
            del data[key]
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            for key in LITELLM_FIELDS:
                choice.pop(key, None)
            for part in ("message", "delta"):
                inner = choice.get(part)
                if isinstance(inner, dict):
                    for key in LITELLM_FIELDS:
                        inner.pop(key, None)
    usage = data.get("usage")
    if isinstance(usage, dict):
        usage.pop("cost", None)
    return data


def usage_note(attempt: Attempt, tracked: bool) -> str | None:
    """For a JSON answer: `"unavailable"` when the provider's counts were unusable (dropped:
    what is left is not a count of this answer), `"estimated"` when it sent none (LiteLLM
    counted), `None` when they are the provider's own."""
    if not tracked:
        return None
    if attempt.usage_invalid:
        return "unavailable"
    return "estimated" if attempt.usage is None else None


def stream_usage(data: dict[str, Any], attempt: Attempt | None) -> str | None:
    """Put the provider's counts in a stream's usage event; `"estimated"` if it had none."""
    usage = data.get("usage")
    if attempt is None or not isinstance(usage, dict):
        return None
    if attempt.usage is None:
        return "estimated"
    for key in COUNTS:
        if isinstance(attempt.usage.get(key), int):
            usage[key] = attempt.usage[key]
    return None
