"""R2 routing core: checkpoints, vectorised (model, budget) scoring, embedders.

Pure routing: nothing here imports FastAPI or LiteLLM, and nothing happens at import.
"""

from ._errors import (
    CheckpointError,
    EmbedderError,
    EmbedderUnavailableError,
    InvalidInputError,
    NoFeasibleCandidateError,
    R2Error,
    UnknownModelError,
)
from .checkpoint import Checkpoint, EmbedderSpec, ModelSpec, load_checkpoint, save_checkpoint
from .embedders import Embedder, HashEmbedder, make_embedder
from .policies import (
    DEFAULT_BUDGET_INSTRUCTION,
    UNLIMITED,
    Policy,
    budget_policy,
    parse_policy_label,
    unlimited_policy,
)
from .router import Router
from .scoring import Candidate, Constraints, Decision, Scorer, Scores, check_lambda
from .text import cl100k_token_count, routing_text, token_counter, words_token_count

__all__ = [
    "DEFAULT_BUDGET_INSTRUCTION",
    "UNLIMITED",
    "Candidate",
    "Checkpoint",
    "CheckpointError",
    "Constraints",
    "Decision",
    "Embedder",
    "EmbedderError",
    "EmbedderSpec",
    "EmbedderUnavailableError",
    "HashEmbedder",
    "InvalidInputError",
    "ModelSpec",
    "NoFeasibleCandidateError",
    "Policy",
    "R2Error",
    "Router",
    "Scorer",
    "Scores",
    "UnknownModelError",
    "budget_policy",
    "check_lambda",
    "cl100k_token_count",
    "load_checkpoint",
    "make_embedder",
    "parse_policy_label",
    "routing_text",
    "save_checkpoint",
    "token_counter",
    "unlimited_policy",
    "words_token_count",
]
