"""Gateway settings: `gateway.yaml`, expanded and validated once at start-up.

`${VAR}` and `${VAR:-default}` are expanded in every string before validation; an unset
variable without a default is an error naming it. Validation errors name the field
(`deployments[1].model: field required`). Provider keys are never stored in the file: a
deployment names the environment variable that holds its key (`api_key_env`), read into a
`SecretStr` so it cannot leak through `repr` or logs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from router_core.policies import RELEASE_PROTOCOLS, CapRule, Placement, ServingProtocol

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The gateway configuration is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Deployment(_Strict):
    """One upstream model: `name` as in the checkpoint, `model` as LiteLLM spells it."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = Field(default=None, exclude=True)
    input_price_per_million: float | None = Field(default=None, ge=0)
    output_price_per_million: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    #: The request field this deployment honours for the output cap (None: per provider).
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    timeout_s: float | None = Field(default=None, gt=0)

    @property
    def cap_field(self) -> str:
        """`max_completion_tokens` for OpenAI's and Azure's own APIs (their current field),
        `max_tokens` everywhere else (OpenAI-compatible servers such as llama.cpp and older
        vLLM ignore `max_completion_tokens`; LiteLLM maps `max_tokens` for other providers)."""
        if self.max_tokens_field is not None:
            return self.max_tokens_field
        provider = self.model.split("/", 1)[0] if "/" in self.model else "openai"
        if provider in ("openai", "azure") and self.api_base is None:
            return "max_completion_tokens"
        return "max_tokens"


class CooldownSettings(_Strict):
    allowed_fails: int = Field(default=3, ge=1)
    window_s: float = Field(default=60.0, gt=0)
    cooldown_s: float = Field(default=30.0, gt=0)


class ServerSettings(_Strict):
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    num_retries: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=64, gt=0)
    embed_batch_window_ms: float = Field(default=2.0, ge=0)
    embed_max_batch: int = Field(default=32, gt=0)
    embed_timeout_s: float = Field(default=10.0, gt=0)
    cooldown: CooldownSettings = Field(default_factory=CooldownSettings)
    log_prompts: bool = False

    @field_validator("api_keys")
    @classmethod
    def _no_empty_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        return [k for k in keys if k.get_secret_value()]


class JudgeSettings(_Strict):
    """The LLM judge `r2 collect` uses for open-ended questions (not used when serving)."""

    deployment: str = Field(min_length=1)
    prompt: str | None = None
    max_tokens: int = Field(default=64, gt=0)

    @field_validator("prompt")
    @classmethod
    def _prompt_has_slots(cls, prompt: str | None) -> str | None:
        if prompt is not None and not all(s in prompt for s in ("{question}", "{answer}")):
            raise ValueError("the judge prompt must contain {question} and {answer}")
        return prompt


class BudgetProtocolOverride(_Strict):
    """Serve every numeric budget with this instruction, placement and cap rule instead of the
    checkpoint's (logged at start-up: heads measured under another protocol may mispredict)."""

    instruction: str = Field(min_length=1)
    placement: Placement = "system"
    cap_rule: CapRule = "budget"
    cap_slack: int = Field(default=0, ge=0)

    @field_validator("cap_rule")
    @classmethod
    def _numeric_rule(cls, rule: str) -> str:
        if rule == "fixed":
            raise ValueError("a budget protocol's cap_rule is budget, budget+slack or none")
        return rule

    def protocol(self) -> ServingProtocol:
        return ServingProtocol("override", self.instruction, self.placement, self.cap_rule,
                               self.cap_slack)


class GatewaySettings(_Strict):
    checkpoint: Path
    #: Pins the checkpoint: sha256 of its manifest.json (which holds the arrays' sha256s).
    checkpoint_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    embedder: dict[str, Any] = Field(default_factory=lambda: {"kind": "local"})
    default_lambda: float = Field(default=0.99999, ge=0, le=1)
    #: Off by default: numeric budgets are served exactly as the checkpoint says. A release
    #: protocol name (`r2bench`, `generate`) or an explicit instruction/placement/cap rule.
    budget_protocol_override: Literal["r2bench", "generate"] | BudgetProtocolOverride | None = None
    input_tokens: Literal["tokenizer", "cl100k", "words1.3"] | None = None
    deployments: list[Deployment] = Field(min_length=1)
    fallback_deployment: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    judge: JudgeSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "budget_instruction" in data:
            raise ValueError("budget_instruction was removed: budgets are served as the "
                             "checkpoint says; to override, set budget_protocol_override "
                             "(see README)")
        return data

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)

    def override_protocol(self) -> ServingProtocol | None:
        """The named override of the checkpoint's budget protocol, or None (the default)."""
        value = self.budget_protocol_override
        if value is None:
            return None
        return RELEASE_PROTOCOLS[value] if isinstance(value, str) else value.protocol()


def expand_env(value: Any, path: str = "") -> Any:
    """Expand `${VAR}` / `${VAR:-default}` in all strings of a parsed YAML tree."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or 'value'}: environment variable {name} is not set")
        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def load_settings(path: str | Path) -> GatewaySettings:
    """Read, expand and validate a gateway YAML file; relative paths resolve against it."""
    cfg_path = Path(path)
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {cfg_path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: the config must be a mapping")
    settings = parse_settings(expand_env(raw), base_dir=cfg_path.resolve().parent)
    return settings


def parse_settings(raw: dict[str, Any], base_dir: Path | None = None) -> GatewaySettings:
    try:
        settings = GatewaySettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{_field_name(first['loc'])}: {first['msg']}{more}") from None
    deployments = []
    for i, dep in enumerate(settings.deployments):
        key = None
        if dep.api_key_env:
            value = os.environ.get(dep.api_key_env)
            if value is None:
                raise ConfigError(f"deployments[{i}].api_key_env: environment variable "
                                  f"{dep.api_key_env} is not set")
            key = SecretStr(value)
        deployments.append(dep.model_copy(update={"api_key": key}))
    names = [d.name for d in deployments]
    if len(set(names)) != len(names):
        raise ConfigError("deployments: deployment names must be unique")
    if settings.fallback_deployment and settings.fallback_deployment not in names:
        raise ConfigError("fallback_deployment: names no deployment")
    if settings.judge and settings.judge.deployment not in names:
        raise ConfigError("judge.deployment: names no deployment")
    ckpt = settings.checkpoint
    if base_dir is not None and not ckpt.is_absolute():
        candidate = (base_dir / ckpt)
        ckpt = candidate if candidate.exists() else ckpt
    return settings.model_copy(update={"deployments": deployments, "checkpoint": ckpt})
