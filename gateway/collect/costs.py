"""Prices and the hard cost cap of a collection run.

Every call first reserves its worst case: the request's UTF-8 bytes as input tokens (a
byte-level BPE token is at least one byte) plus a per-message allowance for the chat template,
and its `max_tokens` as output (`UNBOUNDED_OUTPUT_TOKENS` when the request has no cap). A call
whose reservation would take spent + reserved past the cap is not made, so the money spent
never exceeds the cap while providers honour `max_tokens`. On completion the reservation is
replaced by the cost of the provider's reported usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..protocol import client_cap

#: Output tokens assumed for a request without `max_tokens` (the budget-free arm on a
#: deployment without its own `max_tokens`), when reserving against the cost cap.
UNBOUNDED_OUTPUT_TOKENS = 4096
TEMPLATE_TOKENS_PER_MESSAGE = 16


class CostCapReached(Exception):
    """The next call could take the run past `--max-cost-usd`; nothing more is started."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input_per_million
                + output_tokens * self.output_per_million) / 1e6


def worst_case_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """Upper bounds on the input and output tokens a chat request can be billed for."""
    messages = body.get("messages") or []
    size = sum(len(json.dumps(m.get("content"), ensure_ascii=False).encode("utf-8"))
               for m in messages)
    input_bound = size + TEMPLATE_TOKENS_PER_MESSAGE * (len(messages) + 1)
    cap = client_cap(body)
    return input_bound, cap if cap is not None else UNBOUNDED_OUTPUT_TOKENS


@dataclass
class CostMeter:
    """Running cost of a run: settled spend, open reservations, and the cap."""

    cap_usd: float | None = None
    spent_usd: float = 0.0
    judge_usd: float = 0.0
    reserved_usd: float = 0.0
    cap_hit: bool = False

    def reserve(self, amount: float) -> float:
        """Hold `amount` for a call about to be made; raises `CostCapReached` instead."""
        if self.cap_usd is not None and \
                self.spent_usd + self.reserved_usd + amount > self.cap_usd:
            self.cap_hit = True
            raise CostCapReached(f"the cost cap of ${self.cap_usd:g} is reached")
        self.reserved_usd += amount
        return amount

    def settle(self, reserved: float, actual: float, judge: bool = False) -> None:
        """Replace a reservation by what the call really cost (0 for a failed call)."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += actual
        if judge:
            self.judge_usd += actual
