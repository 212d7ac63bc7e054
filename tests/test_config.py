"""gateway.yaml: expansion, validation errors that name the field, the shipped templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.config import ConfigError, expand_env, load_settings, parse_settings

REPO = Path(__file__).resolve().parents[1]


def minimal(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"checkpoint": "ck", "deployments": [{"name": "a", "model": "openai/a"}]}
    cfg.update(over)
    return cfg


def test_env_expansion_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R2_T_HOST", "example.internal")
    monkeypatch.delenv("R2_T_MISSING", raising=False)
    out = expand_env({"a": "http://${R2_T_HOST}:1/v1", "b": ["${R2_T_MISSING:-fallback}"]})
    assert out == {"a": "http://example.internal:1/v1", "b": ["fallback"]}
    with pytest.raises(ConfigError, match="R2_T_MISSING"):
        expand_env({"x": {"y": "${R2_T_MISSING}"}})


@pytest.mark.parametrize(("cfg", "field"), [
    (minimal(deployments=[{"name": "a"}]), "deployments[0].model"),
    (minimal(default_lambda=3), "default_lambda"),
    (minimal(server={"max_body_bytes": -1}), "server.max_body_bytes"),
    (minimal(server={"typo_field": 1}), "server.typo_field"),
    (minimal(fallback_deployment="zzz"), "fallback_deployment"),
    (minimal(deployments=[{"name": "a", "model": "m", "api_key_env": "R2_T_UNSET_KEY"}]),
     "deployments[0].api_key_env"),
])
def test_invalid_config_names_the_field(cfg: dict[str, Any], field: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("R2_T_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_settings(cfg)
    assert str(err.value).startswith(field)


def test_provider_key_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R2_T_KEY", "sk-provider-very-secret")
    dep = {"name": "a", "model": "m", "api_key_env": "R2_T_KEY"}
    s = parse_settings(minimal(deployments=[dep]))
    assert s.deployments[0].api_key is not None
    assert s.deployments[0].api_key.get_secret_value() == "sk-provider-very-secret"
    assert "sk-provider-very-secret" not in repr(s) + str(s.model_dump())


def test_production_template_serves_the_shipped_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """gateway.yaml as shipped (its checkpoint is checkpoints/r2-release) starts a gateway;
    with vLLM down, routing answers 503 in the OpenAI envelope instead of hanging."""
    from starlette.testclient import TestClient

    from gateway.app import build_app

    monkeypatch.delenv("R2_CHECKPOINT", raising=False)
    monkeypatch.setenv("R2_EMBEDDINGS_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    monkeypatch.setenv("R2_GATEWAY_KEY", "gw-test")
    monkeypatch.chdir(REPO.parent)  # the checkpoint path is relative to gateway.yaml, not cwd
    settings = load_settings(REPO / "gateway.yaml")
    assert len(settings.deployments) == 11
    assert all(d.model.startswith("openrouter/") for d in settings.deployments)
    assert settings.checkpoint == REPO / "checkpoints" / "r2-release"
    with TestClient(build_app(settings)) as client:
        auth = {"authorization": "Bearer gw-test"}
        models = client.get("/v1/models", headers=auth).json()
        assert [m["id"] for m in models["data"]][0] == "r2-auto"
        resp = client.post("/v1/route", headers=auth, json={
            "model": "r2-auto", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "embedder_unavailable"


def test_local_example_points_every_deployment_at_the_local_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("R2_LOCAL_LLM_BASE", raising=False)
    raw = yaml.safe_load((REPO / "examples" / "local.yaml").read_text())
    deployments = raw["deployments"]
    assert len(deployments) >= 2
    assert all(d["api_base"] == "${R2_LOCAL_LLM_BASE:-http://127.0.0.1:8081/v1}"
               for d in deployments)
    assert len({d["model"] for d in deployments}) == len(deployments)
    settings = load_settings(REPO / "examples" / "local.yaml")
    assert settings.embedder.get("kind", "local-q8") == "local-q8"
    assert httpx.URL(settings.deployments[0].api_base or "").port == 8081
