"""Input tokens of a request as each deployment will bill them.

LiteLLM's `token_counter(model=..., messages=...)` counts the whole message list with the chat
template overhead and the model's own tokenizer where it knows one (a Hugging Face tokenizer
for Llama, Claude 2, Cohere, DeepSeek; cl100k otherwise). Deployments that share a tokenizer
are counted once: a request to an 11-model pool costs one or two counts, not eleven. When
LiteLLM fails on a model the core's `count_message_tokens` with cl100k is used.

`r2 train` fits each model's billed-per-counted-token ratio against cl100k
(`ModelSpec.input_token_scale`), which the scorer applies; counts this module made with the
model's own tokenizer are handed over in cl100k-equivalent units so that the ratio is not
applied on top of the right tokenizer.

Counting is CPU work proportional to the request size (~70 ms for 400k characters), so
`Service.route` runs it off the event loop for large requests, next to the embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from router_core.text import cl100k_token_count, count_message_tokens, message_counter

log = logging.getLogger("r2.gateway")
Messages = Sequence[Mapping[str, Any]]


#: LiteLLM tokenizers that it would download from the Hugging Face hub on first use (and retry
#: on the request path after a failure). Never fetched here: such models are counted with
#: cl100k, which `input_token_scale` (fitted against cl100k by `r2 train`) corrects.
_HUB_KINDS = frozenset({"cohere", "llama2", "llama3"})
#: A model LiteLLM counts with cl100k, for groups whose own tokenizer is not used.
_CL100K_MODEL = "gpt-3.5-turbo"


def _litellm_kind(litellm_model: str) -> str | None:
    from litellm.utils import huggingface_tokenizer_kind

    return huggingface_tokenizer_kind(litellm_model)


def tokenizer_key(litellm_model: str) -> str:
    """Which tokenizer this model is counted with: LiteLLM's own pick where it ships that
    tokenizer, "tiktoken" otherwise (including tokenizers LiteLLM would fetch from the hub)."""
    try:
        kind = _litellm_kind(litellm_model)
    except ImportError:  # another LiteLLM version: count each model on its own
        return litellm_model
    return kind if kind is not None and kind not in _HUB_KINDS else "tiktoken"


class InputTokenCounter:
    """Counts a message list once per distinct tokenizer; returns one count per model."""

    def __init__(self, models: Sequence[str], litellm_models: Mapping[str, str],
                 kind: str = "tokenizer", scales: Sequence[float] | None = None) -> None:
        self.models = tuple(models)
        self.kind = kind
        self._fallback = message_counter(kind)
        groups: dict[str, str] = {}
        self._group_of: list[str] = []
        for name in self.models:
            litellm_model = litellm_models.get(name, name)
            key = tokenizer_key(litellm_model) if kind != "words1.3" else "words"
            if key == "tiktoken" and _litellm_kind(litellm_model) is not None:
                litellm_model = _CL100K_MODEL  # never LiteLLM's hub tokenizer for this model
            groups.setdefault(key, litellm_model)
            self._group_of.append(key)
        self._groups = groups
        # The scorer multiplies counts by each model's `input_token_scale` (billed per cl100k
        # token, fitted by `r2 train`). A count made with the model's own tokenizer is billed
        # as is, so it is divided by that scale here: never corrected twice.
        own = [key not in ("tiktoken", "words") for key in self._group_of]
        ones = [1.0] * len(self.models)
        self._divide = np.array([s if o else 1.0 for s, o in
                                 zip(scales or ones, own, strict=True)], dtype=np.float64)

    def warm_up(self) -> None:
        """Load every tokenizer once (at start-up, not on the first request)."""
        self.count([{"role": "user", "content": "warm-up"}])

    def count(self, messages: Messages) -> npt.NDArray[np.float64]:
        """Input tokens per model (in `models` order)."""
        counts = {key: self._count_group(model, messages) for key, model in self._groups.items()}
        return np.array([counts[key] for key in self._group_of], dtype=np.float64) / self._divide

    def _count_group(self, litellm_model: str, messages: Messages) -> int:
        if self.kind == "words1.3":
            return self._fallback(messages)
        try:
            import litellm

            return int(litellm.token_counter(model=litellm_model, messages=list(messages)))
        except Exception:  # noqa: BLE001 - any tokenizer failure: the offline cl100k count
            log.debug("token_counter failed for %s; counting with cl100k", litellm_model)
            return count_message_tokens(messages, cl100k_token_count)
