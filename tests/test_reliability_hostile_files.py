"""Hostile checkpoints and configs: `r2 serve` refuses each with one line naming the file and the
field, exit 2, in bounded time and memory; never a traceback, never a 6 GB load, never a hang.

Every checkpoint here has its digests fixed up, as an attacker who can write the directory
would do, so it is the loader's checks that must catch it, not the sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import resource
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.cli import main

#: Refusing a hostile file takes well under this (a load or a hang takes far longer).
TIME_LIMIT_S = 5.0
#: Peak memory may grow by less than this while refusing one (the 600 MB array would not fit).
MEMORY_LIMIT_MB = 200


def rehash(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["heads.npz"] = hashlib.sha256((ckpt / "heads.npz").read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(ckpt: Path) -> None:
        manifest = json.loads((ckpt / "manifest.json").read_text())
        change(manifest)
        (ckpt / "manifest.json").write_text(json.dumps(manifest))
    return apply


def replace_array(name: str, array: np.ndarray[Any, Any]) -> Callable[[Path], None]:
    def apply(ckpt: Path) -> None:
        with np.load(ckpt / "heads.npz") as data:
            arrays = {k: data[k] for k in data.files}
        arrays[name] = array
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (ckpt / "heads.npz").write_bytes(buf.getvalue())
        rehash(ckpt)
    return apply


def declared_shape(name: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    """An npy member whose header declares `shape` but which holds a few bytes."""
    def apply(ckpt: Path) -> None:
        with zipfile.ZipFile(ckpt / "heads.npz") as zin:
            members = {i.filename: zin.read(i) for i in zin.infolist()}
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        members[f"{name}.npy"] = header.getvalue() + b"\0" * 64
        with zipfile.ZipFile(ckpt / "heads.npz", "w") as zout:
            for member, data in members.items():
                zout.writestr(member, data)
        rehash(ckpt)
    return apply


def unused_zero_array(mb: int) -> Callable[[Path], None]:
    """A well-formed extra member of `mb` MB of zeros, deflated to well under 1 MB."""
    def apply(ckpt: Path) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (mb * 2**20 // 8,)})
        with zipfile.ZipFile(ckpt / "heads.npz", "a", zipfile.ZIP_DEFLATED) as zout, \
                zout.open("unused.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(mb):
                member.write(zeros)
        rehash(ckpt)
    return apply


def deep_provenance(ckpt: Path) -> None:
    text = (ckpt / "manifest.json").read_text()
    (ckpt / "manifest.json").write_text(
        text[:-2] + ', "provenance": ' + "[" * 100_000 + "]" * 100_000 + "}\n")


STRUCTURED = np.zeros((2, 3), dtype=[("a", "<f4"), ("b", "<i4")])
CHECKPOINT_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("heads-file-list", edit_manifest(lambda m: m["heads"].update(file=["heads.npz"])),
     "heads.file"),
    ("policies-5", edit_manifest(lambda m: m.update(policies=[5])), "policies[0]"),
    ("default-lambda-abc", edit_manifest(lambda m: m.update(default_lambda="abc")),
     "default_lambda"),
    ("provenance-x", edit_manifest(lambda m: m.update(provenance="x")), "provenance"),
    ("name-list", edit_manifest(lambda m: m.update(name=[1])), "name"),
    ("provider-id-dict", edit_manifest(lambda m: m["models"][0].update(provider_id=[1])),
     "models[0].provider_id"),
    ("structured-dtype", replace_array("quality_intercept", STRUCTURED), "quality_intercept"),
    ("datetime-dtype", replace_array("tokens_intercept",
                                     np.zeros((2, 3), dtype="datetime64[s]")), "tokens_intercept"),
    ("complex-dtype", replace_array("tokens_intercept", np.zeros((2, 3), np.complex64)),
     "tokens_intercept"),
    ("string-dtype", replace_array("tokens_intercept", np.full((2, 3), "12")),
     "tokens_intercept"),
    ("declared-shape-1e12", declared_shape("quality_coef", (10**12,)), "quality_coef"),
    ("unused-600mb-array", unused_zero_array(600), "unused"),
    ("manifest-nested-1e5", deep_provenance, "provenance"),
]


def refuse(config: Path, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> str:
    """Run `r2 serve` in-process; it must return 2 quickly, with one line on stderr."""
    import uvicorn

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the hostile file was accepted and the server started")

    monkeypatch.setattr(uvicorn, "run", never)
    capsys.readouterr()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.monotonic()
    code = main(["serve", "--config", str(config), "--port", "1"])
    elapsed = time.monotonic() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < TIME_LIMIT_S
    assert grown < MEMORY_LIMIT_MB
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_config(tmp_path: Path, ckpt: Path, **extra: Any) -> Path:
    cfg = gateway_settings(ckpt, "http://127.0.0.1:9/v1", models=("strong", "weak"))
    cfg.update(extra)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in CHECKPOINT_CASES],
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_hostile_checkpoint_is_one_line_exit_2_naming_file_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        change: Callable[[Path], None], field: str) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck", budgets=(10, 100))
    change(ckpt)
    line = refuse(write_config(tmp_path, ckpt), capsys, monkeypatch)
    assert str(ckpt) in line
    assert f"field {field})" in line


BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(("case", "field"), [
    ("alias-bomb", "YAML aliases"),
    ("deep-yaml", "levels deep"),
    ("mistyped-embedder-key", "embedder.dimm"),
    ("empty-api-key", "server.api_keys"),
    ("whitespace-api-key", "server.api_keys"),
])
def test_hostile_config_is_one_line_exit_2_naming_file_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        case: str, field: str) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    config = write_config(tmp_path, ckpt)
    if case == "alias-bomb":
        config.write_text(BOMB + config.read_text())
    elif case == "deep-yaml":
        config.write_text(config.read_text() + "extra: " + "[" * 5000 + "]" * 5000 + "\n")
    elif case == "mistyped-embedder-key":
        config = write_config(tmp_path, ckpt, embedder={"kind": "hash", "dimm": HASH_DIM})
    else:
        monkeypatch.setenv("R2_T_GATEWAY_KEY", "" if case == "empty-api-key" else "  ")
        config = write_config(tmp_path, ckpt, server={"api_keys": ["${R2_T_GATEWAY_KEY}"]})
    line = refuse(config, capsys, monkeypatch)
    assert str(config) in line
    assert field in line
