"""Checkpoints: a directory with a JSON manifest and plain arrays, never a pickle.

Layout::

    manifest.json   schema_version, embedder {id, dim, normalized}, models [{name, provider_id,
                    input_price_per_million, output_price_per_million}], policies [...],
                    heads {kind, file, ...}, files {name: sha256}, default_lambda, input_tokens,
                    tradeoff (optional: the calibrated trade-off table, see tradeoff.py)
    heads.npz       quality_coef [M,P,D], quality_intercept [M,P],
                    tokens_coef [M,P,D], tokens_intercept [M,P]   (loaded with allow_pickle=False)

`load_checkpoint` verifies every hash, every shape and the embedder before anything is used;
failures raise `CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import CheckpointError
from .features import FEATURES
from .policies import Policy
from .tradeoff import TradeoffTable

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
HEADS_FILE = "heads.npz"
HEAD_KINDS = ("linear", "mlp")

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelSpec:
    """A routable model: its name in the checkpoint, provider id and USD list prices."""

    name: str
    provider_id: str
    input_price_per_million: float
    output_price_per_million: float
    #: Billed input tokens per counted (cl100k) token: the model's tokenizer against the one
    #: the trainer counts with, fitted by `r2 train` (1.0: counted as billed; manifests
    #: written before it load with 1.0).
    input_token_scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "provider_id": self.provider_id,
            "input_price_per_million": self.input_price_per_million,
            "output_price_per_million": self.output_price_per_million,
        }
        if self.input_token_scale != 1.0:
            out["input_token_scale"] = self.input_token_scale
        return out


@dataclass(frozen=True)
class EmbedderSpec:
    id: str
    dim: int
    normalized: bool


@dataclass
class Checkpoint:
    """A verified checkpoint in memory; `arrays` holds the head tensors by name."""

    embedder: EmbedderSpec
    models: tuple[ModelSpec, ...]
    policies: tuple[Policy, ...]
    arrays: dict[str, FloatArray]
    head_kind: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    default_lambda: float = 0.99999
    input_tokens: str = "tokenizer"
    name: str = "r2-checkpoint"
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: Calibrated `x-r2-tradeoff` -> lambda map (router_core/tradeoff.py); None: not calibrated.
    tradeoff: TradeoffTable | None = None

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def manifest(self, files: Mapping[str, str]) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "embedder": {
                "id": self.embedder.id,
                "dim": self.embedder.dim,
                "normalized": self.embedder.normalized,
            },
            "default_lambda": self.default_lambda,
            "input_tokens": self.input_tokens,
            "models": [m.to_json() for m in self.models],
            "policies": [p.to_json() for p in self.policies],
            "heads": {"kind": self.head_kind, "file": HEADS_FILE, **self.head_options},
            "files": dict(files),
            "provenance": self.provenance,
            **({"tradeoff": self.tradeoff.to_json()} if self.tradeoff is not None else {}),
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(ckpt: Checkpoint, directory: str | Path) -> Path:
    """Write `ckpt` as manifest + npz; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _check_shapes(ckpt, out / HEADS_FILE)
    buf = io.BytesIO()
    arrays: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float32)
                              for k, v in ckpt.arrays.items()}
    np.savez(buf, **arrays)
    (out / HEADS_FILE).write_bytes(buf.getvalue())
    files = {HEADS_FILE: sha256_file(out / HEADS_FILE)}
    (out / MANIFEST).write_text(json.dumps(ckpt.manifest(files), indent=2) + "\n")
    ckpt.path = out
    return out


