"""Model prices: one rule for serving and for `r2 collect`.

A deployment's price per million input and output tokens is, field by field:

1. the deployment's own `input_price_per_million` / `output_price_per_million` in gateway.yaml
   (the user's prices win);
2. else the price of the checkpoint model of the same name (the list price it was trained with);
3. else the price map shipped with LiteLLM for the deployment's provider model (`model:` in
   gateway.yaml, with or without its `provider/` prefix);
4. else a `ConfigError` naming the deployment and the field to write.

Serving (`service.apply_prices`) and collecting (`collect.plan.deployment_prices`) both call
`resolve_price`, so what `r2 collect` records as cost is what the gateway prices requests at.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_core.checkpoint import MANIFEST, Checkpoint, ModelSpec, load_checkpoint

from .config import ConfigError, Deployment, GatewaySettings

PriceLookup = Callable[[str], "tuple[float, float] | None"]


@dataclass(frozen=True)
class ResolvedPrice:
    input_per_million: float
    output_per_million: float
    #: Where each field came from: `deployment`, `checkpoint` or `litellm`.
    source: tuple[str, str]


def litellm_price(model: str) -> tuple[float, float] | None:
    """USD per million (input, output) tokens from the price map shipped with LiteLLM, or None
    if `model` (with or without its `provider/` prefix) is not in it.

    The shipped file, not `litellm.model_cost`: building a `litellm.Router` registers every
    deployment's own prices into that global, so it would echo the gateway's prices back.
    """
    table = _shipped_price_map()
    keys = [model]
    if "/" in model:
        keys.append(model.split("/", 1)[1])
    for key in keys:
        entry = table.get(key)
        if isinstance(entry, dict):
            cin, cout = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
            if isinstance(cin, int | float) and isinstance(cout, int | float):
                return float(cin) * 1e6, float(cout) * 1e6
    return None


@functools.cache
def _shipped_price_map() -> dict[str, Any]:
    import json
    from importlib import resources

    try:
        text = (resources.files("litellm") / "model_prices_and_context_window_backup.json"
                ).read_text(encoding="utf-8")
        table = json.loads(text)
    except (OSError, ValueError, ModuleNotFoundError):
        return {}
    return table if isinstance(table, dict) else {}


def resolve_price(dep: Deployment, index: int, spec: ModelSpec | None,
                  lookup: PriceLookup = litellm_price) -> ResolvedPrice:
    """The price of deployment `dep` (`deployments[index]`) by the rule of this module."""
    values: list[float] = []
    sources: list[str] = []
    mapped: tuple[float, float] | None = None
    looked_up = False
    for k, field in enumerate(("input_price_per_million", "output_price_per_million")):
        own = getattr(dep, field)
        if own is not None:
            values.append(float(own))
            sources.append("deployment")
            continue
        if spec is not None:
            values.append(float(getattr(spec, field)))
            sources.append("checkpoint")
            continue
        if not looked_up:
            mapped, looked_up = lookup(dep.model), True
        if mapped is None:
            raise ConfigError(f"deployments[{index}].{field}: no prices for {dep.name!r}: "
                              "neither gateway.yaml, nor the checkpoint, nor LiteLLM's price "
                              f"map for {dep.model!r} has them; write both prices (0 for a "
                              "free model)")
        values.append(mapped[k])
        sources.append("litellm")
    return ResolvedPrice(values[0], values[1], (sources[0], sources[1]))


def checkpoint_models(ckpt: Checkpoint | None) -> dict[str, ModelSpec]:
    return {} if ckpt is None else {m.name: m for m in ckpt.models}


def configured_checkpoint(settings: GatewaySettings) -> Checkpoint | None:
    """The checkpoint gateway.yaml points at, for its prices; None when there is none there
    (`r2 collect` can run before any checkpoint exists)."""
    root = Path(settings.checkpoint)
    if not (root / MANIFEST).is_file():
        return None
    return load_checkpoint(root)
