"""The outcome file `r2 collect` writes: append-only JSONL that survives crashes, and its meta.

Each finished (query, model, policy) row is one line, written and fsync'ed as soon as its
answers are scored, so a crash loses only the rows in flight. On start the file is read back:
rows already there are skipped, and a torn last line (the process died mid-write) is cut off so
that the file stays valid for `r2 train`. A broken line anywhere else is an error naming it:
that file was not written by an interrupted run and is left alone.

`<stem>.meta.json` beside it carries `prices_usd` and `policies` like the shared datasets, plus
a `collect` section with each policy's exact instruction and `max_tokens`. Rerunning with other
prices or another instruction for a model or policy already in the file is refused: the rows
would no longer describe one setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from router_core import Policy
from router_core.training.errors import DataError
from router_core.training.readers import meta_path

Key = tuple[str, str, str]


def row_key(query_id: str, model: str, policy: str | int) -> Key:
    return (str(query_id), str(model), str(policy))


@dataclass
class OutcomeStore:
    """Rows already in the output file, and an appender for new ones."""

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    done: set[Key] = field(default_factory=set)
    repaired_bytes: int = 0
    _fh: IO[str] | None = None

    @classmethod
    def open(cls, path: str | Path) -> OutcomeStore:
        """Read what a previous run wrote (cutting a torn last line) and open for appending."""
        store = cls(Path(path))
        if not store.path.name.endswith(".jsonl"):
            raise DataError("the output must be a .jsonl file (appended row by row)",
                            file=str(store.path))
        if store.path.exists():
            store._load()
        else:
            store.path.parent.mkdir(parents=True, exist_ok=True)
        store._fh = store.path.open("a", encoding="utf-8")
        return store

    def _load(self) -> None:
        data = self.path.read_bytes()
        pos = keep = number = 0
        unterminated = False
        while pos < len(data):
            newline = data.find(b"\n", pos)
            end = len(data) if newline < 0 else newline + 1
            number += 1
            raw = data[pos:end]
            if raw.strip():
                row = _parse_line(raw)
                if row is None:
                    if end >= len(data):
                        break  # the last line was torn by a crash mid-write: cut it below
                    raise DataError("invalid JSON before the last line; this file was not "
                                    "left by an interrupted run", file=str(self.path),
                                    row=number)
                if not {"query_id", "model", "policy"} <= set(row):
                    raise DataError("not an outcome row", file=str(self.path), row=number)
                self.rows.append(row)
                self.done.add(row_key(row["query_id"], row["model"], row["policy"]))
                unterminated = newline < 0
            keep = pos = end
        if keep < len(data):
            self.repaired_bytes = len(data) - keep
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
        elif unterminated:
            with self.path.open("ab") as fh:  # a complete row that lost only its newline
                fh.write(b"\n")

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably: a crash after this returns cannot lose it."""
        if self._fh is None:
            raise RuntimeError("the outcome store is closed")
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(row)
        self.done.add(row_key(row["query_id"], row["model"], row["policy"]))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return row if isinstance(row, dict) else None


def policy_spec(policy: Policy) -> dict[str, Any]:
    """The protocol of `policy` as it was sent: the rendered instruction and the cap, and the
    template, placement and cap rule `r2 train` carries into the checkpoint."""
    return {"instruction": policy.render_instruction(), "max_tokens": policy.cap,
            "kind": policy.kind, "template": policy.instruction, "placement": policy.placement,
            "cap_rule": policy.cap_rule, "cap_slack": policy.cap_slack}


def describe_policy(spec: dict[str, Any]) -> str:
    cap = spec["max_tokens"]
    instruction = spec["instruction"]
    where = " appended to the user turn" if spec.get("placement") == "user_suffix" else ""
    parts = [f"instruction{where}: {instruction!r}" if instruction else "no instruction",
             f"max_tokens {cap}" if cap else "no max_tokens (the deployment's own)"]
    return "; ".join(parts)


def write_meta(out: Path, prices: dict[str, tuple[float, float]],
               specs: dict[str, dict[str, Any]], questions: Iterable[str],
               extra: dict[str, Any]) -> Path:
    """Merge this run into `<stem>.meta.json`, refusing changed prices or policy specs."""
    path = meta_path(out)
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"meta is not readable JSON: {exc}", file=str(path)) from None
    old_prices = old.get("prices_usd") or {}
    new_prices = {m: {"input_per_million": p[0], "output_per_million": p[1]}
                  for m, p in prices.items()}
    for model, price in new_prices.items():
        if model in old_prices and old_prices[model] != price:
            raise DataError(f"the prices of {model!r} differ from those the file was collected "
                            "with; use a new --out", file=str(path), field=f"prices_usd.{model}")
    collect = dict(old.get("collect") or {})
    old_specs = collect.get("policies") or {}
    for name, spec in specs.items():
        old_spec = old_specs.get(name)
        # Files collected before the protocol was recorded hold only instruction and max_tokens.
        if old_spec is not None and any(old_spec[k] != spec.get(k) for k in old_spec):
            raise DataError(f"policy {name!r} was collected with another instruction or "
                            "max_tokens; use a new --out", file=str(path),
                            field=f"collect.policies.{name}")
    merged_specs = {**old_specs, **specs}
    collect.update(extra)
    collect["policies"] = merged_specs
    collect["questions"] = sorted({*collect.get("questions", []), *questions})
    meta = {
        "description": old.get("description") or
        "Outcomes collected with `r2 collect`: every question x model x policy sent through "
        "the gateway's forwarding path; score = mean over samples; tokens from provider usage.",
        "origin": old.get("origin") or "r2 collect",
        "prices_usd": {**old_prices, **new_prices},
        "policies": {name: describe_policy(spec) for name, spec in merged_specs.items()},
        "collect": collect,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
