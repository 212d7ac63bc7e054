"""Checkpoint files: the save/load roundtrip and every refusal (tampering, pickles, missing
fields, bad shapes, another embedder), each naming the file and field at fault."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_core import (
    Checkpoint,
    CheckpointError,
    EmbedderSpec,
    HashEmbedder,
    ModelSpec,
    Policy,
    Router,
    budget_policy,
    load_checkpoint,
    save_checkpoint,
    unlimited_policy,
)
from router_core.checkpoint import sha256_file


def small_checkpoint(dim: int = 8, seed: int = 0) -> Checkpoint:
    rng = np.random.default_rng(seed)
    policies = (budget_policy(10), budget_policy(100), Policy("concise", max_tokens=400,
                                                              instruction="Be brief."),
                unlimited_policy())
    m, p = 2, len(policies)
    return Checkpoint(
        embedder=EmbedderSpec("hash", dim, True),
        models=(ModelSpec("big", "prov/big", 3.0, 15.0),
                ModelSpec("small", "prov/small", 0.1, 0.4)),
        policies=policies,
        arrays={"quality_coef": rng.normal(size=(m, p, dim)).astype(np.float32),
                "quality_intercept": rng.uniform(size=(m, p)).astype(np.float32),
                "tokens_coef": rng.normal(size=(m, p, dim)).astype(np.float32),
                "tokens_intercept": rng.uniform(10, 500, size=(m, p)).astype(np.float32)},
        head_options={"quality_link": "clip", "tokens_space": "linear"},
        default_lambda=0.7, input_tokens="words1.3", name="small",
        provenance={"source": "test"},
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_checkpoint(small_checkpoint(), tmp_path / "ckpt")


def rewrite_manifest(root: Path, edit: Any) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def rehash(root: Path, name: str = "heads.npz") -> None:
    digest = sha256_file(root / name)
    rewrite_manifest(root, lambda m: m["files"].__setitem__(name, digest))


# -- roundtrip ------------------------------------------------------------------------------
def test_save_then_load_gives_back_the_same_checkpoint(saved: Path) -> None:
    original = small_checkpoint()
    loaded = load_checkpoint(saved, expected_embedder=("hash", 8))
    assert loaded.embedder == original.embedder
    assert loaded.models == original.models
    assert loaded.policies == original.policies
    assert loaded.head_kind == "linear"
    assert loaded.head_options == original.head_options
    assert (loaded.default_lambda, loaded.input_tokens, loaded.name) == (0.7, "words1.3", "small")
    assert loaded.provenance == {"source": "test"}
    assert loaded.path == saved
    assert loaded.arrays.keys() == original.arrays.keys()
    for key, arr in original.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], arr)


def test_loaded_checkpoint_decides_like_the_in_memory_one(saved: Path) -> None:
    emb = np.random.default_rng(1).normal(size=(20, 8))
    before = Router(small_checkpoint()).route_embeddings(emb, 50, 0.5)
    after = Router(load_checkpoint(saved)).route_embeddings(emb, 50, 0.5)
    assert before == after


def test_saved_checkpoint_is_only_json_and_npz(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["heads.npz", "manifest.json"]
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["files"] == {"heads.npz": sha256_file(saved / "heads.npz")}


# -- tampering and pickles ------------------------------------------------------------------
def test_one_changed_byte_in_heads_is_refused_naming_the_file(saved: Path) -> None:
    heads = saved / "heads.npz"
    data = bytearray(heads.read_bytes())
    data[len(data) // 2] ^= 0x01
    heads.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_checkpoint(saved)
    assert err.value.file == str(heads)
    assert "heads.npz" in str(err.value)


class _Payload:
    """Unpickling this creates `marker` (what a malicious pickle would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_payload_pickle_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    # Control for the two tests below: the payload is live, so "no marker" there means
    # "never unpickled", not "payload broken".
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(marker))).close()
    assert marker.exists()


def test_pickle_in_place_of_heads_is_refused_even_with_a_matching_hash(
        saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (saved / "heads.npz").write_bytes(pickle.dumps({"quality_coef": _Payload(marker)}))
    rehash(saved)
    with pytest.raises(CheckpointError, match="pickle") as err:
        load_checkpoint(saved)
    assert err.value.file == str(saved / "heads.npz")
    assert not marker.exists()


def test_npz_holding_a_pickled_object_array_is_refused_and_never_unpickled(
        saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    arrays = dict(np.load(saved / "heads.npz"))
    arrays["quality_coef"] = np.array([_Payload(marker)], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays are stored as pickles inside the .npy member
    (saved / "heads.npz").write_bytes(buf.getvalue())
    assert zipfile.is_zipfile(saved / "heads.npz")
    rehash(saved)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert err.value.file == str(saved / "heads.npz")
    assert not marker.exists()


def test_manifest_file_entry_outside_the_directory_is_refused(saved: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.npz").write_bytes(b"x")
    rewrite_manifest(saved, lambda m: m["files"].__setitem__("../elsewhere.npz", "0" * 64))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert err.value.field == "files.../elsewhere.npz"


# -- manifest fields ------------------------------------------------------------------------
def _drop(path: str) -> Any:
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]
    return edit


@pytest.mark.parametrize(("dropped", "field"), [
    ("schema_version", "schema_version"),
    ("embedder", "embedder"),
    ("embedder.id", "embedder.id"),
    ("embedder.dim", "embedder.dim"),
    ("embedder.normalized", "embedder.normalized"),
    ("models", "models"),
    ("policies", "policies"),
    ("heads", "heads"),
    ("files", "files"),
])
def test_missing_manifest_field_is_named(saved: Path, dropped: str, field: str) -> None:
    rewrite_manifest(saved, _drop(dropped))
    with pytest.raises(CheckpointError, match="missing field") as err:
        load_checkpoint(saved)
    assert err.value.field == field
    assert field in str(err.value)


def test_missing_model_price_is_named_with_the_model_index(saved: Path) -> None:
    rewrite_manifest(saved, lambda m: m["models"][1].pop("output_price_per_million"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(saved)
    assert err.value.field == "models[1].output_price_per_million"


def test_missing_manifest_is_refused(saved: Path) -> None:
    (saved / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest missing"):
        load_checkpoint(saved)


def test_array_with_the_wrong_shape_is_refused_naming_the_array(saved: Path) -> None:
    arrays = dict(np.load(saved / "heads.npz"))
    arrays["tokens_coef"] = arrays["tokens_coef"][:, :, :4]
    np.savez(saved / "heads.npz", **arrays)
    rehash(saved)
    with pytest.raises(CheckpointError, match="shape") as err:
        load_checkpoint(saved)
    assert err.value.field == "tokens_coef"


# -- the embedder must match ----------------------------------------------------------------
def test_embedder_dim_mismatch_is_refused_naming_embedder_dim(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="embedder.dim") as err:
        load_checkpoint(saved, expected_embedder=("hash", 16))
    assert err.value.field == "embedder.dim"


def test_embedder_id_mismatch_is_refused_naming_embedder_id(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="embedder.id") as err:
        load_checkpoint(saved, expected_embedder=("all-MiniLM-L6-v2-onnx-int8", 8))
    assert err.value.field == "embedder.id"


def test_router_load_checks_the_configured_embedder(saved: Path) -> None:
    assert Router.load(saved, HashEmbedder(dim=8)).models == ("big", "small")
    with pytest.raises(CheckpointError, match="embedder.dim"):
        Router.load(saved, {"kind": "hash", "dim": 384})
    with pytest.raises(CheckpointError, match="embedder.id"):
        Router.load(saved, HashEmbedder(dim=8, id="other"))
