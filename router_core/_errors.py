"""The exception tree of the routing core.

Every failure the core can raise is one of these, so the CLI and the gateway map them to exit
codes and OpenAI error envelopes in one place each::

    R2Error
    ├── InvalidInputError      bad caller input (dimension, NaN, lambda, empty text); has `param`
    ├── CheckpointError        a checkpoint that cannot be trusted or read; names `file` and `field`
    ├── NoFeasibleCandidateError  the constraints leave no (model, budget) to pick
    ├── UnknownModelError      a model name the checkpoint does not know; has `param`
    └── EmbedderError          the embedder failed
        └── EmbedderUnavailableError  it cannot be reached (names the URL, never a key)

Messages never contain request content (prompts), only names of fields, files and models.
"""

from __future__ import annotations


class R2Error(Exception):
    """Base class of all routing-core errors."""


class InvalidInputError(R2Error, ValueError):
    """Caller input the core cannot route; `param` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownModelError(InvalidInputError):
    """A model name (e.g. in an allowed-models list) that the checkpoint does not have."""


def with_location(message: str, file: str | None = None, row: int | None = None,
                  field: str | None = None) -> str:
    """`message (file F, row R, field X)`, naming only the parts that are known."""
    where = ", ".join(part for part in (
        f"file {file}" if file else "",
        f"row {row}" if row is not None else "",
        f"field {field}" if field else "") if part)
    return f"{message} ({where})" if where else message


class CheckpointError(R2Error):
    """A checkpoint failed verification or could not be read."""

    def __init__(self, message: str, file: str | None = None, field: str | None = None) -> None:
        super().__init__(with_location(message, file=file, field=field))
        self.file = file
        self.field = field


class NoFeasibleCandidateError(R2Error):
    """The constraints (allowed models, max budget, max cost) exclude every candidate."""


class EmbedderError(R2Error):
    """The embedder failed to produce embeddings."""


class EmbedderUnavailableError(EmbedderError):
    """The embedder cannot be reached (connection refused, timeout, 5xx)."""
