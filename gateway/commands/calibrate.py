"""`r2 calibrate QUERIES --checkpoint DIR [--out DIR]`: compute a checkpoint's trade-off table.

The table (router_core/tradeoff.py) maps `x-r2-tradeoff` in [0, 1] to lambda so that the mean
predicted cost on these queries moves evenly in log space from the best quality (0) to the
cheapest (1). QUERIES is one of:

- a `.jsonl` file, one JSON object per line with `routing_text` (a gateway query log) or
  `prompt` (or `text`), or a JSON string per line;
- a plain text file, one query per line;
- outcome data (a file with its `.meta.json`, as `r2 train` reads): the prompts of `--split`.

`--embeddings X.npy` calibrates from precomputed embeddings instead (for checkpoints whose
embedder is not available offline, e.g. the published release's Qwen3-0.6B), with
`--input-tokens` (one number, or a file of one number per row: `.npy`, text, or `.jsonl` with
`input_tokens`). Without `--out` the checkpoint's manifest is rewritten in place (atomically);
its sha256 changes, so update any `checkpoint_sha256` pin.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

TEXT_FIELDS = ("routing_text", "prompt", "text")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate", help="compute the x-r2-tradeoff table of a checkpoint from queries",
        description="Map x-r2-tradeoff 0..1 to lambda for a checkpoint: 0 = best predicted "
                    "quality, 1 = cheapest, mean predicted cost even in log space between.")
    p.add_argument("queries", nargs="?", metavar="QUERIES",
                   help="queries: .jsonl (routing_text or prompt), plain text (one per line) "
                        "or outcome data with .meta.json")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--out", metavar="DIR",
                   help="write the calibrated checkpoint here (default: update DIR in place)")
    p.add_argument("--embeddings", metavar="X.npy",
                   help="precomputed embeddings [N, D] of the queries (no embedder needed)")
    p.add_argument("--input-tokens", metavar="N|FILE",
                   help="input tokens per query with --embeddings: one number or a file "
                        "(.npy, text, or .jsonl with input_tokens); default: counted from "
                        "QUERIES")
    p.add_argument("--embedder", metavar="NAME",
                   help="embedder kind or JSON config (default: the checkpoint's)")
    p.add_argument("--split", default="train",
                   help="split of outcome data to use (default train)")
    p.add_argument("--cache-dir", metavar="DIR", help="embedding cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from ..decisionlog.commands import add_from_log_flags

    add_from_log_flags(p, train=False)
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"r2 calibrate: error: {message}", file=sys.stderr)
    return 2


def read_queries(path: Path, split: str = "train") -> list[str]:
    """The query texts of `path` (see the module docstring for the formats)."""
    from router_core import InvalidInputError

    if is_outcome_data(path):
        from router_core.training import load_outcomes

        data = load_outcomes([path])
        return list(data.subset(data.split_mask(split)).prompts)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read queries {path}: {exc}", param="queries") from None
    texts = []
    as_json = path.suffix == ".jsonl"
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not as_json:
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InvalidInputError(f"{path} line {i}: not JSON", param="queries") from None
        text = row if isinstance(row, str) else next(
            (row[k] for k in TEXT_FIELDS if isinstance(row, dict) and isinstance(row.get(k), str)),
            None)
        if text is None:
            raise InvalidInputError(f"{path} line {i}: no routing_text or prompt string",
                                    param="queries")
        texts.append(text)
    if not texts:
        raise InvalidInputError(f"{path}: no queries", param="queries")
    return texts


def read_input_tokens(spec: str, rows: int) -> Any:
    import numpy as np

    from router_core import InvalidInputError

    try:
        return np.full(rows, float(spec))
    except ValueError:
        pass
    path = Path(spec)
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False).reshape(-1)
        elif path.suffix == ".jsonl":
            values = np.array([json.loads(x)["input_tokens"]
                               for x in path.read_text().splitlines() if x.strip()], dtype=float)
        else:
            values = np.array([float(x) for x in path.read_text().split()])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"cannot read --input-tokens {spec}: {exc}",
                                param="input_tokens") from None
    return values


def _embed(args: argparse.Namespace, ckpt: Any, texts: list[str]) -> Any:
    import numpy as np

    from router_core import InvalidInputError, make_embedder
    from router_core.training import embedder_config
    from router_core.training.embed_cache import EmbeddingCache, default_cache_dir, embed_texts

    from .route import KNOWN_EMBEDDERS

    cfg = (embedder_config(args.embedder) if args.embedder
           else ckpt.provenance.get("embedder_config") or KNOWN_EMBEDDERS.get(ckpt.embedder.id))
    if cfg is None:
        raise InvalidInputError(
            f"checkpoint needs embedder {ckpt.embedder.id!r}: pass --embedder CONFIG or "
            "--embeddings X.npy", param="embedder")
    embedder = make_embedder(cfg)
    try:
        if (embedder.id, embedder.dim) != (ckpt.embedder.id, ckpt.embedder.dim):
            raise InvalidInputError(
                f"embedder {embedder.id!r} ({embedder.dim}-d) is not the checkpoint's "
                f"{ckpt.embedder.id!r} ({ckpt.embedder.dim}-d)", param="embedder")
        cache = EmbeddingCache(args.cache_dir or default_cache_dir(), embedder.id, embedder.dim)
        return np.asarray(embed_texts(embedder, texts, cache, progress=not args.no_progress),
                          dtype=np.float64)
    finally:
        embedder.close()


def write_table(src: Path, table: Any, out: Path | None) -> Path:
    """Put `table` into the manifest of checkpoint `src` (in place, atomically) or of a copy
    at `out`; every other field of the manifest is kept as it was."""
    from router_core.checkpoint import MANIFEST

    raw = json.loads((src / MANIFEST).read_text())
    raw["tradeoff"] = table.to_json()
    target = src if out is None else out
    if out is not None and out.resolve() != src.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for name in raw.get("files", {}):
            shutil.copy2(src / name, out / name)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=target)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(raw, indent=2) + "\n")
        os.replace(tmp, target / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def is_outcome_data(path: Path) -> bool:
    """Outcome data has a `.meta.json` beside it (as `r2 train` reads it)."""
    from router_core.training import DataError
    from router_core.training.readers import meta_path

    try:
        return meta_path(path).is_file()
    except DataError:  # not a data format at all
        return False


def _describe(path: Path, split: str) -> str:
    return f"{path.name} ({split} split)" if is_outcome_data(path) else path.name


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from router_core import Scorer, load_checkpoint, token_counter
    from router_core.checkpoint import MANIFEST, sha256_file
    from router_core.tradeoff import calibrate

    ckpt = load_checkpoint(args.checkpoint)
    texts = read_queries(Path(args.queries), args.split) if args.queries else None
    if args.from_log:
        from ..decisionlog.commands import calibrate_from_log

        emb, tokens, source = calibrate_from_log(args, ckpt)
    elif args.embeddings:
        try:
            emb = np.load(args.embeddings, allow_pickle=False)
        except (OSError, ValueError) as exc:
            return _fail(f"cannot read embeddings {args.embeddings}: {exc}")
        rows = emb.shape[0] if emb.ndim == 2 else 1
        if args.input_tokens is not None:
            tokens = read_input_tokens(args.input_tokens, rows)
        elif texts is not None:
            count = token_counter(ckpt.input_tokens)
            tokens = np.array([count(t) for t in texts], dtype=np.float64)
        else:
            return _fail("--embeddings needs --input-tokens N|FILE or the QUERIES they embed")
        source = f"{Path(args.embeddings).name} ({rows} embeddings)"
    elif texts is None:
        return _fail("give QUERIES (a file of prompts) or --embeddings X.npy")
    else:
        emb = _embed(args, ckpt, texts)
        count = token_counter(ckpt.input_tokens)
        tokens = np.array([count(t) for t in texts], dtype=np.float64)
        source = _describe(Path(args.queries), args.split)
    table = calibrate(Scorer(ckpt), emb, tokens, source=source)
    out = write_table(Path(args.checkpoint), table, Path(args.out) if args.out else None)
    load_checkpoint(out)  # the written checkpoint must load
    print(f"calibrated {out} on {table.queries} queries ({source}): mean predicted cost "
          f"${table.mean_cost_usd[0]:.6g} (t=0) .. ${table.mean_cost_usd[-1]:.6g} (t=1)")
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        print(f"  tradeoff {t:<4}  lambda {table.lambda_for(t):.8g}  mean predicted cost "
              f"${table.cost_at(t):.6g}")
    print(f"manifest sha256 {sha256_file(out / MANIFEST)} (update checkpoint_sha256 pins)")
    return 0
