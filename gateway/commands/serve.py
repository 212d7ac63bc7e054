"""`r2 serve --config gateway.yaml [--host H] [--port P]`: the gateway on uvicorn."""

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
    p.add_argument("--embedder", metavar="NAME",
                   help="embedder kind or JSON config, replacing the config's embedder section "
                        "(e.g. static-minilm with a checkpoints/*-static checkpoint)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app import build_app
    from ..config import load_settings
    from ..server import raise_fd_limit, uvicorn_config

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = load_settings(args.config)
    if args.embedder:
        from router_core.embedders import check_options
        from router_core.training import embedder_config

        cfg = embedder_config(args.embedder)
        check_options(cfg)
        settings = settings.model_copy(update={"embedder": cfg})
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
