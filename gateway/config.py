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

from router_core import InvalidInputError
from router_core.embedders import check_options
from router_core.policies import RELEASE_PROTOCOLS, CapRule, Placement, ServingProtocol

from .decisionlog.settings import ExploreSettings, LogSettings
from .state.settings import RateLimitSettings, SessionSettings, StateSettings

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
    #: `embedding`: served on `/v1/embeddings` only; never a routing candidate, needs no prices.
    kind: Literal["chat", "embedding"] = "chat"

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
    #: Routing-text embeddings remembered (an LRU keyed by the text's hash); 0 disables it.
    embed_cache_size: int = Field(default=4096, ge=0)
    #: The interpreter's thread switch interval while serving (`sys.setswitchinterval`), in ms.
    #: The embedding thread waits up to this long for the interpreter lock after each ONNX run
    #: while the event loop is busy: Python's default, 5 ms, halved its throughput next to a busy
    #: thread, and under load 1 ms cut the embedding queue from 14-17 to 5 ms mean
    #: (docs/benchmarks-gateway.md, "The interpreter lock").
    gil_switch_interval_ms: float = Field(default=1.0, gt=0, le=100)
    cooldown: CooldownSettings = Field(default_factory=CooldownSettings)
    log_prompts: bool = False
    # Transport limits (docs/reliability.md): what one client or upstream can hold.
    #: Bytes of a request head (request line and headers); beyond it, 431.
    max_header_bytes: int = Field(default=32 * 1024, gt=0)
    #: Header lines in a request; beyond it, 431.
    max_headers: int = Field(default=100, gt=0)
    #: Seconds from a connection's first byte (or its last response) to a complete request head.
    header_timeout_s: float = Field(default=10.0, gt=0)
    #: Seconds to receive the body once the head is in (408); no admission slot is held meanwhile.
    body_timeout_s: float = Field(default=15.0, gt=0)
    #: Messages in one request; beyond it, 400.
    max_messages: int = Field(default=2048, gt=0)
    #: Bytes of one upstream answer (a JSON body, or a whole stream); beyond it, 502.
    max_response_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: Total seconds one stream may run, whatever its pace; then it ends with an error event.
    max_stream_s: float = Field(default=1800.0, gt=0)
    #: Open client connections; beyond it, uvicorn answers 503 (keep it under `ulimit -n`).
    max_connections: int = Field(default=2048, gt=0)

    #: Whether `/metrics` and `/readyz` need a key too (when `api_keys` is set). Off by
    #: default: probes and scrapers usually cannot send one. `/healthz` is always open.
    protect_probes: bool = False
    #: How long `/readyz` reuses its embedding probe, so probes cannot load the embedder.
    readiness_cache_s: float = Field(default=2.0, ge=0)
    #: Worker processes on one port (`r2 serve --workers` overrides); docs/scaling.md.
    workers: int = Field(default=1, ge=1, le=256)
    #: Requests per API key in a window, across replicas with `state.redis_url` (429 beyond).
    rate_limits: RateLimitSettings | None = None

    @field_validator("api_keys")
    @classmethod
    def _no_empty_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        # An empty key usually means `${R2_GATEWAY_KEY}` expanded from an empty variable:
        # dropping it would silently serve without authentication.
        for i, key in enumerate(keys):
            if not key.get_secret_value().strip():
                raise ValueError(f"key {i} is empty or whitespace (an empty environment "
                                 "variable?); remove it to serve without authentication")
        return keys


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


