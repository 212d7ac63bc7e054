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

Counting is CPU work proportional to the request size (~25 ms for 400k characters on an idle
core, 80 ms and more under load), and tiktoken's encoder holds the interpreter lock while it
runs, so even off the event loop (`Service.route` runs it in a thread for large requests) it
takes the lock from the loop and slows every request beside it. A message text longer than
`SAMPLE_ABOVE` characters is therefore estimated from `SAMPLE_WINDOWS` windows (one per stratum) of
`SAMPLE_WINDOW` characters (cut at whitespace), counted by the same tokenizer and scaled by
length; the rest of the message list is counted exactly. On realistic long texts the estimate
is within about 1% of the full count for ~x0.1 of its CPU at 400k characters; text made of
long blocks of different kinds can be off by a few percent (`benchmarks/token_sample_accuracy.py`,
docs/benchmarks-gateway.md).
"""

from __future__ import annotations

import logging
import random
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
#: Message texts longer than this (characters) are counted from a sample (module docstring).
SAMPLE_ABOVE = 100_000
SAMPLE_WINDOWS = 128
SAMPLE_WINDOW = 250


def sample_text(text: str, windows: int = SAMPLE_WINDOWS, width: int = SAMPLE_WINDOW) -> str:
    """One piece of about `width` characters from each of `windows` equal strata of `text`, at a
    pseudo-random offset in its stratum (fixed per text length: no aliasing with a text that
    repeats itself, the same count for the same text), each starting and ending at whitespace
    (a piece cut inside a word would count extra tokens), joined by a space."""
    step = len(text) / windows
    rng = random.Random(len(text))
    pieces = []
    for i in range(windows):
        start = int(i * step + rng.random() * max(0.0, step - 2 * width))
        if start:
            space = text.find(" ", start, start + width)
            start = space + 1 if space >= 0 else start
        end = text.find(" ", start + width, start + 2 * width)
        pieces.append(text[start:end if end >= 0 else start + width])
    return " ".join(pieces)


def _sampled(messages: Messages) -> tuple[list[Mapping[str, Any]], list[tuple[str, str]]]:
    """The message list with every text over `SAMPLE_ABOVE` emptied (its chat overhead is still
    counted with the list), and the (full text, sample) pairs it stood for: each sample is
    counted once on its own and scaled to its full text."""
    out: list[Mapping[str, Any]] = []
    replaced: list[tuple[str, str]] = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str) and len(content) > SAMPLE_ABOVE:
            replaced.append((content, sample_text(content)))
            msg = {**msg, "content": ""}
        out.append(msg)
    return out, replaced


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
        if self.kind == "words1.3":  # one group, no tokenizer
            return np.full(len(self.models), float(self._fallback(messages))) / self._divide
        sampled = _sampled(messages)  # once: the same samples for every tokenizer
        counts = {key: self._count_group(model, messages, *sampled)
                  for key, model in self._groups.items()}
        return np.array([counts[key] for key in self._group_of], dtype=np.float64) / self._divide

    def _count_group(self, litellm_model: str, messages: Messages,
                     sampled: list[Mapping[str, Any]], replaced: list[tuple[str, str]]) -> int:
        try:
            import litellm

            total = float(litellm.token_counter(model=litellm_model, messages=sampled))
            for full, sample in replaced:  # each sample's tokens, scaled to its full text
                tokens = litellm.token_counter(model=litellm_model, text=sample)
                total += tokens * len(full) / len(sample)
            return int(round(total))
        except Exception:  # noqa: BLE001 - any tokenizer failure: the offline cl100k count
            log.debug("token_counter failed for %s; counting with cl100k", litellm_model)
            return count_message_tokens(messages, cl100k_token_count)
