"""`r2 serve --workers N`: N gateway processes accepting on one socket.

uvicorn's supervisor binds the socket once and spawns the workers; each builds its own app from
the config file (its own embedder, checkpoint, LiteLLM client and admission counter: admission,
`server.max_concurrency`, is per process). The request-head limits of `server.py` travel as
data and are bound into the protocol class inside each worker (`WorkerConfig.load`): a class
made at run time cannot be pickled into a spawned process.

Metrics: the supervisor gives the workers one PROMETHEUS_MULTIPROC_DIR (a fresh temporary one,
or the operator's, emptied of old files), so `/metrics` on any worker reports all of them
(gateway/metrics.py). State shared between workers (cooldowns, sessions, rate limits, pacing)
needs `state.redis_url`; without it each worker keeps its own (docs/scaling.md).
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from .server import HeadLimits, guarded_protocol

log = logging.getLogger("r2.gateway")

#: Environment handed to the workers: the config file each of them loads.
CONFIG_ENV = "R2_SERVE_CONFIG"
LOG_LEVEL_ENV = "R2_SERVE_LOG_LEVEL"
EMBEDDER_ENV = "R2_SERVE_EMBEDDER"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class WorkerConfig(uvicorn.Config):
    """uvicorn's config with the gateway's head limits as plain (picklable) data."""

    def __init__(self, app: Any, head_limits: HeadLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.head_limits = head_limits

    def load(self) -> None:
        self.http = guarded_protocol(self.head_limits)
        super().load()


def worker_app() -> Any:
    """The app factory each worker runs (uvicorn `factory=True`)."""
    from .app import build_app
    from .commands.serve import setup_logging
    from .config import load_settings

    setup_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    settings = load_settings(os.environ[CONFIG_ENV])
    if os.environ.get(EMBEDDER_ENV):
        from .commands.serve import with_embedder

        settings = with_embedder(settings, os.environ[EMBEDDER_ENV])
    app = build_app(settings)
    gc.collect()
    gc.freeze()  # as `r2 serve` does with one process: keep the start-up objects out of GC
    return app


def prepare_metrics_dir() -> tuple[Path, bool]:
    """PROMETHEUS_MULTIPROC_DIR for the workers: the operator's (emptied of files left by an
    earlier run, as prometheus-client requires) or a new temporary one; True if we made it."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="r2-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def serve_workers(config_path: str, workers: int, server: Any, shared: bool,
                  embedder: str | None = None, **options: Any) -> None:
    """Run `workers` gateway processes on one socket until interrupted (`server`: the
    `ServerSettings`, for the head limits and the connection cap; `shared`: whether state is
    in Redis)."""
    from uvicorn.supervisors import Multiprocess

    if not shared:
        log.warning("%d workers without state.redis_url: each keeps its own cooldowns, "
                    "sessions, rate-limit counts and pacing (docs/scaling.md)", workers)

    os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    os.environ[LOG_LEVEL_ENV] = str(options.get("log_level", "info"))
    if embedder:  # `r2 serve --embedder`: every worker replaces the config's embedder alike
        os.environ[EMBEDDER_ENV] = embedder
    metrics_dir, made = prepare_metrics_dir()
    config = WorkerConfig("gateway.workers:worker_app", HeadLimits.from_settings(server),
                          factory=True, workers=workers, limit_concurrency=server.max_connections,
                          **options)
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        if made:
            shutil.rmtree(metrics_dir, ignore_errors=True)
