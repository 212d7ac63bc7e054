"""Build an experimental static table: the `static-minilm` table refitted to MiniLM on the
train-split prompts of the shared datasets (tokenlearn-style, closed form). Not shipped (it
missed the default rule on the test split, see docs/embedders.md); this reproduces that check.

Starts from the model2vec table (`router_core/embedders/data/static-minilm.*`, itself from
`scripts/distill_static.py`), maps it into MiniLM's 384-d space with one least-squares matrix and
refits the token vectors so that a prompt's mean vector points where MiniLM's embedding of it
points (`router_core/embedders/static_fit.py`; ridge 0.1, the recipe chosen by validation on
the train split, `benchmarks/static_variants.py`). The corpus is every distinct train-split
routing text of `../shared/data/{mcqa_concise_cot,mcqa_nine_models,routerbench_subset}`, minus
any text or query id that is in the test split of any of them: no test prompt shapes the table.
MiniLM's embeddings of the corpus come from the shared embedding cache (computed when missing).

    python scripts/distill_tokenlearn.py --out /tmp/tl [--data-dir ../shared/data] [--ridge 0.1]

Writes into `--out` the files the `static-minilm` embedder loads from its `path` option (int8
+ one float32 scale per row; the base tokenizer, copied; the manifest with id
`static-minilm-l6-v2-tl384-int8`, sha256 of both files and the recipe), so

    r2 train DATA --out CKPT --embedder '{"kind": "static-minilm", "path": "/tmp/tl"}'

trains and `r2 eval` scores checkpoints on it (they record that id and refuse the shipped table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "router_core" / "embedders" / "data"
DATASETS = ("mcqa_concise_cot", "mcqa_nine_models", "routerbench_subset")
PREFIX = "static-minilm"  # the file names `StaticEmbedder(path=...)` reads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_static import sha256, write_table  # noqa: E402  (the same table layout)


def corpus_texts(data_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Distinct train routing texts of every dataset, none of whose text or query id is in
    any dataset's test split; and the sha256 of each data file read."""
    from router_core.text import routing_text, user_messages
    from router_core.training.dataset import load_outcomes

    sets = {n: load_outcomes([data_dir / f"{n}.jsonl.gz"]) for n in DATASETS}
    test: set[str] = set()
    for d in sets.values():
        for q, p, s in zip(d.query_ids, d.prompts, d.splits, strict=True):
            if s != "train":
                test |= {q, p}
    texts: dict[str, None] = {}
    for d in sets.values():
        for q, p, s in zip(d.query_ids, d.prompts, d.splits, strict=True):
            if s == "train" and q not in test and p not in test:
                texts[routing_text(user_messages(p), 2000)] = None
    return list(texts), {f"{n}.jsonl.gz": sha256(data_dir / f"{n}.jsonl.gz") for n in DATASETS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--ridge", type=float, default=0.1, help="tokenlearn ridge (relative)")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory to write (not the package's data directory)")
    args = parser.parse_args(argv)
    if args.out.resolve() == DATA.resolve():
        parser.error("--out must not be the shipped table's directory")
    from router_core.embedders import make_embedder
    from router_core.embedders.static import StaticEmbedder
    from router_core.embedders.static_fit import linear_map, tokenlearn
    from router_core.training.embed_cache import EmbeddingCache, default_cache_dir, embed_texts

    texts, sources = corpus_texts(args.data_dir)
    teacher = make_embedder({"kind": "local"})
    try:
        cache = EmbeddingCache(default_cache_dir(), teacher.id, teacher.dim)
        targets = embed_texts(teacher, texts, cache, progress=False)
        teacher_id = teacher.id
    finally:
        teacher.close()
    base = StaticEmbedder()
    table = base._table
    assert table is not None
    ids = base._encode(texts)
    init = table @ linear_map(ids, targets, table)
    vectors = tokenlearn(ids, targets, init, args.ridge)
    base_manifest = json.loads((DATA / "static-minilm.json").read_text(encoding="utf-8"))
    npz, _, manifest = write_table(
        args.out, f"static-minilm-l6-v2-tl{vectors.shape[1]}-int8", vectors,
        (DATA / "static-minilm.tokenizer.json.gz").read_bytes(),
        {"base": base_manifest["id"], "teacher": teacher_id,
         "method": "router_core.embedders.static_fit: linear_map then tokenlearn "
                   "(closed-form ridge in the texts' dual)",
         "ridge": args.ridge, "corpus_texts": len(texts),
         "corpus": "train-split routing texts, test texts and query ids excluded",
         "data_sha256": sources})
    print(f"wrote {npz} ({npz.stat().st_size / 1e6:.1f} MB): {vectors.shape[0]} tokens x "
          f"{vectors.shape[1]} dims from {len(texts)} texts, id {manifest['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
