"""Forwarding through LiteLLM, with per-deployment cooldown and hot-path trimming.

`Upstream` owns one `litellm.Router` built from the configured deployments (never from client
input: the client can only name a deployment). LiteLLM's own cooldowns are off; the gateway
keeps its own `Cooldowns` so the router core can route around a failing model to the next-best
candidate on another one, and bring it back after the cooldown.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from .config import Deployment, GatewaySettings
from .transport import (
    Attempt,
    CappedTransport,
    GuardedTransport,
    base_transport,
    track,
    upstream_http_client,
)

#: Client fields passed to LiteLLM as OpenAI parameters. For providers that speak the OpenAI
#: wire format, anything LiteLLM would drop (e.g. `user` for non-catalog models) or does not
#: know goes in `extra_body`, which LiteLLM forwards to the provider without interpreting it.
OPENAI_PARAMS = frozenset({
    "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop",
    "stream", "stream_options", "temperature", "top_p", "tools", "tool_choice",
    "parallel_tool_calls", "user", "functions", "function_call", "modalities", "audio",
    "prediction", "reasoning_effort", "service_tier", "store", "web_search_options",
    "verbosity", "safety_identifier", "prompt_cache_key", "extra_body", "metadata",
})
#: Containers that mean "not given" when null; LiteLLM refuses a null `metadata`.
NULL_MEANS_ABSENT = frozenset({"metadata", "extra_body", "stream_options", "response_format"})
#: Providers whose LiteLLM code path sends through an `AsyncHTTPHandler` it is given (checked
#: end to end against tests/rogue.py); `openai` goes through the OpenAI SDK instead.
HTTP_HANDLER_PROVIDERS = frozenset({"openrouter", "hosted_vllm"})
OPENAI_WIRE_PROVIDERS = frozenset({"openai", "hosted_vllm", "openai_like", "custom_openai",
                                   "llamafile", "lm_studio", "text-completion-openai"})


def configure_litellm() -> Any:
    """Import LiteLLM with its network and hot-path extras switched off; returns the module.

    Measured per call (cProfile, docs/benchmarks-gateway.md): with no callback registered,
    LiteLLM still prices every response and builds its standard logging payload; no setting
    turns either off. What can be turned off is, here:

    - Message redaction: `turn_off_message_logging=True` makes every call deep-copy the logging
      payload to blank its messages, 5,400 more Python function calls per request on top of
      10,300 (+53 %). It only matters to logging callbacks, and none is registered (the lists
      are emptied below), so prompts reach no logger either way.
    - Callbacks, verbose printing, debug hints in errors, telemetry, and fetching the price map
      from the network at import (the bundled copy is used).
    """
    import importlib
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm: Any = importlib.import_module("litellm")  # its flags are module globals
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = False
    litellm.drop_params = False
    litellm.set_verbose = False
    for name in ("callbacks", "success_callback", "failure_callback", "service_callback",
                 "_async_success_callback", "_async_failure_callback", "input_callback"):
        if isinstance(getattr(litellm, name, None), list):
            setattr(litellm, name, [])
    return litellm


class Cooldowns:
    """A deployment that fails `allowed_fails` times within `window_s` sits out `cooldown_s`."""

    def __init__(self, allowed_fails: int, window_s: float, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed_fails = allowed_fails
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        #: Seconds, monotonic; tests swap in a fake to step through a cooldown without sleeping.
        self.clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def failure(self, name: str) -> None:
        now = self.clock()
        fails = self._fails.setdefault(name, deque())
        fails.append(now)
        while fails and now - fails[0] > self.window_s:
            fails.popleft()
        if len(fails) >= self.allowed_fails:
            self._until[name] = now + self.cooldown_s
            fails.clear()

    def success(self, name: str) -> None:
        """A deployment that answered is healthy again, even in the middle of a cooldown (it
        gets traffic while cooling only when everything is cooling, or when named directly)."""
        self._fails.pop(name, None)
        self._until.pop(name, None)

    def recent_failures(self) -> dict[str, int]:
        """Failures within `window_s` that have not (yet) cooled their deployment down."""
        now = time.monotonic()
        return {name: sum(1 for t in fails if now - t <= self.window_s)
                for name, fails in self._fails.items() if fails}

    def cooling(self) -> set[str]:
        now = self.clock()
        return {name for name, until in self._until.items() if until > now}


class Upstream:
    """`prices`: USD per million (input, output) tokens by deployment name. Given to LiteLLM as
    the deployment's own pricing, so it prices each response with two multiplications instead
    of searching its model map by provider and alias (~600 Python calls a request, measured)."""

    def __init__(self, settings: GatewaySettings,
                 prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.settings = settings
        self.prices = dict(prices or {})
        self.litellm = configure_litellm()
        # Caps answers and their read time for OpenAI-wire providers (gateway/transport.py).
        self.litellm.aclient_session = upstream_http_client(settings.server.max_response_bytes)
        cd = settings.server.cooldown
        self.cooldowns = Cooldowns(cd.allowed_fails, cd.window_s, cd.cooldown_s)
        self.timeouts = {d.name: d.timeout_s or settings.server.request_timeout_s
                         for d in settings.deployments}
        self.passthrough = {d.name: self._passthrough(d) for d in settings.deployments}
        #: OpenAI-SDK clients over the guarded transport, for deployments LiteLLM sends
        #: through the SDK (provider `openai`); others use LiteLLM's own HTTP client.
        self.clients = {d.name: c for d in settings.deployments
                        if (c := self._guarded_client(d)) is not None}
        self.router = self.litellm.Router(
            model_list=[self._entry(d) for d in settings.deployments],
            num_retries=settings.server.num_retries,
            timeout=settings.server.request_timeout_s,
            disable_cooldowns=True,
            set_verbose=False,
        )

    def _entry(self, dep: Deployment) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": dep.model,
            # LiteLLM's OpenAI client insists on some key; local servers ignore it.
            "api_key": dep.api_key.get_secret_value() if dep.api_key else "no-key",
            "timeout": self.timeouts[dep.name],
            "stream_timeout": self.timeouts[dep.name],
            "max_retries": 0,
        }
        if dep.api_base:
            params["api_base"] = dep.api_base
        if dep.name in self.prices:
            per_million_in, per_million_out = self.prices[dep.name]
            params["input_cost_per_token"] = per_million_in / 1e6
            params["output_cost_per_token"] = per_million_out / 1e6
            # As the gateway counts cost (every prompt token at the input price); naming them
            # also keeps LiteLLM from warning that it would default them to 0.
            params["cache_read_input_token_cost"] = per_million_in / 1e6
            params["cache_creation_input_token_cost"] = per_million_in / 1e6
        return {"model_name": dep.name, "litellm_params": params}

    def _guarded_client(self, dep: Deployment) -> Any:
        """A client over `GuardedTransport`, of the kind LiteLLM's code path for the
        deployment's provider takes; `None` for providers not known to take one."""
        try:
            _, provider, _, _ = self.litellm.get_llm_provider(dep.model)
        except Exception:  # noqa: BLE001 - unknown provider: LiteLLM's own client
            return None
        timeout = self.timeouts[dep.name]
        if provider in HTTP_HANDLER_PROVIDERS:
            from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

            return AsyncHTTPHandler(timeout=timeout, transport=GuardedTransport(
                CappedTransport(base_transport(), self.settings.server.max_response_bytes)))
        if provider != "openai":
            return None
        import httpx
        import openai

        capped = CappedTransport(base_transport(), self.settings.server.max_response_bytes)
        # An `httpx` client, as LiteLLM itself gives the SDK (which also accepts `httpx2`'s).
        http: Any = httpx.AsyncClient(transport=GuardedTransport(capped), follow_redirects=True,
                                      timeout=timeout)
        return openai.AsyncOpenAI(
            api_key=dep.api_key.get_secret_value() if dep.api_key else "no-key",
            base_url=dep.api_base, http_client=http, max_retries=0, timeout=timeout)

    async def aclose(self) -> None:
        for client in self.clients.values():
            try:
                await client.close()  # AsyncOpenAI and AsyncHTTPHandler alike
            except Exception:  # noqa: BLE001 - closing at shutdown is best effort
                pass

    def _passthrough(self, dep: Deployment) -> frozenset[str] | None:
        """OpenAI params LiteLLM would not pass to this deployment, if it speaks OpenAI's wire."""
        try:
            model, provider, _, _ = self.litellm.get_llm_provider(dep.model)
            supported = self.litellm.get_supported_openai_params(
                model=model, custom_llm_provider=provider) or []
        except Exception:  # noqa: BLE001 - unknown provider: let LiteLLM decide per call
            return None
        if provider not in OPENAI_WIRE_PROVIDERS:
            return None
        keep = {"messages", "stream", "extra_body", "metadata"}
        return frozenset(OPENAI_PARAMS - set(supported) - keep)

    def split_params(self, body: dict[str, Any]) -> dict[str, Any]:
        bypass = self.passthrough.get(body["model"]) or frozenset()
        params = {k: v for k, v in body.items()
                  if k in OPENAI_PARAMS and k not in bypass and k != "model"
                  and not (v is None and k in NULL_MEANS_ABSENT)}
        extra = {k: v for k, v in body.items()
                 if (k not in OPENAI_PARAMS or k in bypass) and k != "model"}
        if extra:
            params["extra_body"] = {**params.get("extra_body", {}), **extra}
        return params

    def _call_params(self, body: dict[str, Any]) -> dict[str, Any]:
        params = self.split_params(body)
        client = self.clients.get(body["model"])
        if client is not None:
            params["client"] = client
        return params

    async def complete(self, body: dict[str, Any], deadline_s: float | None = None,
                       attempt: Attempt | None = None) -> Any:
        """Non-streaming call; raises `TimeoutError` past the deployment's timeout or, if
        sooner, `deadline_s` (the caller's time left). `attempt` is filled in by the transport
        (did the request reach the network, the provider's own usage)."""
        name = body["model"]
        params = self._call_params(body)
        params.pop("stream", None)
        timeout = self.timeouts[name] + 0.5

        async def call() -> Any:
            track(attempt or Attempt())
            return await self.router.acompletion(model=name, **params)

        return await asyncio.wait_for(call(),
                                      timeout if deadline_s is None else min(timeout, deadline_s))

    async def stream(self, body: dict[str, Any], attempt: Attempt | None = None
                     ) -> AsyncIterator[Any]:
        """Open a stream. Not timed here: the caller bounds opening it and its first chunk."""
        params = self._call_params(body)
        params["stream"] = True
        attempt = attempt or Attempt()
        attempt.stream = True
        track(attempt)
        response = await self.router.acompletion(model=body["model"], **params)
        return response.__aiter__()  # type: ignore[no-any-return]

    async def embed(self, body: dict[str, Any], deadline_s: float | None = None,
                    attempt: Attempt | None = None) -> Any:
        """An embeddings call through LiteLLM's `aembedding` on the same Router, bounded like
        `complete`. Fields besides `input` and OpenAI's options go in `extra_body`."""
        name = body["model"]
        # LiteLLM refuses `dimensions` for OpenAI-wire models it does not know to take it;
        # such a provider gets it as sent (in `extra_body`), and decides for itself.
        wire = self.passthrough.get(name) is not None
        known = ("encoding_format", "user") if wire else ("encoding_format", "dimensions", "user")
        params: dict[str, Any] = {k: body[k] for k in known if body.get(k) is not None}
        extra = {k: v for k, v in body.items() if k not in (*known, "model", "input")}
        if extra:
            params["extra_body"] = {**(extra.pop("extra_body", None) or {}), **extra}
        client = self.clients.get(name)
        if client is not None:
            params["client"] = client
        timeout = self.timeouts[name] + 0.5

        async def call() -> Any:
            track(attempt or Attempt())
            return await self.router.aembedding(model=name, input=body["input"], **params)

        return await asyncio.wait_for(call(),
                                      timeout if deadline_s is None else min(timeout, deadline_s))

    def timeout_for(self, name: str) -> float:
        return self.timeouts[name]
