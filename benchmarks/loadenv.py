"""The load test's environment: the stand-in and `r2 serve` as processes, their config.

The stand-in is `tests/standin.py` plus a `POST /control` route that sets how long it takes to
answer. The checkpoint is synthetic (random heads over the configured embedder): routing math
costs the same as a trained one's, and the embedder is the real one unless `hash` is asked for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("large", "medium", "small")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_standin(port: int) -> None:
    """The test stand-in, plus `POST /control {"delay_ms": n}` to set its answer time."""
    sys.path.insert(0, str(ROOT / "tests"))
    import uvicorn
    from standin import Behaviour, StandIn, build_app
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    state = StandIn(port=port)
    cast(Any, state).received = deque(maxlen=1000)  # bounded for long runs
    app = build_app(state)

    async def control(request: Request) -> Response:
        state.default = Behaviour(delay_s=float((await request.json())["delay_ms"]) / 1000)
        return JSONResponse({"ok": True})

    app.add_route("/control", control, methods=["POST"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def set_upstream_delay(port: int, delay_ms: float) -> None:
    httpx.post(f"http://127.0.0.1:{port}/control", json={"delay_ms": delay_ms}).raise_for_status()


def write_checkpoint(directory: Path, embedder: dict[str, Any],
                     input_tokens: str = "tokenizer") -> None:
    """A three-model checkpoint with random linear heads (seed 0) over `embedder`'s space."""
    from router_core import (
        Checkpoint,
        EmbedderSpec,
        ModelSpec,
        budget_policy,
        make_embedder,
        save_checkpoint,
        unlimited_policy,
    )

    emb = make_embedder(embedder)
    spec, dim = EmbedderSpec(emb.id, emb.dim, emb.normalized), emb.dim
    emb.close()
    policies = [budget_policy(b) for b in (64, 256, 1024)] + [unlimited_policy()]
    m, p = len(MODELS), len(policies)
    rng = np.random.default_rng(0)
    arrays = {"quality_coef": rng.normal(0, 0.05, (m, p, dim)).astype(np.float32),
              "quality_intercept": rng.uniform(0.4, 0.9, (m, p)).astype(np.float32),
              "tokens_coef": rng.normal(0, 1, (m, p, dim)).astype(np.float32),
              "tokens_intercept": rng.uniform(30, 400, (m, p)).astype(np.float32)}
    models = tuple(ModelSpec(n, f"prov/{n}", 3.0 / (i + 1), 12.0 / (i + 1))
                   for i, n in enumerate(MODELS))
    save_checkpoint(Checkpoint(spec, models, tuple(policies), arrays,
                               input_tokens=input_tokens), directory)


def write_config(work: Path, standin_port: int, embedder: dict[str, Any],
                 max_concurrency: int, embed_cache_size: int = 0) -> Path:
    """The gateway's config. The embedding cache is off by default: a benchmark's few prompts
    repeat, and with it on every request after the first few would measure a cache hit."""
    write_checkpoint(work / "ckpt", embedder)
    config = {
        "checkpoint": str(work / "ckpt"), "embedder": embedder, "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}",
                         "api_base": f"http://127.0.0.1:{standin_port}/v1"} for n in MODELS],
        "server": {"max_concurrency": max_concurrency, "request_timeout_s": 30,
                   "embed_cache_size": embed_cache_size},
    }
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def placement(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(CPUs of the stand-in and load generator, CPUs of the gateway); None: not pinned.

    On a small machine the gateway gets the last CPU to itself, so that the load generator and
    the stand-in do not take its cycles (other work on the machine still can).
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def start(cmd: list[str], ready_url: str, cpus: set[int] | None = None,
          timeout_s: float = 60) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{cmd[:4]} did not become ready")


def stop_all(procs: list[subprocess.Popen[Any]]) -> None:
    """Interrupt every process (as Ctrl-C would), then kill what has not ended in 10 s."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
