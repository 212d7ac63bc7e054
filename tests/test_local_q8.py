"""`local-q8`: MiniLM dynamically quantised to int8, derived once from `local`'s ONNX file.

The model is derived once per session into a temporary cache (`q8_root`); tests that build
the embedder by name point `$R2_CACHE_DIR` at it. Cache handling is exercised with a derive
that copies that file (counting calls, writing slowly), so only one real derivation runs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import serve_without_listening

from router_core import EmbedderError, InvalidInputError, R2Error, Router, make_embedder
from router_core.checkpoint import sha256_file
from router_core.embedders import check_options, local_q8
from router_core.embedders.local_onnx import OnnxMiniLMEmbedder
from router_core.embedders.local_q8 import MODEL_ID, OnnxMiniLMQ8Embedder, cached_model

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "mcqa_concise_cot-q8"
MODELS = ("gpt-3.5-turbo", "gpt-4")
TEXTS = [
    "What is 17 * 23? Answer with the number.",
    "hi",
    "Which gas do plants absorb for photosynthesis? A) oxygen B) nitrogen C) carbon dioxide",
    "Écris un poème sur la mer en trois vers.",
    "def f(x):\n    return [i * i for i in range(x) if i % 2]\n# what does f(7) return?",
    "A train leaves at 3 pm at 60 km/h; a second leaves at 4 pm at 90 km/h on the same track. "
    "When does the second catch the first? Options: A) 5 pm B) 6 pm C) 7 pm D) 8 pm " * 6,
]


@pytest.fixture(scope="session")
def q8_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root (`$R2_CACHE_DIR`) whose `models/` holds the derived model."""
    root = tmp_path_factory.mktemp("r2cache")
    cached_model(root / "models")
    return root