def load_checkpoint(
    directory: str | Path,
    expected_embedder: tuple[str, int] | None = None,
) -> Checkpoint:
    """Load and verify a checkpoint directory.

    `expected_embedder` is `(id, dim)` of the configured embedder; a mismatch is an error
    because the heads would be scoring vectors from another space.
    """
    root = Path(directory)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise CheckpointError("checkpoint directory not found", file=str(root))
    raw = _read_manifest(manifest_path)
    where = _Where()
    try:
        ckpt = _parse_manifest(raw, manifest_path, where)
        where.field = "files"
        files = _req(raw, "files", dict, manifest_path)
        where.field = "heads.file"
        heads_name = ckpt.head_options.pop("file", HEADS_FILE)
        if not isinstance(heads_name, str):
            raise CheckpointError("wrong type", file=str(manifest_path), field="heads.file")
        expected = {**_expected_shapes(ckpt, manifest_path), **_optional_shapes(ckpt)}
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError,
            RecursionError) as exc:
        # Whatever a field holds, a one-line error naming it (future fields included).
        raise CheckpointError(f"invalid value ({type(exc).__name__})", file=str(manifest_path),
                              field=where.field) from None
    ckpt.path = root
    if heads_name not in files:
        raise CheckpointError("heads file has no sha256", file=str(manifest_path),
                              field=f"files.{heads_name}")
    for name, digest in files.items():
        _verify_file(root, name, digest, manifest_path)
    ckpt.arrays = _load_arrays(root / heads_name, expected)
    _check_shapes(ckpt, root / heads_name)
    if expected_embedder is not None:
        emb_id, dim = expected_embedder
        if dim != ckpt.embedder.dim:
            raise CheckpointError(
                f"checkpoint expects {ckpt.embedder.dim}-d embeddings but the configured embedder "
                f"gives {dim}-d", file=str(manifest_path), field="embedder.dim")
        if emb_id != ckpt.embedder.id:
            raise CheckpointError(
                f"checkpoint was trained with embedder {ckpt.embedder.id!r} but {emb_id!r} is "
                "configured", file=str(manifest_path), field="embedder.id")
    return ckpt


def _req(raw: Mapping[str, Any], key: str, typ: type | tuple[type, ...], path: Path,
         prefix: str = "") -> Any:
    if key not in raw:
        raise CheckpointError("missing field", file=str(path), field=prefix + key)
    value = raw[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise CheckpointError("wrong type", file=str(path), field=prefix + key)
    return value


#: A manifest is a few KB; anything much larger or deeper is not one.
MAX_MANIFEST_BYTES = 16 << 20
MAX_MANIFEST_DEPTH = 32
#: Array element kinds a head may hold (float, signed and unsigned integers), as numpy names them.
ARRAY_KINDS = "fiu"


@dataclass
class _Where:
    """The manifest field being parsed, for errors raised by code that does not know it."""

    field: str = "manifest"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes",
                                  file=str(path))
        text = path.read_bytes()
        raw = json.loads(text)
    except FileNotFoundError:
        raise CheckpointError("manifest missing", file=str(path)) from None
    except RecursionError:
        raise CheckpointError(f"nested more than {MAX_MANIFEST_DEPTH} levels deep",
                              file=str(path), field=_deep_key(text)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"manifest is not valid JSON: {' '.join(str(exc).split())}",
                              file=str(path)) from None
    if not isinstance(raw, dict):
        raise CheckpointError("manifest must be a JSON object", file=str(path))
    deep = _too_deep(raw, MAX_MANIFEST_DEPTH)
    if deep is not None:
        raise CheckpointError(f"nested more than {MAX_MANIFEST_DEPTH} levels deep",
                              file=str(path), field=deep)
    return raw


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _deep_key(text: bytes) -> str | None:
    """The top-level key of a JSON object too deep to parse (a scan of its tokens)."""
    depth, key = 0, None
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_MANIFEST_DEPTH:
                return key
        elif token in (b"]", b"}"):
            depth -= 1
        elif depth == 1 and token.endswith(b":"):
            key = token.rstrip(b": \t\r\n")[1:-1].decode("utf-8", "replace")
    return key


def _too_deep(value: Any, limit: int) -> str | None:
    """The top-level key under which `value` nests deeper than `limit` (iterative)."""
    stack: list[tuple[Any, int, str]] = [(v, 1, str(k)) for k, v in value.items()]
    while stack:
        item, depth, top = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return top
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1, top) for child in children)
    return None


