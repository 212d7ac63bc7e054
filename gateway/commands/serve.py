"""`r2 serve --config gateway.yaml [--host H] [--port P] [--workers N]`: the gateway on
uvicorn (N processes on one port with `--workers`, gateway/workers.py)."""

from __future__ import annotations

import argparse
import gc
import logging
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the OpenAI-compatible routing gateway")
    p.add_argument("--config", required=True, help="gateway YAML file")
    p.add_argument("--host", default="127.0.0.1", metavar="H",
                   help="interface to listen on (default %(default)s; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8080, metavar="P",
                   help="TCP port to listen on (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes on one port (default: server.workers, 1)")
    p.add_argument("--embedder", metavar="NAME",
                   help="embedder kind or JSON config, replacing the config's embedder section "
                        "(e.g. static-minilm with a checkpoints/*-static checkpoint)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app import build_app
    from ..config import ConfigError, load_settings
    from ..server import raise_fd_limit, uvicorn_config

    setup_logging(args.log_level)
    settings = load_settings(args.config)
    if args.embedder:
        settings = with_embedder(settings, args.embedder)
    workers = args.workers if args.workers is not None else settings.server.workers
    if workers < 1:
        raise ConfigError("--workers: must be at least 1")
    if workers > 1:
        from ..workers import serve_workers

        raise_fd_limit(settings.server)
        shared = settings.state is not None and settings.state.redis_url is not None
        serve_workers(args.config, workers, settings.server, shared, embedder=args.embedder,
                      host=args.host, port=args.port, log_level=args.log_level,
                      access_log=False, timeout_graceful_shutdown=5)
        return 0
    app = build_app(settings)
    # LiteLLM and the model leave ~400k long-lived objects; every full collection would walk
    # them (~0.5 s with the event loop stopped, the p99 under load). Freeze them out of it.
    gc.collect()
    gc.freeze()
    raise_fd_limit(settings.server)
    config = uvicorn_config(app, settings.server, host=args.host, port=args.port,
                            log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()
    return 0


def with_embedder(settings: Any, spec: str) -> Any:
    """`settings` with its embedder section replaced by `--embedder NAME|JSON`."""
    from router_core.embedders import check_options
    from router_core.training import embedder_config

    cfg = embedder_config(spec)
    check_options(cfg)
    return settings.model_copy(update={"embedder": cfg})
