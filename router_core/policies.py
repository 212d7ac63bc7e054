"""Output-length policies: what the gateway does to a request once a (model, policy) is picked.

A policy has one explicit `kind`, and everything that behaves differently per kind asks here:

- `"budget"`: a numeric token budget (the release's `10 ... 4000`); its instruction may use
  `{budget}`, and its label is the integer;
- `"style"`: a named output style (`concise_cot`, `answer_only`, ...), with its own instruction
  and an optional fixed cap;
- `"free"`: the budget-free arm (`unlimited`): no instruction, no cap of its own.

Besides the instruction text, a policy says where the instruction goes (`placement`: merged into
the system message, or appended to the latest user turn) and how the `max_tokens` it sends is
derived (`cap_rule`: `"budget"` = the budget, `"budget+slack"` = budget + `cap_slack`,
`"fixed"` = `max_tokens`, `"none"` = no cap of its own). These are properties of the checkpoint:
what was measured when training is exactly what is served. Manifests written before these
fields existed load with the defaults they implied (system message; cap = budget or
`max_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

UNLIMITED = "unlimited"

#: The instruction this project's own numeric-budget checkpoints were trained with (a project
#: wording, not the release's; the release's two protocols are in `RELEASE_PROTOCOLS`).
DEFAULT_BUDGET_INSTRUCTION = (
    "You MUST respond in {budget} tokens or fewer. Keep the answer complete but within this "
    "limit: skip preambles and put the final answer first."
)

CostTokens = Literal["budget", "predicted"]
PolicyKind = Literal["budget", "style", "free"]
Placement = Literal["system", "user_suffix"]
CapRule = Literal["budget", "budget+slack", "fixed", "none"]
KINDS: tuple[str, ...] = get_args(PolicyKind)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
CAP_RULES: tuple[str, ...] = get_args(CapRule)


@dataclass(frozen=True)
class ServingProtocol:
    """How numeric budgets are served: instruction template, its placement and the cap rule."""

    name: str
    instruction: str
    placement: Placement = "system"
    cap_rule: CapRule = "budget"
    cap_slack: int = 0

    def describe(self) -> str:
        cap = {"budget": "max_tokens = N", "budget+slack": f"max_tokens = N + {self.cap_slack}",
               "fixed": "fixed max_tokens", "none": "no max_tokens"}[self.cap_rule]
        where = "system message" if self.placement == "system" else "appended to the user turn"
        return f"{self.name}: {where}, {cap}"


#: The published R2-Router's two protocols. `generate` is its `generate()` (a system message,
#: no `max_tokens`); `r2bench` is how R2-Bench, the data its limited heads were fitted on, was
#: collected (appended to the user prompt, `max_tokens = N + 10`).
RELEASE_PROTOCOLS: dict[str, ServingProtocol] = {
    "r2bench": ServingProtocol(
        "r2bench", "You have a strict budget of {budget} words. You must answer at most "
        "{budget} words!", "user_suffix", "budget+slack", 10),
    "generate": ServingProtocol(
        "generate", "You MUST respond in {budget} tokens or fewer. Directly give the answer "
        "follow the format WITHOUT ANY explanation.", "system", "none"),
}
#: The protocol the release's heads were trained on (what `r2 import-checkpoint` defaults to).
RELEASE_DEFAULT_PROTOCOL = "r2bench"
#: This project's own protocol for numeric budgets (`r2 train` / `r2 collect` default).
PROJECT_PROTOCOL = ServingProtocol("project", DEFAULT_BUDGET_INSTRUCTION, "system", "budget")


@dataclass(frozen=True)
class Policy:
    """One output-length policy of a checkpoint.

    `cost_tokens` says which output-token count prices a candidate: `"budget"` charges the full
    budget (the release's rule for limited budgets), `"predicted"` uses the token head,
    capped at the policy's cap when there is one. `input_overhead_tokens` are input tokens the
    measured protocol billed beyond the conversation and instruction (fitted when training).
    """

    name: str
    budget: int | None = None
    max_tokens: int | None = None
    instruction: str | None = None
    cost_tokens: CostTokens = "predicted"
    kind: PolicyKind | None = None
    placement: Placement = "system"
    cap_rule: CapRule | None = None
    cap_slack: int = 0
    input_overhead_tokens: float = 0.0

    def __post_init__(self) -> None:
        # Older code and manifests give no kind or cap rule: infer what they meant, once.
        kind = self.kind or ("budget" if self.budget is not None
                             else "free" if self.name == UNLIMITED else "style")
        object.__setattr__(self, "kind", kind)
        if self.cap_rule is None:
            rule = ("budget" if kind == "budget" and self.max_tokens in (None, self.budget)
                    else "fixed" if self.max_tokens is not None else "none")
            object.__setattr__(self, "cap_rule", rule)
        if kind == "budget" and self.budget is None:
            raise ValueError("a budget policy needs a budget")
        if kind != "budget" and self.cap_rule in ("budget", "budget+slack"):
            raise ValueError(f"cap_rule {self.cap_rule!r} needs a numeric budget")
        if self.cap_rule == "fixed" and self.max_tokens is None:
            raise ValueError("cap_rule 'fixed' needs max_tokens")

    @property
    def label(self) -> int | str:
        """What clients see as the budget: the integer for numeric budgets, else the name."""
        return self.budget if self.kind == "budget" and self.budget is not None else self.name

    @property
    def is_unlimited(self) -> bool:
        return self.kind == "free"

    @property
    def cap(self) -> int | None:
        """The `max_tokens` sent under this policy (before the client's own cap), or None."""
        match self.cap_rule:
            case "budget":
                return self.budget
            case "budget+slack":
                return (self.budget or 0) + self.cap_slack
            case "fixed":
                return self.max_tokens
            case _:
                return None

    @property
    def limit(self) -> int | None:
        """How long an answer this policy asks for, to compare with a client's cap: the budget,
        else the cap; None for the budget-free arm (it asks for nothing)."""
        match self.kind:
            case "budget":
                return self.budget
            case "style":
                return self.cap
            case _:
                return None

    def render_instruction(self) -> str | None:
        """The instruction text for this policy, or None (the budget-free arm has none)."""
        if self.instruction is None or self.kind == "free":
            return None
        return self.instruction.replace("{budget}", str(self.budget or ""))

    @property
    def protocol(self) -> ServingProtocol:
        """How this policy is served, as a protocol (for numeric budgets)."""
        rule = self.cap_rule if self.cap_rule in ("budget", "budget+slack", "none") else "budget"
        return ServingProtocol(self.name, self.instruction or "", self.placement, rule,
                               self.cap_slack)

    def with_protocol(self, protocol: ServingProtocol) -> Policy:
        """This numeric budget served under `protocol` (other kinds are returned unchanged)."""
        if self.kind != "budget" or self.budget is None:
            return self
        return replace(budget_policy(self.budget, cost_tokens=self.cost_tokens,
                                     protocol=protocol),
                       name=self.name, input_overhead_tokens=self.input_overhead_tokens)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "budget": self.budget,
            "max_tokens": self.max_tokens,
            "instruction": self.instruction,
            "placement": self.placement,
            "cap_rule": self.cap_rule,
            "cap_slack": self.cap_slack,
            "cost_tokens": self.cost_tokens,
            "input_overhead_tokens": self.input_overhead_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        cost = data.get("cost_tokens", "predicted")
        if cost not in ("budget", "predicted"):
            raise ValueError(f"cost_tokens must be 'budget' or 'predicted', got {cost!r}")
        budget = data.get("budget")
        max_tokens = data.get("max_tokens")
        for key, value in (("budget", budget), ("max_tokens", max_tokens)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise ValueError(f"{key} must be a positive integer or null")
        name = data["name"]
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        instruction = data.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise ValueError("instruction must be a string or null")
        kind = _choice(data, "kind", KINDS, None)
        placement = _choice(data, "placement", PLACEMENTS, "system")
        rule = _choice(data, "cap_rule", CAP_RULES, None)
        slack = data.get("cap_slack", 0)
        if isinstance(slack, bool) or not isinstance(slack, int) or slack < 0:
            raise ValueError("cap_slack must be an integer >= 0")
        overhead = data.get("input_overhead_tokens", 0.0)
        if isinstance(overhead, bool) or not isinstance(overhead, int | float) \
                or overhead != overhead or abs(overhead) > 1e7:
            raise ValueError("input_overhead_tokens must be a finite number")
        return cls(name, budget, max_tokens, instruction, cost, kind, placement,  # type: ignore[arg-type]
                   rule, slack, float(overhead))  # type: ignore[arg-type]


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None
            ) -> str | None:
    value = data.get(key, default)
    if value is not None and value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def budget_policy(budget: int, instruction: str = DEFAULT_BUDGET_INSTRUCTION,
                  cost_tokens: CostTokens = "budget",
                  protocol: ServingProtocol | None = None) -> Policy:
    """A numeric token budget; by default this project's instruction and `max_tokens = budget`,
    or the instruction, placement and cap rule of `protocol`."""
    if protocol is not None:
        # `max_tokens` records the cap the rule gives (None for "none"), for readers.
        cap = {"budget": budget, "budget+slack": budget + protocol.cap_slack}.get(
            protocol.cap_rule)
        return Policy(str(budget), budget, cap, protocol.instruction, cost_tokens, "budget",
                      protocol.placement, protocol.cap_rule, protocol.cap_slack)
    return Policy(str(budget), budget, budget, instruction, cost_tokens, "budget")


def unlimited_policy() -> Policy:
    """The budget-free arm: no instruction, the client's or deployment's own max_tokens."""
    return Policy(UNLIMITED, None, None, None, "predicted", "free", cap_rule="none")


def parse_policy_label(value: str | int) -> str | int:
    """`"100"` -> 100, `"unlimited"` and names unchanged: how budgets appear in data and CLIs."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text