class PacingSettings(_Strict):
    """Spend pacing (gateway/pacing.py): moves the default trade-off so that the realised spend
    tracks `usd_per_hour`; requests that send their own knob are not touched."""

    usd_per_hour: float = Field(gt=0)
    time_constant_s: float = Field(default=600.0, gt=0)
    min_tradeoff: float = Field(default=0.0, ge=0, le=1)
    max_tradeoff: float = Field(default=1.0, ge=0, le=1)


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
    embedder: dict[str, Any] = Field(default_factory=lambda: {"kind": "local-q8"})
    #: Raw lambda for requests without a knob header (release parity; prefer default_tradeoff).
    default_lambda: float | None = Field(default=None, ge=0, le=1)
    #: Calibrated trade-off for requests without a knob header (needs a checkpoint table).
    default_tradeoff: float | None = Field(default=None, ge=0, le=1)
    pacing: PacingSettings | None = None
    #: Off by default: numeric budgets are served exactly as the checkpoint says. A release
    #: protocol name (`r2bench`, `generate`) or an explicit instruction/placement/cap rule.
    budget_protocol_override: Literal["r2bench", "generate"] | BudgetProtocolOverride | None = None
    input_tokens: Literal["tokenizer", "cl100k", "words1.3"] | None = None
    deployments: list[Deployment] = Field(min_length=1)
    fallback_deployment: str | None = None
    server: ServerSettings = Field(default_factory=ServerSettings)
    judge: JudgeSettings | None = None
    #: The decision log (gateway/decisionlog/): off unless set.
    log: LogSettings | None = None
    #: Exploration with propensities (needs `log:` to be of use).
    explore: ExploreSettings | None = None
    #: Shared state (`redis_url`) for workers and replicas; in the process when unset.
    state: StateSettings | None = None
    sessions: SessionSettings = Field(default_factory=SessionSettings)

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


#: Bounds on a config file: its size, YAML aliases (an alias "bomb" expands exponentially when
#: walked) and nesting. Real configs are a few KB with no aliases and a handful of levels.
MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_DEPTH = 32
MAX_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses more than `MAX_ALIASES` aliases or `MAX_DEPTH` levels."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(value: Any) -> int:
    """How many values `value` holds once aliases are expanded (a few aliases nested can stand
    for billions). Shared nodes are counted once per reference, computed once per node."""
    sizes: dict[int, int] = {}

    def size(item: Any) -> int:
        if not isinstance(item, dict | list):
            return 1
        known = sizes.get(id(item))
        if known is None:
            children = item.values() if isinstance(item, dict) else item
            known = sizes[id(item)] = 1 + sum(size(child) for child in children)
        return known

    return size(value)


def load_settings(path: str | Path) -> GatewaySettings:
    """Read, expand and validate a gateway YAML file; relative paths resolve against it.
    Every error is one line naming the file and the field."""
    cfg_path = Path(path)
    try:
        if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{cfg_path}: larger than {MAX_CONFIG_BYTES} bytes")
        text = cfg_path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {cfg_path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{cfg_path}: not UTF-8 text") from None
    loader = _BoundedLoader(text)
    try:
        raw = loader.get_single_data()
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: the config must be a mapping")
    if _expanded_size(raw) > MAX_VALUES:
        raise ConfigError(f"{cfg_path}: expands to more than {MAX_VALUES} values through YAML "
                          "aliases")
    try:
        settings = parse_settings(expand_env(raw), base_dir=cfg_path.resolve().parent)
        check_options(settings.embedder)
    except ConfigError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from None
    except InvalidInputError as exc:
        raise ConfigError(f"{cfg_path}: {exc.param or 'embedder'}: {exc}") from None
    return settings


def _check_knobs(settings: GatewaySettings) -> None:
    if settings.default_lambda is not None and settings.default_tradeoff is not None:
        raise ConfigError("default_lambda and default_tradeoff: set one of them, not both")
    pacing = settings.pacing
    if pacing is not None:
        if settings.default_lambda is not None:
            raise ConfigError("pacing: moves the default trade-off; replace default_lambda "
                              "with default_tradeoff")
        if pacing.min_tradeoff > pacing.max_tradeoff:
            raise ConfigError("pacing.min_tradeoff: must not exceed pacing.max_tradeoff")


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
    _check_knobs(settings)
    if settings.fallback_deployment and settings.deployment(
            settings.fallback_deployment).kind != "chat":  # type: ignore[union-attr]
        raise ConfigError("fallback_deployment: names an embedding deployment")
    if settings.judge and settings.judge.deployment not in names:
        raise ConfigError("judge.deployment: names no deployment")
    ckpt = settings.checkpoint
    if base_dir is not None and not ckpt.is_absolute():
        candidate = (base_dir / ckpt)
        ckpt = candidate if candidate.exists() else ckpt
    return settings.model_copy(update={"deployments": deployments, "checkpoint": ckpt})
