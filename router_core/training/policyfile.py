"""The policies a checkpoint may apply: instruction templates and `max_tokens` per policy.

Numeric budgets get the release's instruction (`DEFAULT_BUDGET_INSTRUCTION`, or the file's
`budget_instruction`) and `max_tokens = budget`; `unlimited` gets none. Named policies
(`answer_only`, `concise_cot`, ...) take theirs from an optional policies file (YAML or JSON)::

    budget_instruction: "You MUST respond in {budget} tokens or fewer."   # optional
    policies:
      concise_cot:
        instruction: "Think step by step, but be concise. ..."
        max_tokens: 512          # optional: the cap the gateway sends

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
    DEFAULT_BUDGET_INSTRUCTION,
    UNLIMITED,
    Policy,
    budget_policy,
    parse_policy_label,
)
from .errors import DataError

POLICY_KEYS = ("instruction", "max_tokens")


@dataclass(frozen=True)
class NamedPolicy:
    instruction: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class PolicyFile:
    budget_instruction: str = DEFAULT_BUDGET_INSTRUCTION
    named: dict[str, NamedPolicy] = field(default_factory=dict)
    path: str | None = None


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
    unknown = set(raw) - {"budget_instruction", "policies"}
    if unknown:
        raise DataError("unknown key", file=str(src), field=sorted(unknown)[0])
    template = raw.get("budget_instruction", DEFAULT_BUDGET_INSTRUCTION)
    if not isinstance(template, str) or not template.strip():
        raise DataError("must be a non-empty string", file=str(src), field="budget_instruction")
    entries = raw.get("policies") or {}
    if not isinstance(entries, dict):
        raise DataError("must be a mapping of policy name to settings", file=str(src),
                        field="policies")
    named = {str(name): _entry(spec, str(src), f"policies.{name}")
             for name, spec in entries.items()}
    return PolicyFile(template, named, str(src))


def _entry(spec: Any, file: str, where: str) -> NamedPolicy:
    if not isinstance(spec, dict):
        raise DataError("must be a mapping with instruction and max_tokens", file=file,
                        field=where)
    unknown = set(spec) - set(POLICY_KEYS)
    if unknown:
        raise DataError("unknown key", file=file, field=f"{where}.{sorted(unknown)[0]}")
    instruction = spec.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise DataError("must be a non-empty string", file=file, field=f"{where}.instruction")
    max_tokens = spec.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens <= 0):
        raise DataError("must be a positive integer", file=file, field=f"{where}.max_tokens")
    return NamedPolicy(instruction, max_tokens)


def with_collected(pfile: PolicyFile | None, collected: Mapping[str, Mapping[str, Any]],
                   file: str = "meta") -> PolicyFile | None:
    """`pfile` completed by the named policies `r2 collect` recorded in the data's meta; the
    policies file wins where both describe a policy."""
    named = {}
    for name, spec in collected.items():
        if parse_policy_label(name) == name and name != UNLIMITED:
            named[name] = _entry(dict(spec), file, f"collect.policies.{name}")
    if not named:
        return pfile
    base = pfile or PolicyFile()
    return replace(base, named={**named, **base.named})


def build_policies(labels: Sequence[int | str], pfile: PolicyFile | None = None
                   ) -> tuple[Policy, ...]:
    """One `Policy` per data label, in the data's order."""
    pfile = pfile or PolicyFile()
    out: list[Policy] = []
    for label in labels:
        if isinstance(label, int):
            out.append(budget_policy(label, pfile.budget_instruction, cost_tokens="predicted"))
        elif label == UNLIMITED:
            out.append(Policy(UNLIMITED, None, None, None, "predicted"))
        else:
            spec = pfile.named.get(label, NamedPolicy())
            out.append(Policy(label, None, spec.max_tokens, spec.instruction, "predicted"))
    return tuple(out)


def missing_instructions(policies: Sequence[Policy]) -> list[str]:
    """Named policies the gateway could not apply (no instruction)."""
    return [p.name for p in policies
            if p.budget is None and p.name != UNLIMITED and not p.instruction]
