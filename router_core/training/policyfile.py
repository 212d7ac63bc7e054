"""The policies a checkpoint may apply: instruction templates and `max_tokens` per policy.

Numeric budgets get the release's instruction (`DEFAULT_BUDGET_INSTRUCTION`, or the file's
`budget_instruction`) and `max_tokens = budget`; `unlimited` gets none. Named policies
(`answer_only`, `concise_cot`, ...) take theirs from an optional policies file (YAML or JSON)::

    budget_instruction: "You MUST respond in {budget} tokens or fewer."   # optional
    budget_placement: system     # optional: system (default) or user_suffix
    budget_cap_rule: budget      # optional: budget (default), budget+slack or none
    budget_cap_slack: 0          # optional: the slack of budget+slack
    # or instead of the four above: budget_protocol: r2bench | generate | project
    policies:
      concise_cot:
        instruction: "Think step by step, but be concise. ..."
        max_tokens: 512          # optional: the cap the gateway sends
        placement: system        # optional: system (default) or user_suffix

Outcome files written by `r2 collect` record what each named policy sent in their meta; those
are used where the policies file does not describe the policy. A named policy neither
describes is stored without an instruction; training and
evaluation work, and the gateway refuses to serve that checkpoint until it is retrained with
one. All trained policies price candidates with the token head (`cost_tokens="predicted"`),
since outcome data records the tokens models really produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..policies import (
    CAP_RULES,
    PLACEMENTS,
    PROJECT_PROTOCOL,
    RELEASE_PROTOCOLS,
    UNLIMITED,
    Placement,
    Policy,
    ServingProtocol,
    budget_policy,
    parse_policy_label,
)
from .errors import DataError

POLICY_KEYS = ("instruction", "max_tokens", "placement")
BUDGET_KEYS = ("budget_instruction", "budget_placement", "budget_cap_rule", "budget_cap_slack",
               "budget_protocol")
#: Keys `r2 collect` records per policy in the data's meta (`collect.policies`).
COLLECTED_KEYS = ("instruction", "template", "max_tokens", "placement", "cap_rule", "cap_slack",
                  "kind")


@dataclass(frozen=True)
class NamedPolicy:
    instruction: str | None = None
    max_tokens: int | None = None
    placement: Placement = "system"


@dataclass(frozen=True)
class PolicyFile:
    budget_protocol: ServingProtocol = PROJECT_PROTOCOL
    named: dict[str, NamedPolicy] = field(default_factory=dict)
    path: str | None = None
    #: Whether the file itself describes the budget protocol (it then wins over the meta's).
    explicit_budget: bool = False

    @property
    def budget_instruction(self) -> str:
        return self.budget_protocol.instruction


def load_policy_file(path: str | Path) -> PolicyFile:
    """Parse and check a policies file; errors name the file and the field."""
    import yaml

    src = Path(path)
    try:
        raw = yaml.safe_load(src.read_text())
    except OSError as exc:
        raise DataError(f"cannot read policies file: {exc.strerror}", file=str(src)) from None
    except yaml.YAMLError as exc:
        raise DataError(f"invalid YAML/JSON: {exc}", file=str(src)) from None
    if not isinstance(raw, dict):
        raise DataError("a policies file must be a mapping", file=str(src))
    unknown = set(raw) - {*BUDGET_KEYS, "policies"}
    if unknown:
        raise DataError("unknown key", file=str(src), field=sorted(unknown)[0])
    protocol = _budget_protocol(raw, str(src))
    entries = raw.get("policies") or {}
    if not isinstance(entries, dict):
        raise DataError("must be a mapping of policy name to settings", file=str(src),
                        field="policies")
    named = {str(name): _entry(spec, str(src), f"policies.{name}")
             for name, spec in entries.items()}
    return PolicyFile(protocol, named, str(src), any(k in raw for k in BUDGET_KEYS))


def _budget_protocol(raw: dict[str, Any], file: str) -> ServingProtocol:
    name = raw.get("budget_protocol")
    if name is not None:
        if set(raw) & set(BUDGET_KEYS[:-1]):
            raise DataError("give budget_protocol or the budget_* keys, not both", file=file,
                            field="budget_protocol")
        known = {**RELEASE_PROTOCOLS, "project": PROJECT_PROTOCOL}
        if name not in known:
            raise DataError(f"must be one of {', '.join(known)}", file=file,
                            field="budget_protocol")
        return known[name]
    template = raw.get("budget_instruction", PROJECT_PROTOCOL.instruction)
    if not isinstance(template, str) or not template.strip():
        raise DataError("must be a non-empty string", file=file, field="budget_instruction")
    placement = raw.get("budget_placement", "system")
    if placement not in PLACEMENTS:
        raise DataError(f"must be one of {', '.join(PLACEMENTS)}", file=file,
                        field="budget_placement")
    rule = raw.get("budget_cap_rule", "budget")
    if rule not in CAP_RULES or rule == "fixed":
        raise DataError("must be budget, budget+slack or none", file=file,
                        field="budget_cap_rule")
    slack = raw.get("budget_cap_slack", 0)
    if isinstance(slack, bool) or not isinstance(slack, int) or slack < 0:
        raise DataError("must be an integer >= 0", file=file, field="budget_cap_slack")
    return ServingProtocol("policies-file", template, placement, rule, slack)


def _entry(spec: Any, file: str, where: str, keys: tuple[str, ...] = POLICY_KEYS
           ) -> NamedPolicy:
    if not isinstance(spec, dict):
        raise DataError("must be a mapping with instruction and max_tokens", file=file,
                        field=where)
    unknown = set(spec) - set(keys)
    if unknown:
        raise DataError("unknown key", file=file, field=f"{where}.{sorted(unknown)[0]}")
    instruction = spec.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise DataError("must be a non-empty string", file=file, field=f"{where}.instruction")
    max_tokens = spec.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens <= 0):
        raise DataError("must be a positive integer", file=file, field=f"{where}.max_tokens")
    placement = spec.get("placement", "system")
    if placement not in PLACEMENTS:
        raise DataError(f"must be one of {', '.join(PLACEMENTS)}", file=file,
                        field=f"{where}.placement")
    return NamedPolicy(instruction, max_tokens, placement)


def with_collected(pfile: PolicyFile | None, collected: Mapping[str, Mapping[str, Any]],
                   file: str = "meta") -> PolicyFile | None:
    """`pfile` completed by the named policies `r2 collect` recorded in the data's meta; the
    policies file wins where both describe a policy."""
    named = {}
    budget_specs = []
    for name, spec in collected.items():
        label = parse_policy_label(name)
        if isinstance(label, int) and isinstance(spec, Mapping):
            budget_specs.append(spec)
        elif label == name and name != UNLIMITED:
            entry = dict(spec)
            if "template" in entry:  # the unrendered text, when the collector recorded it
                entry["instruction"] = entry.pop("template")
            keys = ("instruction", "max_tokens", "placement")
            unknown = set(entry) - set(COLLECTED_KEYS)
            if unknown:
                raise DataError("unknown key", file=file,
                                field=f"collect.policies.{name}.{sorted(unknown)[0]}")
            named[name] = _entry({k: v for k, v in entry.items() if k in keys}, file,
                                 f"collect.policies.{name}", keys)
    protocol = _collected_budget_protocol(budget_specs, file)
    if not named and protocol is None:
        return pfile
    base = pfile or PolicyFile()
    if protocol is not None and not base.explicit_budget:
        base = replace(base, budget_protocol=protocol)
    return replace(base, named={**named, **base.named})


def _collected_budget_protocol(specs: Sequence[Mapping[str, Any]], file: str
                               ) -> ServingProtocol | None:
    """The protocol numeric budgets were collected with, when the meta records it."""
    found = {(s.get("template"), s.get("placement", "system"), s.get("cap_rule"),
              s.get("cap_slack", 0)) for s in specs if s.get("template") and s.get("cap_rule")}
    if not found:
        return None
    if len(found) > 1:
        raise DataError("numeric budgets were collected with different instructions or caps",
                        file=file, field="collect.policies")
    template, placement, rule, slack = found.pop()
    raw = {"budget_instruction": template, "budget_placement": placement,
           "budget_cap_rule": rule, "budget_cap_slack": slack}
    return replace(_budget_protocol(raw, file), name="collected")


def build_policies(labels: Sequence[int | str], pfile: PolicyFile | None = None
                   ) -> tuple[Policy, ...]:
    """One `Policy` per data label, in the data's order."""
    pfile = pfile or PolicyFile()
    out: list[Policy] = []
    for label in labels:
        if isinstance(label, int):
            out.append(budget_policy(label, cost_tokens="predicted",
                                     protocol=pfile.budget_protocol))
        elif label == UNLIMITED:
            out.append(Policy(UNLIMITED, None, None, None, "predicted", "free"))
        else:
            spec = pfile.named.get(label, NamedPolicy())
            out.append(Policy(label, None, spec.max_tokens, spec.instruction, "predicted",
                              "style", spec.placement))
    return tuple(out)


def missing_instructions(policies: Sequence[Policy]) -> list[str]:
    """Named policies the gateway could not apply (no instruction)."""
    return [p.name for p in policies if p.kind == "style" and not p.instruction]