def _parse_manifest(raw: dict[str, Any], path: Path, where: _Where | None = None) -> Checkpoint:
    where = where or _Where()
    where.field = "schema_version"
    version = _req(raw, "schema_version", int, path)
    if version != SCHEMA_VERSION:
        raise CheckpointError(f"unsupported schema_version {version}", file=str(path),
                              field="schema_version")
    where.field = "embedder"
    emb = _req(raw, "embedder", dict, path)
    embedder = EmbedderSpec(
        id=_req(emb, "id", str, path, "embedder."),
        dim=_req(emb, "dim", int, path, "embedder."),
        normalized=bool(_req(emb, "normalized", bool, path, "embedder.")),
    )
    if embedder.dim <= 0:
        raise CheckpointError("dimension must be positive", file=str(path), field="embedder.dim")
    models = []
    for i, m in enumerate(_req(raw, "models", list, path)):
        pre = f"models[{i}]."
        where.field = f"models[{i}]"
        if not isinstance(m, dict):
            raise CheckpointError("wrong type", file=str(path), field=f"models[{i}]")
        prices = [float(_req(m, k, (int, float), path, pre))
                  for k in ("input_price_per_million", "output_price_per_million")]
        if any(p < 0 or not math.isfinite(p) for p in prices):
            raise CheckpointError("price must be finite and >= 0", file=str(path),
                                  field=pre + "price")
        provider = m.get("provider_id") or m["name"]
        if not isinstance(provider, str):
            raise CheckpointError("wrong type", file=str(path), field=pre + "provider_id")
        scale = m.get("input_token_scale", 1.0)
        if (isinstance(scale, bool) or not isinstance(scale, (int, float))
                or not math.isfinite(scale) or not 0.1 <= scale <= 10.0):
            raise CheckpointError("must be a number in [0.1, 10]", file=str(path),
                                  field=pre + "input_token_scale")
        models.append(ModelSpec(_req(m, "name", str, path, pre), provider, prices[0],
                                prices[1], float(scale)))
    if not models:
        raise CheckpointError("no models", file=str(path), field="models")
    if len({m.name for m in models}) != len(models):
        raise CheckpointError("duplicate model name", file=str(path), field="models")
    policies = []
    for i, p in enumerate(_req(raw, "policies", list, path)):
        where.field = f"policies[{i}]"
        if not isinstance(p, dict):
            raise CheckpointError("wrong type: a policy is an object", file=str(path),
                                  field=f"policies[{i}]")
        try:
            policies.append(Policy.from_json(p))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"invalid policy: {exc}", file=str(path),
                                  field=f"policies[{i}]") from None
    if not policies:
        raise CheckpointError("no policies", file=str(path), field="policies")
    where.field = "heads"
    heads = dict(_req(raw, "heads", dict, path))
    kind = heads.pop("kind", None)
    if kind not in HEAD_KINDS:
        raise CheckpointError(f"heads.kind must be one of {HEAD_KINDS}", file=str(path),
                              field="heads.kind")
    where.field = "default_lambda"
    lam = raw.get("default_lambda", 0.99999)
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not 0 <= lam <= 1:
        raise CheckpointError("must be a number in [0, 1]", file=str(path),
                              field="default_lambda")
    optional = {key: _opt(raw, key, typ, default, path) for key, typ, default in (
        ("input_tokens", str, "tokenizer"), ("name", str, path.parent.name),
        ("provenance", dict, {}))}
    where.field = "tradeoff"
    table = None
    if raw.get("tradeoff") is not None:  # optional: manifests before it still load
        try:
            table = TradeoffTable.from_json(raw["tradeoff"])
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"invalid trade-off table: {exc}", file=str(path),
                                  field="tradeoff") from None
    return Checkpoint(
        embedder=embedder, models=tuple(models), policies=tuple(policies), arrays={},
        head_kind=kind, head_options=heads, default_lambda=float(lam),
        input_tokens=optional["input_tokens"], name=optional["name"],
        provenance=dict(optional["provenance"]), tradeoff=table,
    )


def _opt(raw: Mapping[str, Any], key: str, typ: type, default: Any, path: Path) -> Any:
    value = raw.get(key, default)
    if not isinstance(value, typ):
        raise CheckpointError(f"wrong type: expected {typ.__name__}", file=str(path), field=key)
    return value


def _verify_file(root: Path, name: str, digest: Any, manifest: Path) -> None:
    target = (root / name).resolve()
    if root.resolve() not in target.parents or not isinstance(digest, str):
        raise CheckpointError("invalid file entry", file=str(manifest), field=f"files.{name}")
    if not target.is_file():
        raise CheckpointError("file listed in manifest is missing", file=str(root / name),
                              field=f"files.{name}")
    if sha256_file(target) != digest:
        raise CheckpointError("sha256 mismatch: the file was changed or replaced",
                              file=str(root / name), field=f"files.{name}")


