"""Reading outcome files and their `.meta.json`, before any validation of the rows.

Formats, by file name: `.jsonl` / `.jsonl.gz` (one JSON object a line), `.csv` / `.csv.gz`
(a header row; an empty cell is a null) and `.parquet` (needs `pyarrow`, the `train`
extra). Every row comes with its 1-based number so that errors can name it. The meta file sits
beside the data: `mcqa.jsonl.gz` -> `mcqa.meta.json`; it is optional (without it no model has a
list price and every row needs `cost_usd`). Files written by `r2 collect` also record each
policy's exact instruction and cap under `collect.policies`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

SUFFIXES = (".jsonl.gz", ".jsonl", ".csv.gz", ".csv", ".parquet")
NUMERIC_CSV_FIELDS = ("score", "input_tokens", "output_tokens", "cost_usd")

Row = dict[str, Any]


@dataclass(frozen=True)
class Prices:
    """USD list prices per million tokens."""

    input_per_million: float
    output_per_million: float


@dataclass(frozen=True)
class Meta:
    """A dataset's `.meta.json`: description, per-model prices and policy descriptions."""

    description: str = ""
    origin: str = ""
    prices: dict[str, Prices] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    #: `r2 collect`'s record of what each policy sent: `{label: {instruction, max_tokens}}`.
    collected: dict[str, dict[str, Any]] = field(default_factory=dict)


def dataset_stem(path: Path) -> str:
    """`dir/mcqa.jsonl.gz` -> `mcqa`; an unknown suffix is an error naming the file."""
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise DataError(f"unknown data format; expected one of {', '.join(SUFFIXES)}",
                    file=str(path), fix="rename or convert the file to one of these formats")


def meta_path(path: Path) -> Path:
    return path.with_name(dataset_stem(path) + ".meta.json")


def read_meta(path: Path) -> Meta:
    """The meta file beside data file `path`, or an empty `Meta` when there is none."""
    mpath = meta_path(path)
    if not mpath.is_file():
        return Meta()
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"meta is not readable JSON: {exc}", file=str(mpath)) from None
    if not isinstance(raw, dict):
        raise DataError("meta must be a JSON object", file=str(mpath))
    prices: dict[str, Prices] = {}
    raw_prices = raw.get("prices_usd") or {}
    if not isinstance(raw_prices, dict):
        raise DataError("must be an object", file=str(mpath), field="prices_usd")
    for model, spec in raw_prices.items():
        where = f"prices_usd.{model}"
        if not isinstance(spec, dict):
            raise DataError("must be an object", file=str(mpath), field=where)
        values = []
        for key in ("input_per_million", "output_per_million"):
            value = spec.get(key)
            if (not isinstance(value, int | float) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise DataError("price must be a finite number >= 0", file=str(mpath),
                                fix="write USD per million tokens, 0 for a free model",
                                field=f"{where}.{key}")
            values.append(float(value))
        prices[str(model)] = Prices(values[0], values[1])
    policies = raw.get("policies") or {}
    if not isinstance(policies, dict):
        raise DataError("must be an object", file=str(mpath), field="policies")
    collect = raw.get("collect")
    specs = collect.get("policies") if isinstance(collect, dict) else None
    collected = ({str(k): v for k, v in specs.items() if isinstance(v, dict)}
                 if isinstance(specs, dict) else {})
    return Meta(str(raw.get("description", "")), str(raw.get("origin", "")), prices,
                {str(k): str(v) for k, v in policies.items()}, collected)


def read_rows(path: Path) -> Iterator[tuple[int, Row]]:
    """Yield `(row_number, row)` for every record of an outcome file."""
    if not path.is_file():
        raise DataError("data file not found", file=str(path),
                        fix="check the path (the shared datasets live in ../shared/data)")
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        yield from read_jsonl(path)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _csv(path)
    elif name.endswith(".parquet"):
        yield from _parquet(path)
    else:
        dataset_stem(path)  # raises with the list of known formats


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[tuple[int, Row]]:
    """`(line number, object)` for each non-blank line of a `.jsonl` or `.jsonl.gz` file."""
    try:
        fh = _open_text(path)
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", file=str(path)) from None
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg}", file=str(path), row=number,
                                fix="write one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError("a row must be a JSON object", file=str(path), row=number,
                                fix="write one JSON object per line")
            yield number, row


def _csv(path: Path) -> Iterator[tuple[int, Row]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        for number, raw in enumerate(reader, start=1):
            row: Row = {k: (None if v == "" else v) for k, v in raw.items() if k is not None}
            for key in NUMERIC_CSV_FIELDS:
                if row.get(key) is not None:
                    try:
                        row[key] = float(row[key])
                    except ValueError:
                        raise DataError("not a number", file=str(path), row=number,
                                        field=key) from None
            yield number, row


def _parquet(path: Path) -> Iterator[tuple[int, Row]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow (pip install 'r2-gateway[train]')",
                        file=str(path)) from None
    table = pq.read_table(path)
    yield from enumerate(table.to_pylist(), start=1)
