"""One price rule for serving and `r2 collect`: deployment, else checkpoint, else LiteLLM's
price map for the provider model, else a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import gateway_settings, tiny_checkpoint

from gateway.collect.plan import deployment_prices
from gateway.config import ConfigError, parse_settings
from gateway.pricing import litellm_price, resolve_price
from gateway.service import apply_prices
from router_core import load_checkpoint


def settings(ckpt: Path, **per_model: dict[str, object]) -> dict[str, object]:
    raw = gateway_settings(ckpt, "http://127.0.0.1:9")
    for dep in raw["deployments"]:  # type: ignore[attr-defined]
        dep.update(per_model.get(dep["name"], {}))
    return raw


def test_deployment_then_checkpoint_field_by_field(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "c", prices={"strong": (3.0, 6.0), "weak": (0.5, 1.0)})
    raw = settings(ckpt, strong={"input_price_per_million": 9.0})
    s = parse_settings(raw)
    priced = apply_prices(load_checkpoint(ckpt), s)
    strong = next(m for m in priced.models if m.name == "strong")
    assert (strong.input_price_per_million, strong.output_price_per_million) == (9.0, 6.0)
    collected = deployment_prices(s, ["strong", "weak"])
    assert (collected["strong"].input_per_million, collected["strong"].output_per_million) == \
        (9.0, 6.0)
    assert (collected["weak"].input_per_million, collected["weak"].output_per_million) == \
        (0.5, 1.0)


def test_collect_uses_the_checkpoint_prices_serving_uses(tmp_path: Path) -> None:
    """Before: `r2 collect` refused a deployment without prices the checkpoint had."""
    ckpt = tiny_checkpoint(tmp_path / "c")
    s = parse_settings(settings(ckpt))
    priced = {m.name: (m.input_price_per_million, m.output_price_per_million)
              for m in apply_prices(load_checkpoint(ckpt), s).models}
    collected = {k: (v.input_per_million, v.output_per_million)
                 for k, v in deployment_prices(s, ["strong", "weak"]).items()}
    assert collected == priced


def test_litellm_price_map_then_a_clear_error(tmp_path: Path) -> None:
    raw = settings(tmp_path / "no-checkpoint", strong={"model": "openai/gpt-4"})
    s = parse_settings(raw)
    looked_up = litellm_price("openai/gpt-4")
    assert looked_up is not None and looked_up[1] > looked_up[0] > 0
    got = deployment_prices(s, ["strong"])["strong"]
    assert (got.input_per_million, got.output_per_million) == pytest.approx(looked_up)
    with pytest.raises(ConfigError) as info:
        deployment_prices(s, ["weak"])  # openai/up-weak: in no price map
    message = str(info.value)
    assert "deployments[1].input_price_per_million" in message and "'weak'" in message
    assert "LiteLLM" in message


def test_resolve_price_reports_sources(tmp_path: Path) -> None:
    s = parse_settings(settings(tmp_path / "none", weak={"output_price_per_million": 2.0}))
    dep = s.deployments[1]
    price = resolve_price(dep, 1, None, lookup=lambda model: (1.0, 5.0))
    assert (price.input_per_million, price.output_per_million) == (1.0, 2.0)
    assert price.source == ("litellm", "deployment")
