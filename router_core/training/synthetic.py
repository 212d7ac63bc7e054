"""Small synthetic outcome datasets in the real format, for tests, examples and demos.

Queries are bags of topic words (so even the hash embedder can tell topics apart); each model
has a skill per topic, and numeric budgets help on the reasoning topics only, with output tokens
capped by the budget, as in R2-Bench. Not a benchmark: a deterministic stand-in with the
shape and the failure modes (missing arms, unpriced models) of real data.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..policies import UNLIMITED
from .readers import meta_path

TOPICS = {
    "algebra": ("solve", "equation", "variable", "integer", "root", "polynomial", "factor"),
    "poetry": ("rhyme", "stanza", "metaphor", "sonnet", "verse", "imagery", "meter"),
    "chemistry": ("molecule", "reaction", "acid", "bond", "electron", "catalyst", "ion"),
    "history": ("empire", "treaty", "dynasty", "revolution", "war", "king", "colony"),
}
REASONING = {"algebra": 1.0, "chemistry": 0.6, "poetry": 0.0, "history": 0.1}
PRICES = {"small": (0.1, 0.4), "large": (3.0, 15.0), "medium": (0.5, 1.5)}
SKILL = {"small": 0.35, "medium": 0.55, "large": 0.75}


def synthetic_rows(n_queries: int = 120, models: Sequence[str] = ("small", "large"),
                   policies: Sequence[int | str] = (32, 256, UNLIMITED), seed: int = 0,
                   test_share: float = 0.3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    rows = []
    for q in range(n_queries):
        topic = topics[q % len(topics)]
        words = rng.choice(TOPICS[topic], size=8).tolist() + [f"w{rng.integers(50)}"]
        prompt = f"Question {q}: " + " ".join(words)
        difficulty = float(rng.uniform(-0.2, 0.2))
        split = "test" if rng.random() < test_share else "train"
        natural = 40 + 400 * REASONING[topic] + float(rng.uniform(0, 40))
        for model in models:
            for policy in policies:
                # Named policies behave like a budget of their rank in the list.
                limit = (float(policy) if isinstance(policy, int) else natural * 1.2
                         if policy == UNLIMITED else 64.0 * 4 ** policies.index(policy))
                gain = REASONING[topic] * 0.3 * min(1.0, np.log1p(limit) / np.log1p(natural))
                base = SKILL.get(model, 0.5) - 0.15 * REASONING[topic] + gain - difficulty
                score = float(np.clip(base + rng.normal(0, 0.05), 0.0, 1.0))
                tokens = float(min(limit, natural * rng.uniform(0.8, 1.1)))
                rows.append({
                    "query_id": f"syn/{topic}/{q}", "prompt": prompt, "model": model,
                    "policy": policy, "score": round(score, 4), "input_tokens": 20 + len(words),
                    "output_tokens": round(tokens, 1), "source": "synthetic",
                    "category": topic, "split": split,
                })
    return rows


def synthetic_meta(models: Sequence[str] = ("small", "large")) -> dict[str, Any]:
    return {
        "description": "synthetic outcomes (router_core.training.synthetic)",
        "prices_usd": {m: {"input_per_million": PRICES.get(m, (1.0, 2.0))[0],
                           "output_per_million": PRICES.get(m, (1.0, 2.0))[1]} for m in models},
    }


def write_outcomes(path: str | Path, rows: Sequence[dict[str, Any]],
                   meta: dict[str, Any] | None = None) -> Path:
    """Write rows as `.jsonl`, `.jsonl.gz`, `.csv` or `.parquet` (by suffix), meta beside."""
    out = Path(path)
    name = out.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(out, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    elif name.endswith(".jsonl"):
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif name.endswith(".csv"):
        fields = sorted({k for r in rows for k in r})
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = [{**r, "policy": str(r["policy"])} for r in rows]
        pq.write_table(pa.Table.from_pylist(table), out)
    else:
        raise ValueError(f"unknown outcome format: {name}")
    if meta is not None:
        meta_path(out).write_text(json.dumps(meta, indent=1))
    return out
