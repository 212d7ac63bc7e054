"""What the router reads from a request: the text to embed and the input-token count.

The text is the conversation's system and user content (assistant and tool turns are the
model's own output, not the query), with list-typed content reduced to its text parts. Input
tokens price a candidate; they are counted with cl100k (tiktoken, from the BPE file LiteLLM
bundles, so nothing is downloaded) or, for parity with the release, `max(1, int(words*1.3))`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import InvalidInputError

ROUTED_ROLES = ("system", "developer", "user")
TokenCounter = Callable[[str], int]


def content_text(content: Any) -> str:
    """Text of one message `content`: a string, or the `text` parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    raise InvalidInputError("message content must be a string or a list of parts",
                            param="messages.content")


def messages_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The routed text of a chat conversation (system/developer and user turns, in order)."""
    texts = []
    for msg in messages:
        if msg.get("role") in ROUTED_ROLES:
            text = content_text(msg.get("content"))
            if text.strip():
                texts.append(text)
    return "\n\n".join(texts)


def truncate(text: str, max_chars: int) -> str:
    """Keep the head of very long prompts for embedding; the request itself is never cut."""
    return text if len(text) <= max_chars else text[:max_chars]


def words_token_count(text: str) -> int:
    """The release's estimate: `max(1, int(words * 1.3))`."""
    return max(1, int(len(text.split()) * 1.3))


def _bundled_tiktoken_dir() -> str | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(path) if path.is_dir() else None


@lru_cache(maxsize=1)
def _cl100k() -> Any:
    # Point tiktoken at LiteLLM's bundled BPE files: tiktoken would otherwise fetch them.
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = _bundled_tiktoken_dir()
        if bundled:
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def cl100k_token_count(text: str, max_chars: int = 400_000) -> int:
    """cl100k token count; beyond `max_chars` it extrapolates from the head (cost estimate)."""
    enc = _cl100k()
    if len(text) <= max_chars:
        return max(1, len(enc.encode(text, disallowed_special=())))
    head = len(enc.encode(text[:max_chars], disallowed_special=()))
    return max(1, int(head * len(text) / max_chars))


def token_counter(kind: str) -> TokenCounter:
    """`"words1.3"` (release parity) or `"tokenizer"` / `"cl100k"` (real BPE count)."""
    if kind == "words1.3":
        return words_token_count
    if kind in ("tokenizer", "cl100k"):
        return cl100k_token_count
    raise InvalidInputError(f"unknown input token counter {kind!r}", param="input_tokens")
