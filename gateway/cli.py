"""The `r2` command line: thin commands over `router_core` and `gateway`.

Each subcommand lives in `gateway/commands/<name>.py` and exposes `register(subparsers)`; its
`run(args)` returns an exit code. Errors from the core (`R2Error`) and from configuration become
one line on stderr and exit code 2; nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMANDS = ("route", "import_checkpoint", "serve", "chat", "train", "eval", "collect", "calibrate",
            "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r2", description="R2 routing gateway: pick the model and the output budget.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"gateway.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # LiteLLM would otherwise fetch its price map from the internet at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    from router_core import R2Error

    from .config import ConfigError

    try:
        return int(args.func(args))
    except (R2Error, ConfigError) as exc:
        print(f"r2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `r2 route ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