def _load_arrays(path: Path, expected: Mapping[str, tuple[int, ...]] | None = None
                 ) -> dict[str, FloatArray]:
    """Load the head arrays. With `expected` (name -> shape), every member's header is read
    first, without loading data: an unknown array, a dtype other than plain numbers, or a
    shape or size other than expected is refused before a byte of its data is read."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not an npz archive (pickles are never loaded)", file=str(path))
    try:
        if expected is not None:
            _check_members(path, expected)
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"unreadable arrays: {' '.join(str(exc).split())[:200]}",
                              file=str(path)) from None


def _check_members(path: Path, expected: Mapping[str, tuple[int, ...]]) -> None:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if key not in expected:
                raise CheckpointError("unknown array (only the heads' arrays are allowed)",
                                      file=str(path), field=key)
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            if dtype.kind not in ARRAY_KINDS or dtype.fields is not None or dtype.subdtype:
                raise CheckpointError(f"dtype {dtype.str} is not a plain number type",
                                      file=str(path), field=key)
            if tuple(shape) != tuple(expected[key]):
                raise CheckpointError(f"shape {tuple(shape)} != expected {expected[key]}",
                                      file=str(path), field=key)
            if info.file_size > 4096 + dtype.itemsize * math.prod(shape):
                raise CheckpointError("array member larger than its shape", file=str(path),
                                      field=key)


def _expected_shapes(ckpt: Checkpoint, path: Path) -> dict[str, tuple[int, ...]]:
    """Every array the heads need (name -> shape)."""
    m, p, d = len(ckpt.models), len(ckpt.policies), ckpt.embedder.dim
    if ckpt.head_kind == "linear":
        expected = {
            "quality_coef": (m, p, d), "quality_intercept": (m, p),
            "tokens_coef": (m, p, d), "tokens_intercept": (m, p),
        }
    else:
        expected = _mlp_shapes(ckpt, m, p, d, path)
    features = ckpt.head_options.get("features")
    if features is not None:  # optional: linear heads that also read request features
        if (ckpt.head_kind != "linear" or not isinstance(features, list)
                or not all(f in FEATURES for f in features)):
            raise CheckpointError(f"features must be a list of {', '.join(FEATURES)} (linear "
                                  "heads only)", file=str(path), field="heads.features")
        for target in ("quality", "tokens"):
            expected[f"{target}_feat_coef"] = (m, p, len(features))
    return expected


def _optional_shapes(ckpt: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Arrays a checkpoint may have: `arm_observed` [M, P] (1 = the arm had training data)."""
    return {"arm_observed": (len(ckpt.models), len(ckpt.policies))}


def _check_shapes(ckpt: Checkpoint, path: Path) -> None:
    optional = {k: v for k, v in _optional_shapes(ckpt).items() if k in ckpt.arrays}
    for key, shape in {**_expected_shapes(ckpt, path), **optional}.items():
        arr = ckpt.arrays.get(key)
        if arr is None:
            raise CheckpointError("array missing", file=str(path), field=key)
        if tuple(arr.shape) != shape:
            raise CheckpointError(f"shape {tuple(arr.shape)} != expected {shape}",
                                  file=str(path), field=key)
        if not np.all(np.isfinite(arr)):
            raise CheckpointError("non-finite values", file=str(path), field=key)


def _mlp_shapes(ckpt: Checkpoint, m: int, p: int, d: int, path: Path) -> dict[str, tuple[int, ...]]:
    """MLP heads: per target (quality, tokens) layers `{t}_w{i}` [M*P, in, out], `{t}_b{i}`."""
    hidden = ckpt.head_options.get("hidden")
    if not isinstance(hidden, list) or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise CheckpointError("mlp heads need a list of hidden sizes", file=str(path),
                              field="heads.hidden")
    sizes = [d, *hidden, 1]
    shapes: dict[str, tuple[int, ...]] = {}
    for target in ("quality", "tokens"):
        for i in range(len(sizes) - 1):
            shapes[f"{target}_w{i}"] = (m * p, sizes[i], sizes[i + 1])
            shapes[f"{target}_b{i}"] = (m * p, sizes[i + 1])
    return shapes
