"""A changed or substituted checkpoint stops the gateway at start-up, naming the file; a pickle
in a checkpoint is never unpickled (each pickle here would create a marker file if it were)."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import gateway_settings, tiny_checkpoint

from gateway.app import build_app
from gateway.cli import main
from gateway.config import parse_settings
from router_core import CheckpointError


class Trap:
    """Unpickling this calls `open(marker, "w")`, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


def start(ckpt: Path, base_url: str, **extra: Any) -> None:
    build_app(parse_settings({**gateway_settings(ckpt, base_url), **extra}))


def rehash(ckpt: Path) -> None:
    """What an attacker who can write the whole directory would do: fix up the digest."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["heads.npz"] = hashlib.sha256((ckpt / "heads.npz").read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_changed_byte_in_arrays_stops_startup_naming_the_file(tmp_path: Path, standin: Any,
                                                              where: float) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    data = bytearray((ckpt / "heads.npz").read_bytes())
    data[int(where * (len(data) - 1)) if where >= 0 else -1] ^= 0x01
    (ckpt / "heads.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        start(ckpt, standin.base_url)
    assert err.value.file == str(ckpt / "heads.npz")


def test_changed_byte_in_pinned_manifest_stops_startup_naming_the_file(tmp_path: Path,
                                                                       standin: Any) -> None:
    """The manifest is not hashed by itself; `checkpoint_sha256` pins it (and through its
    digests, the arrays), so even a changed price is refused."""
    ckpt = tiny_checkpoint(tmp_path / "ck")
    pin = hashlib.sha256((ckpt / "manifest.json").read_bytes()).hexdigest()
    start(ckpt, standin.base_url, checkpoint_sha256=pin)  # the untouched checkpoint starts
    text = (ckpt / "manifest.json").read_text()
    changed = text.replace('"input_price_per_million": 2.0', '"input_price_per_million": 3.0', 1)
    assert len(changed) == len(text) and changed != text  # exactly one byte differs
    (ckpt / "manifest.json").write_text(changed)
    with pytest.raises(CheckpointError, match="checkpoint_sha256") as err:
        start(ckpt, standin.base_url, checkpoint_sha256=pin)
    assert err.value.file == str(ckpt / "manifest.json")


def test_corrupted_manifest_stops_startup_naming_the_file(tmp_path: Path, standin: Any) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    text = (ckpt / "manifest.json").read_text()
    (ckpt / "manifest.json").write_text(text.replace("{", "[", 1))
    with pytest.raises(CheckpointError) as err:
        start(ckpt, standin.base_url)
    assert err.value.file == str(ckpt / "manifest.json")


@pytest.mark.parametrize("rehashed", [False, True], ids=["as-is", "digest-fixed-up"])
def test_pickle_in_place_of_arrays_is_refused_and_never_unpickled(
        tmp_path: Path, standin: Any, rehashed: bool) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    marker = tmp_path / "unpickled"
    (ckpt / "heads.npz").write_bytes(pickle.dumps({"quality_coef": Trap(marker)}))
    if rehashed:
        rehash(ckpt)
    with pytest.raises(CheckpointError) as err:
        start(ckpt, standin.base_url)
    assert err.value.file == str(ckpt / "heads.npz")
    assert not marker.exists()


def test_object_array_inside_npz_is_refused_and_never_unpickled(tmp_path: Path,
                                                                standin: Any) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    marker = tmp_path / "unpickled"
    with np.load(ckpt / "heads.npz") as data:
        arrays: dict[str, Any] = {k: data[k] for k in data.files}
    arrays["quality_coef"] = np.array([Trap(marker)], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (ckpt / "heads.npz").write_bytes(buf.getvalue())
    rehash(ckpt)
    with pytest.raises(CheckpointError) as err:
        start(ckpt, standin.base_url)
    assert err.value.file == str(ckpt / "heads.npz")
    assert not marker.exists()


def test_r2_serve_refuses_a_tampered_checkpoint_with_exit_2_naming_the_file(
        tmp_path: Path, standin: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ck")
    (ckpt / "heads.npz").write_bytes((ckpt / "heads.npz").read_bytes() + b"\0")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_settings(ckpt, standin.base_url)))
    assert main(["serve", "--config", str(config), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err
    assert str(ckpt / "heads.npz") in err
