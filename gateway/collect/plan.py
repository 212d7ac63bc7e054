"""What a collection run will ask: deployments, their prices, the policies and the arms.

Policies are the labels of `--policies` (`10,50,200,unlimited,concise_cot`), built with the
training code's `build_policies`, so named policies and the numeric budgets' protocol come from
the same policies file `r2 train --policies FILE` reads; the protocol used is recorded in the
data's meta, and `r2 train` carries it into the checkpoint the gateway serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from router_core import Policy, parse_policy_label
from router_core.training.policyfile import (
    PolicyFile,
    build_policies,
    load_policy_file,
    missing_instructions,
)

from ..config import ConfigError, Deployment, GatewaySettings
from .costs import Price
from .questions import Question
from .runner import Arm
from .store import Key, row_key


def parse_labels(text: str) -> list[int | str]:
    """`"10, 50,unlimited"` -> `[10, 50, "unlimited"]`; duplicates and empties are errors."""
    labels = [parse_policy_label(part) for part in text.split(",") if part.strip()]
    if not labels:
        raise ConfigError("--policies: give at least one policy, e.g. 10,50,200,unlimited")
    for label in labels:
        if isinstance(label, int) and label <= 0:
            raise ConfigError("--policies: a token budget must be a positive integer")
    if len({str(x) for x in labels}) != len(labels):
        raise ConfigError("--policies: a policy is listed twice")
    return labels


def resolve_policies(labels: Sequence[int | str], policy_file: str | Path | None
                     ) -> tuple[tuple[Policy, ...], PolicyFile | None]:
    """The `Policy` of each label; named ones must have an instruction in the policies file."""
    pfile = load_policy_file(policy_file) if policy_file else None
    policies = build_policies(labels, pfile)
    missing = missing_instructions(policies)
    if missing:
        raise ConfigError(f"--policies: named policy {missing[0]!r} has no instruction; "
                          "describe it in a --policy-file (the same file `r2 train "
                          "--policies` reads)")
    return policies, pfile


def select_deployments(settings: GatewaySettings, models: str | None) -> list[Deployment]:
    """`--models A,B`, or every deployment but the judge when not given."""
    if not models:
        judge = settings.judge.deployment if settings.judge else None
        chosen = [d for d in settings.deployments if d.name != judge and d.kind == "chat"]
        if not chosen:
            raise ConfigError("--models: the config has no deployment besides the judge")
        return chosen
    names = [m.strip() for m in models.split(",") if m.strip()]
    out = []
    for name in names:
        dep = settings.deployment(name)
        if dep is None:
            raise ConfigError(f"--models: {name!r} names no deployment of the config")
        if dep.kind != "chat":
            raise ConfigError(f"--models: {name!r} is an embedding deployment, not a chat one")
        out.append(dep)
    if len(set(names)) != len(names):
        raise ConfigError("--models: a deployment is listed twice")
    return out


def deployment_prices(settings: GatewaySettings, names: Iterable[str]) -> dict[str, Price]:
    """Prices per deployment by the gateway's rule (`gateway/pricing.py`): the deployment's,
    else the configured checkpoint's, else LiteLLM's price map, else an error."""
    from ..pricing import checkpoint_models, configured_checkpoint, resolve_price

    specs = checkpoint_models(configured_checkpoint(settings))
    out: dict[str, Price] = {}
    for name in names:
        index = next(i for i, d in enumerate(settings.deployments) if d.name == name)
        price = resolve_price(settings.deployments[index], index, specs.get(name))
        out[name] = Price(price.input_per_million, price.output_per_million)
    return out


def plan_arms(questions: Sequence[Question], deployments: Sequence[Deployment],
              policies: Sequence[Policy], done: set[Key]) -> list[Arm]:
    """Every (question, deployment, policy) not already in the output, question by question."""
    return [Arm(q, dep, policy)
            for q in questions for dep in deployments for policy in policies
            if row_key(q.query_id, dep.name, policy.label) not in done]
