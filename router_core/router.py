"""The public routing API: a checkpoint, an embedder and a token counter behind `route()`.

    router = Router.load("checkpoints/default", {"kind": "local"})
    decision = router.route("What is 2+2?", lambda_=0.5)
    decision.model, decision.budget, decision.candidates

`route_embeddings` routes a batch of precomputed embeddings in one matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import InvalidInputError, NoFeasibleCandidateError
from .checkpoint import Checkpoint, load_checkpoint
from .embedders import Embedder, make_embedder
from .scoring import NO_CONSTRAINTS, Candidate, Constraints, Decision, Scorer, check_lambda
from .text import TokenCounter, messages_text, token_counter, truncate


class Router:
    """Routes texts or embeddings to a (model, policy) with a loaded, verified checkpoint."""

    def __init__(self, checkpoint: Checkpoint, embedder: Embedder | None = None,
                 input_tokens: str | TokenCounter | None = None) -> None:
        self.checkpoint = checkpoint
        self.scorer = Scorer(checkpoint)
        self.embedder = embedder
        counter = input_tokens if input_tokens is not None else checkpoint.input_tokens
        self.count_tokens: TokenCounter = (
            token_counter(counter) if isinstance(counter, str) else counter)
        self.default_lambda = checkpoint.default_lambda

    @classmethod
    def load(cls, checkpoint_dir: str | Path, embedder: Mapping[str, Any] | Embedder | None = None,
             input_tokens: str | TokenCounter | None = None) -> Router:
        """Load a checkpoint, build the embedder from its config, and check they agree."""
        emb = embedder if isinstance(embedder, Embedder) else make_embedder(embedder)
        ckpt = load_checkpoint(checkpoint_dir, expected_embedder=(emb.id, emb.dim))
        return cls(ckpt, emb, input_tokens)

    @property
    def models(self) -> tuple[str, ...]:
        return self.scorer.models

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.embedder is None:
            raise InvalidInputError("this router has no embedder; route embeddings instead",
                                    param="embedder")
        return self.embedder.embed([truncate(t, self.embedder.max_chars) for t in texts])

    def route(self, text: str, lambda_: float | None = None,
              constraints: Constraints = NO_CONSTRAINTS,
              input_tokens: int | None = None) -> Decision:
        """Embed `text` and decide; raises `InvalidInputError` on empty text."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError("text to route is empty", param="text")
        lam = check_lambda(self.default_lambda if lambda_ is None else lambda_)
        tokens = self.count_tokens(text) if input_tokens is None else int(input_tokens)
        return self.decide(self.embed([text])[0], tokens, lam, constraints)

    def route_messages(self, messages: Iterable[Mapping[str, Any]], lambda_: float | None = None,
                       constraints: Constraints = NO_CONSTRAINTS) -> Decision:
        return self.route(messages_text(messages), lambda_, constraints)

    def decide(self, embedding: npt.ArrayLike, input_tokens: int, lambda_: float,
               constraints: Constraints = NO_CONSTRAINTS) -> Decision:
        return self.scorer.decide(embedding, input_tokens, lambda_, constraints)

    def route_embeddings(self, embeddings: npt.ArrayLike, input_tokens: npt.ArrayLike,
                         lambda_: float, constraints: Constraints = NO_CONSTRAINTS,
                         ) -> list[Candidate]:
        """Batch routing: one chosen candidate per row, in order (one GEMM for the batch)."""
        idx, scores, util = self.scorer.pick(embeddings, input_tokens, lambda_, constraints)
        if np.any(idx < 0):
            row = int(np.flatnonzero(idx < 0)[0])
            raise NoFeasibleCandidateError(
                f"row {row}: no (model, budget) satisfies the constraints")
        return [self.scorer.candidate(scores, util, r, int(i)) for r, i in enumerate(idx)]
