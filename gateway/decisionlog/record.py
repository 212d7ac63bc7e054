"""One decision record: what a finished routed request becomes in the log.

On the event loop a finished request costs one tuple (`Finished`) put on the writer's queue;
everything else (float16 conversion, candidates as JSON, the row) happens in the writer's
thread. `Trace` is the small accumulator the chat pipeline feeds with each answer or chunk
(usage, finish reasons, and the answer text when `log.content` is on).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .settings import LogSettings


@dataclass
class Trace:
    """What the answer said about itself, gathered from the response or its chunks."""

    #: The client's messages (a shallow copy; the rewrite replaces messages, never edits them),
    #: encoded to JSON by the writer thread, not on the loop (~2 ms for a 400k-character body).
    messages: list[Any] | None = None
    keep_text: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    parts: list[str] = field(default_factory=list)

    def observe(self, data: dict[str, Any]) -> None:
        """Usage and finish reasons; the realised cost and whether the answer was cut are the
        request's `Outcome`'s (`cost_usd`, `truncated`), observed from the same data."""
        usage = data.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.prompt_tokens = prompt
            if isinstance(completion, int):
                self.completion_tokens = completion
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if reason is not None:
                if self.finish_reason is None or choice.get("index", 0) == 0:
                    self.finish_reason = str(reason)
            if self.keep_text and choice.get("index", 0) == 0:
                part = (choice.get("message") or choice.get("delta") or {}).get("content")
                if isinstance(part, str):
                    self.parts.append(part)


def new_trace(body: dict[str, Any], content: bool) -> Trace:
    messages = body.get("messages")
    kept = list(messages) if content and isinstance(messages, list) else None
    return Trace(messages=kept, keep_text=content)


@dataclass(frozen=True)
class Finished:
    """A finished routed request, as handed to the writer (no conversion on the loop)."""

    ts: float
    request_id: str
    key_id: str | None
    endpoint: str
    outcome: Any  # gateway.chat.Outcome
    trace: Trace
    status: int
    error: str | None
    latency_ms: float


def embedding_of(decision: Any) -> np.ndarray[Any, Any] | None:
    emb = getattr(decision, "embedding", None)
    if emb is None:
        return None
    return np.asarray(emb, dtype=np.float64).reshape(-1)


def encode_embedding(emb: np.ndarray[Any, Any] | None, kind: str) -> tuple[bytes | None,
                                                                            str | None]:
    if emb is None or kind == "none":
        return None, None
    raw = emb.astype("<f2").tobytes()
    if kind == "sha256":
        return hashlib.sha256(raw).digest(), "sha256"
    return raw, "float16"


def decode_embedding(raw: bytes | memoryview) -> np.ndarray[Any, Any]:
    return np.frombuffer(bytes(raw), dtype="<f2").astype(np.float64)


def top_candidates(candidates: Any, keep: int) -> Any:
    """The best `keep` candidates, without building the rest (a lazily ranked list)."""
    top = getattr(candidates, "top", None)
    return top(keep) if top is not None else list(candidates[:keep])


def _candidates(decision: Any, keep: int) -> str | None:
    if decision is None:
        return None
    out = [{"model": c.model, "budget": c.budget, "quality": round(c.predicted_quality, 5),
            "tokens": round(c.predicted_output_tokens, 2),
            "cost_usd": float(f"{c.predicted_cost_usd:.6g}"),
            "utility": float(f"{c.utility:.6g}")}
           for c in top_candidates(decision.candidates, keep)]
    return json.dumps(out, separators=(",", ":"))


def to_row(item: Finished, settings: LogSettings) -> tuple[Any, ...]:
    """The `decisions` row of a finished request, in `schema.INSERTED` order."""
    out, trace = item.outcome, item.trace
    decision = out.decision
    chosen = decision.chosen if decision is not None else None
    policy = getattr(decision, "policy", None)
    emb, kind = encode_embedding(embedding_of(decision), settings.embedding)
    greedy = getattr(decision, "greedy", None)
    error = item.error
    client_closed = item.status == 499 or error == "client_closed"
    upstream_error = not client_closed and (item.status >= 500 or bool(
        error and (error.startswith("upstream") or error in ("stream_too_long",))))
    truncated = out.truncated and policy is not None and policy.cap is not None
    return (
        item.request_id, item.ts, item.key_id, item.endpoint, out.deployment,
        None if chosen is None else str(chosen.budget),
        out.lambda_, out.tradeoff,
        None if decision is None else int(decision.input_tokens),
        None if chosen is None else chosen.predicted_quality,
        None if chosen is None else chosen.predicted_output_tokens,
        None if chosen is None else chosen.predicted_cost_usd,
        _candidates(decision, settings.candidates),
        int(bool(getattr(decision, "explored", False))),
        float(getattr(decision, "propensity", 1.0)) if decision is not None else None,
        None if greedy is None else greedy.model,
        None if greedy is None else str(greedy.budget),
        emb, kind, item.status, error, trace.finish_reason, trace.prompt_tokens,
        trace.completion_tokens, out.cost_usd, item.latency_ms, out.fallback,
        int(truncated), int(upstream_error), int(client_closed),
        json.dumps(trace.messages, ensure_ascii=False)
        if settings.content and trace.messages is not None else None,
        "".join(trace.parts) if settings.content and trace.parts else None,
    )
