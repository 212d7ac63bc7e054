"""How close is the sampled count of a very long message to its full count, and how much
cheaper is it? (`gateway/tokens.py`: texts over `SAMPLE_ABOVE` characters are counted from
evenly spaced windows and scaled by length.)

Realistic long texts, each cut to `--chars`: the repository's Markdown docs, its Python
sources, the shared data's prompts joined (many short questions, as an agent's context of
retrieved items), a JSON dump of those records, and the large-request benchmark's repeated
sentence. Each is counted by LiteLLM's `token_counter` (cl100k) as a one-message request,
fully and sampled; the report is the relative error and the CPU ratio.

    python benchmarks/token_sample_accuracy.py --chars 400000
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.tokens import InputTokenCounter  # noqa: E402


def texts(chars: int) -> dict[str, str]:
    def fill(parts: list[str]) -> str:
        out = "\n\n".join(parts)
        while len(out) < chars:
            out += "\n\n" + out
        return out[:chars]

    data = ROOT.parent / "shared" / "data" / "routerbench_subset.jsonl.gz"
    records = []
    if data.exists():
        with gzip.open(data, "rt") as fh:
            for line in fh:
                records.append(json.loads(line))
                if sum(len(r["prompt"]) for r in records) > chars * 2:
                    break
    found = {
        "markdown docs": fill([p.read_text() for p in sorted(ROOT.glob("docs/*.md"))]
                              + [(ROOT / "README.md").read_text()]),
        "python sources": fill([p.read_text() for p in sorted(ROOT.glob("*/*.py"))]),
        "repeated sentence": fill(["The quarterly report lists revenue, costs and margins "
                                   "for every region."] * (chars // 70 + 1)),
    }
    if records:
        found["dataset prompts"] = fill([r["prompt"] for r in records])
        found["dataset records (JSON)"] = fill([json.dumps(r) for r in records])
    return found


def timed(counter: InputTokenCounter, messages: list[dict[str, str]]) -> tuple[float, float]:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        value = float(counter.count(messages)[0])
        best = min(best, time.process_time() - start)
    return value, best


def main(argv: list[str] | None = None) -> int:
    import gateway.tokens as tokens

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=400_000)
    args = parser.parse_args(argv)
    counter = InputTokenCounter(["m"], {"m": "openai/gpt-4o-mini"})
    counter.warm_up()
    sample_above = tokens.SAMPLE_ABOVE
    print("| text | characters | full count | sampled | error | CPU full / sampled (ms) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, text in texts(args.chars).items():
        messages = [{"role": "system", "content": "Summarise the document."},
                    {"role": "user", "content": text}]
        tokens.SAMPLE_ABOVE = 1 << 62
        full, full_s = timed(counter, messages)
        tokens.SAMPLE_ABOVE = sample_above
        est, est_s = timed(counter, messages)
        print(f"| {name} | {len(text):,} | {full:,.0f} | {est:,.0f} | "
              f"{(est - full) / full * 100:+.2f}% | {full_s * 1000:.1f} / {est_s * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
