"""The public routing API: a checkpoint, an embedder and a token counter behind `route()`.

    router = Router.load("checkpoints/default", {"kind": "local-q8"})
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
from .text import (
    TokenCounter,
    instruction_tokens,
    message_counter,
    routing_text,
    token_counter,
    truncate,
    user_messages,
)


class Router:
    """Routes texts or embeddings to a (model, policy) with a loaded, verified checkpoint."""

    def __init__(self, checkpoint: Checkpoint, embedder: Embedder | None = None,
                 input_tokens: str | TokenCounter | None = None) -> None:
        self.checkpoint = checkpoint
        self.embedder = embedder
        counter = input_tokens if input_tokens is not None else checkpoint.input_tokens
        self.count_tokens: TokenCounter = (
            token_counter(counter) if isinstance(counter, str) else counter)
        # The release's words*1.3 estimate priced the prompt alone (parity); a real tokenizer
        # also counts what each policy's instruction adds to the request.
        self.count_messages = message_counter(counter) if isinstance(counter, str) else (
            lambda msgs: self.count_tokens(routing_text(msgs, 1 << 62, "latest+history+system")))
        self.scorer = Scorer(checkpoint, policy_input_tokens(checkpoint, counter))
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
        return self.route_messages(user_messages(text), lambda_, constraints, input_tokens)

    def route_messages(self, messages: Iterable[Mapping[str, Any]], lambda_: float | None = None,
                       constraints: Constraints = NO_CONSTRAINTS,
                       input_tokens: int | None = None) -> Decision:
        """Route a chat conversation on its routing text (`text.routing_text`)."""
        msgs = list(messages)
        window = self.embedder.max_chars if self.embedder is not None else 2000
        text = routing_text(msgs, window)
        if not text.strip():
            raise InvalidInputError("the conversation has no system or user text to route",
                                    param="messages")
        lam = check_lambda(self.default_lambda if lambda_ is None else lambda_)
        tokens = self.count_messages(msgs) if input_tokens is None else int(input_tokens)
        return self.decide(self.embed([text])[0], tokens, lam, constraints)

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


def policy_input_tokens(checkpoint: Checkpoint, counter: str | TokenCounter) -> list[float]:
    """Input tokens each policy's instruction adds (none under the release's words estimate,
    which priced the prompt alone)."""
    if counter == "words1.3":
        return [0.0] * len(checkpoint.policies)
    count = token_counter(counter) if isinstance(counter, str) else counter
    return [float(instruction_tokens(p.render_instruction(), count)) for p in checkpoint.policies]