@pytest.fixture
def q8_env(q8_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R2_CACHE_DIR", str(q8_root))
    return q8_root


@pytest.fixture(scope="module")
def q8(q8_root: Path) -> Iterator[OnnxMiniLMQ8Embedder]:
    emb = OnnxMiniLMQ8Embedder(threads=1, cache_dir=str(q8_root / "models"))
    yield emb
    emb.close()


def _good_model(q8_root: Path) -> Path:
    (model,) = (q8_root / "models").glob(f"{MODEL_ID}-*.onnx")
    return model


def test_built_by_name_with_its_identity(q8_env: Path) -> None:
    emb = make_embedder({"kind": "local-q8"})
    try:
        assert (emb.id, emb.dim, emb.normalized) == (MODEL_ID, 384, True)
        assert emb.embed(["hello"]).shape == (1, 384)
    finally:
        emb.close()
    check_options({"kind": "local-q8", "cache_dir": "/x", "threads": 1})
    with pytest.raises(InvalidInputError, match="unknown option 'cache_dri'"):
        check_options({"kind": "local-q8", "cache_dri": "/x"})


def test_vectors_are_close_to_local(q8: OnnxMiniLMQ8Embedder) -> None:
    ref = OnnxMiniLMEmbedder(threads=1)
    try:
        cos = np.sum(ref.embed(TEXTS) * q8.embed(TEXTS), axis=1)
    finally:
        ref.close()
    assert cos.min() >= 0.98, cos
    vectors = q8.embed(TEXTS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_vector_alone_and_in_a_mixed_length_batch(q8: OnnxMiniLMQ8Embedder) -> None:
    alone = np.concatenate([q8.embed([t]) for t in TEXTS])
    mixed = q8.embed(TEXTS[::-1] + TEXTS)
    np.testing.assert_array_equal(mixed[len(TEXTS):], alone)
    np.testing.assert_array_equal(mixed[:len(TEXTS)], alone[::-1])
    assert set(q8.last_stages) == {"tokenize", "onnx"}


def test_cached_model_is_reused_without_a_second_derivation(
        q8_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _good_model(q8_root)
    before = (model.stat().st_mtime_ns, sha256_file(model))

    def refuse(source: Path, out: Path) -> None:
        raise AssertionError("derived again")

    monkeypatch.setattr(local_q8, "derive", refuse)
    emb = OnnxMiniLMQ8Embedder(threads=1, cache_dir=str(q8_root / "models"))
    emb.close()
    assert (model.stat().st_mtime_ns, sha256_file(model)) == before


def _copying_derive(good: Path, calls: list[Path]) -> Any:
    def derive(source: Path, out: Path) -> None:
        calls.append(out)
        shutil.copyfile(good, out)
    return derive


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "no sidecar", "bad sidecar"])
def test_a_corrupt_or_partial_cache_file_is_derived_again(
        q8_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    good = _good_model(q8_root)
    shutil.copytree(q8_root / "models", tmp_path / "models")
    model = tmp_path / "models" / good.name
    sidecar = model.with_name(model.name + ".sha256")
    data = bytearray(model.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif damage == "truncated":
        model.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "no sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text("0" * 64 + "\n")
    calls: list[Path] = []
    monkeypatch.setattr(local_q8, "derive", _copying_derive(good, calls))
    assert cached_model(tmp_path / "models") == model
    assert len(calls) == 1
    assert sha256_file(model) == sha256_file(good)
    assert sidecar.read_text().split()[0] == sha256_file(good)
    assert cached_model(tmp_path / "models") == model and len(calls) == 1
    assert not list((tmp_path / "models").glob(".*.tmp"))


CHILD = """
import shutil, sys, time
from pathlib import Path
from router_core.checkpoint import sha256_file
from router_core.embedders import local_q8

good, cache, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def slow_derive(source, out):
    with open(log, "a") as fh:
        fh.write("derive\\n")
    data = good.read_bytes()
    with open(out, "wb") as fh:  # half a file on disk for a while
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(2.0)
        fh.write(data[len(data) // 2:])

local_q8.derive = slow_derive
print(sha256_file(local_q8.cached_model(cache)))
"""


def test_two_processes_deriving_at_once_derive_once_and_read_a_whole_file(
        q8_root: Path, tmp_path: Path) -> None:
    good = _good_model(q8_root)
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(good), str(tmp_path / "cache"),
                               str(log)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [sha256_file(good)] * 2
    assert log.read_text().count("derive") == 1


def test_a_model_that_does_not_reproduce_the_probes_is_refused(
        q8_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    with np.load(local_q8.probe_file(), allow_pickle=False) as data:
        texts, vectors = data["texts"], data["vectors"]
    moved = np.roll(vectors, 1, axis=0)  # each probe now expects another probe's vector
    fake = tmp_path / "probes.npz"
    np.savez(fake, texts=texts, vectors=moved, onnxruntime=np.array("0.0.test"))
    monkeypatch.setattr(local_q8, "probe_file", lambda: fake)
    with pytest.raises(EmbedderError) as info:
        OnnxMiniLMQ8Embedder(threads=1, cache_dir=str(q8_root / "models"))
    message = str(info.value)
    assert "does not reproduce the reference vectors" in message
    assert f"onnxruntime {ort.__version__}" in message and "0.0.test" in message


def _tilted(vectors: np.ndarray, cosine: float, seed: int = 0) -> np.ndarray:
    """Unit vectors at exactly `cosine` to each row of `vectors` (a random orthogonal tilt)."""
    noise = np.random.default_rng(seed).standard_normal(vectors.shape)
    noise -= np.sum(noise * vectors, axis=1, keepdims=True) * vectors
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosine * vectors + np.sqrt(1 - cosine ** 2) * noise).astype(np.float32)


@pytest.mark.parametrize(("cosine", "accepted"), [(0.985, True), (0.95, False)])
def test_the_probe_check_tolerates_rounding_drift_but_not_a_different_model(
        q8_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cosine: float,
        accepted: bool) -> None:
    # other onnxruntime releases drift to a least probe cosine of 0.974-0.998 and route the
    # same (docs/embedders.md); a different quantisation recipe lands far lower
    assert 0.95 < local_q8.PROBE_MIN_COSINE < 0.985
    with np.load(local_q8.probe_file(), allow_pickle=False) as data:
        texts, vectors = data["texts"], data["vectors"]
    fake = tmp_path / "probes.npz"
    np.savez(fake, texts=texts, vectors=_tilted(vectors, cosine), onnxruntime=np.array("x"))
    monkeypatch.setattr(local_q8, "probe_file", lambda: fake)
    if accepted:
        OnnxMiniLMQ8Embedder(threads=1, cache_dir=str(q8_root / "models")).close()
    else:
        with pytest.raises(EmbedderError, match="does not reproduce the reference vectors"):
            OnnxMiniLMQ8Embedder(threads=1, cache_dir=str(q8_root / "models"))


def test_the_shipped_probes_pass_and_cover_truncation(q8: OnnxMiniLMQ8Embedder) -> None:
    with np.load(local_q8.probe_file(), allow_pickle=False) as data:
        texts = [str(t) for t in data["texts"]]
    assert len(texts) >= 16
    assert max(len(q8._tokenizer.encode(t).ids) for t in texts) == 256


def q8_settings(base_url: str, ckpt: Path = CKPT, kind: str = "local-q8") -> dict[str, Any]:
    return {
        "checkpoint": str(ckpt),
        "embedder": {"kind": kind},
        "default_tradeoff": 0.5,
        "deployments": [{"name": m, "model": f"openai/up-{m}", "api_base": base_url,
                         "timeout_s": 5.0} for m in MODELS],
    }


def test_q8_checkpoint_routes_through_the_gateway_as_offline(
        q8_env: Path, make_gateway: Any, standin: Any) -> None:
    gw = make_gateway(q8_settings(standin.base_url))
    assert gw.service.embedder.id == MODEL_ID
    router = Router.load(CKPT, {"kind": "local-q8"})
    client = gw.client()
    seen = set()
    for prompt in TEXTS[:3]:
        for tradeoff in ("0", "1"):
            raw = client.chat.completions.with_raw_response.create(
                model="r2-auto", messages=[{"role": "user", "content": prompt}],
                extra_headers={"x-r2-tradeoff": tradeoff})
            expected = router.route(prompt, float(raw.headers["x-r2-lambda"]))
            assert raw.headers["x-r2-model"] == expected.model == raw.parse().model
            assert raw.headers["x-r2-budget"] == str(expected.budget)
            seen.add((expected.model, expected.budget))
    assert len(seen) >= 2
    router.embedder.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(("ckpt", "kind", "trained"), [
    (ROOT / "checkpoints" / "mcqa_concise_cot", "local-q8", "all-MiniLM-L6-v2-onnx-int8"),
    (CKPT, "local", MODEL_ID),
])
def test_a_checkpoint_of_the_other_minilm_is_refused_at_start_up(
        q8_env: Path, standin: Any, ckpt: Path, kind: str, trained: str) -> None:
    from gateway.app import build_app
    from gateway.config import parse_settings

    with pytest.raises(R2Error, match=f"trained with embedder '{trained}'"):
        build_app(parse_settings(q8_settings(standin.base_url, ckpt, kind)))


def test_r2_route_and_serve_take_the_embedder_flag(
        q8_env: Path, tmp_path: Path, standin: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from gateway.commands import route

    parser = argparse.ArgumentParser()
    route.register(parser.add_subparsers())
    for extra in (["--embedder", "local-q8"], []):  # without it, the checkpoint's id implies it
        args = parser.parse_args(["route", TEXTS[0], "--checkpoint", str(CKPT), "--json",
                                  "--tradeoff", "0", *extra])
        assert args.func(args) == 0
        assert json.loads(capsys.readouterr().out)["model"] in MODELS
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(q8_settings(standin.base_url, kind="local")))
    app = serve_without_listening(monkeypatch, "--config", str(cfg), "--embedder", "local-q8",
                                  "--port", "0")
    # the model is loaded (derived, probe-checked) when the app is built, before any request
    assert app.state.service.embedder.id == MODEL_ID
    assert app.state.service.embedder._session is not None


def test_the_q8_checkpoints_were_trained_with_the_flag() -> None:
    for name in ("mcqa_concise_cot", "mcqa_nine_models", "routerbench_subset"):
        manifest = json.loads((ROOT / "checkpoints" / f"{name}-q8" / "manifest.json").read_text())
        assert manifest["embedder"] == {"id": MODEL_ID, "dim": 384, "normalized": True}
        assert manifest["provenance"]["embedder_config"] == {"kind": "local-q8"}
