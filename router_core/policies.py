"""Output-length policies: what the gateway does to a request once a (model, policy) is picked.

A policy is a numeric token budget (the release's `10 ... 4000`), the budget-free arm
`"unlimited"`, or a named output style (`concise_cot`, `answer_only`, ...). Each carries the
instruction the gateway adds as a system message and the `max_tokens` it sends, so that what was
measured when training is exactly what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

UNLIMITED = "unlimited"

#: The release's budget instruction; `{budget}` is replaced by the token budget.
DEFAULT_BUDGET_INSTRUCTION = (
    "You MUST respond in {budget} tokens or fewer. Keep the answer complete but within this "
    "limit: skip preambles and put the final answer first."
)

CostTokens = Literal["budget", "predicted"]


@dataclass(frozen=True)
class Policy:
    """One output-length policy of a checkpoint.

    `cost_tokens` says which output-token count prices a candidate: `"budget"` charges the full
    budget (the release's rule for limited budgets), `"predicted"` uses the token head,
    capped at `max_tokens` when there is one.
    """

    name: str
    budget: int | None = None
    max_tokens: int | None = None
    instruction: str | None = None
    cost_tokens: CostTokens = "predicted"

    @property
    def label(self) -> int | str:
        """What clients see as the budget: the integer for numeric budgets, else the name."""
        return self.budget if self.budget is not None else self.name

    @property
    def is_unlimited(self) -> bool:
        return self.name == UNLIMITED

    @property
    def cap(self) -> int | None:
        """The `max_tokens` sent under this policy: its own cap, else its budget, else none."""
        return self.max_tokens if self.max_tokens is not None else self.budget

    def render_instruction(self, template: str | None = None) -> str | None:
        """The system instruction for this policy, or None (the budget-free arm has none)."""
        text = self.instruction
        if self.budget is not None and template is not None:
            text = template
        if text is None:
            return None
        return text.replace("{budget}", str(self.budget if self.budget is not None else ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget": self.budget,
            "max_tokens": self.max_tokens,
            "instruction": self.instruction,
            "cost_tokens": self.cost_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        cost = data.get("cost_tokens", "predicted")
        if cost not in ("budget", "predicted"):
            raise ValueError(f"cost_tokens must be 'budget' or 'predicted', got {cost!r}")
        budget = data.get("budget")
        max_tokens = data.get("max_tokens")
        for key, value in (("budget", budget), ("max_tokens", max_tokens)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{key} must be a positive integer or null")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        instruction = data.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError("instruction must be a string or null")
        return cls(name, budget, max_tokens, instruction, cost)


def budget_policy(budget: int, instruction: str = DEFAULT_BUDGET_INSTRUCTION,
                  cost_tokens: CostTokens = "budget") -> Policy:
    """A numeric token budget with the release's instruction and `max_tokens = budget`."""
    return Policy(str(budget), budget, budget, instruction, cost_tokens)


def unlimited_policy() -> Policy:
    """The budget-free arm: no instruction, the client's or deployment's own max_tokens."""
    return Policy(UNLIMITED, None, None, None, "predicted")


def parse_policy_label(value: str | int) -> str | int:
    """`"100"` -> 100, `"unlimited"` and names unchanged: how budgets appear in data and CLIs."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text
