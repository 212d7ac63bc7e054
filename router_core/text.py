"""What the router reads from a request: the text to embed and the input-token count.

`routing_text` is the one function that turns a conversation into the text the router embeds;
serving, `r2 route`, `r2 train`, `r2 eval` and `r2 collect` all call it, so train and serve see
the same kind of text. Its rules:

- the latest user turn (the last `user` message with text) is kept whole, up to the embedder's
  window (`max_chars`), and comes first: embedders that cut long inputs by tokens cut the end;
- what is left of the window goes to earlier user turns (most recent first), then to the system
  prompt (`system` and `developer` messages, in order), each within the composition's share;
  never the other way round, so a long system prompt cannot hide the question;
- assistant turns, tool results (`tool`/`function` messages) and tool calls are not routed:
  they are the models' and tools' output, not what the client asks;
- list-typed content contributes its `text`/`input_text` parts (joined by newlines); image,
  audio, file and other non-text parts are skipped (the embedders read text only);
- a conversation with no user text routes on its system text; a single user message routes on
  exactly its text (what checkpoints trained on plain prompts saw).

Input tokens price a candidate. `count_message_tokens` counts the whole message list as chat
APIs bill it (every role, tool calls, plus the per-message template overhead OpenAI documents);
texts are counted with cl100k (tiktoken, from the BPE file LiteLLM bundles, so nothing is
downloaded) or, for parity with the release, `max(1, int(words*1.3))`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import InvalidInputError

SYSTEM_ROLES = ("system", "developer")
ROUTED_ROLES = (*SYSTEM_ROLES, "user")
TEXT_PARTS = ("text", "input_text")
SEPARATOR = "\n\n"
#: OpenAI's chat template overhead: tokens per message and for priming the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
TokenCounter = Callable[[str], int]
MessageCounter = Callable[[Sequence[Mapping[str, Any]]], int]


def content_text(content: Any) -> str:
    """Text of one message `content`: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") in TEXT_PARTS:
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    raise InvalidInputError("message content must be a string or a list of parts",
                            param="messages.content")


@dataclass(frozen=True)
class Composition:
    """How much of the window context may take after the latest user turn (None: all that
    is left). Chosen by measurement: see docs/training.md, "Routing text"."""

    name: str
    history_chars: int | None
    system_chars: int | None
    #: The measured baseline: every routed turn in conversation order, head kept (what the
    #: gateway did before; a long system prompt fills the window).
    in_order: bool = False


COMPOSITIONS: dict[str, Composition] = {c.name: c for c in (
    Composition("latest", 0, 0),
    Composition("latest+history", None, 0),
    Composition("latest+history+system256", None, 256),
    Composition("latest+history+system", None, None),
    Composition("in-order", None, None, in_order=True),
)}
DEFAULT_COMPOSITION = "latest+history+system256"


def _share(limit: int | None, left: int) -> int:
    return left if limit is None else min(limit, left)


def routing_text(messages: Iterable[Mapping[str, Any]], max_chars: int = 2000,
                 composition: str | Composition = DEFAULT_COMPOSITION) -> str:
    """The text the router embeds for a conversation (rules in the module docstring)."""
    comp = composition if isinstance(composition, Composition) else COMPOSITIONS[composition]
    users: list[str] = []
    systems: list[str] = []
    ordered: list[str] = []
    for msg in messages:
        role = msg.get("role")
        if role not in ROUTED_ROLES:
            continue
        text = content_text(msg.get("content"))
        if text.strip():
            (users if role == "user" else systems).append(text)
            ordered.append(text)
    if comp.in_order:
        return truncate(SEPARATOR.join(ordered), max_chars)
    if not users:
        return truncate(SEPARATOR.join(systems), max_chars)
    pieces = [truncate(users[-1], max_chars)]
    left = max_chars - len(pieces[0])
    history = _share(comp.history_chars, left)
    for text in reversed(users[:-1]):
        if history <= len(SEPARATOR):
            break
        piece = truncate(text, history - len(SEPARATOR))
        pieces.append(piece)
        history -= len(piece) + len(SEPARATOR)
        left -= len(piece) + len(SEPARATOR)
    system = _share(comp.system_chars, left)
    if systems and system > len(SEPARATOR):
        pieces.append(truncate(SEPARATOR.join(systems), system - len(SEPARATOR)))
    return SEPARATOR.join(pieces)


def user_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """A one-question conversation as outcome data describes it (the prompt is the user turn)."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    if system_prompt:
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def count_message_tokens(messages: Iterable[Mapping[str, Any]], count: TokenCounter) -> int:
    """Input tokens of a chat request as billed: every message's role, text and tool calls,
    plus the chat template's per-message and reply-priming tokens."""
    total = REPLY_PRIMING_TOKENS
    for msg in messages:
        total += TOKENS_PER_MESSAGE
        for key in ("role", "name"):
            value = msg.get(key)
            if isinstance(value, str) and value:
                total += _count(value, count) + (TOKENS_PER_NAME if key == "name" else 0)
        content = msg.get("content")
        text = content_text(content) if isinstance(content, str | list) else ""
        if text:
            total += _count(text, count)
        calls = msg.get("tool_calls")
        if calls:
            total += _count(json.dumps(calls, ensure_ascii=False), count)
    return total


def _count(text: str, count: TokenCounter) -> int:
    return int(count(text)) if text else 0


def instruction_tokens(instruction: str | None, count: TokenCounter) -> int:
    """Input tokens an instruction adds to a request (its text and the joining newline)."""
    return _count(instruction, count) + 1 if instruction else 0


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


def message_counter(kind: str) -> MessageCounter:
    """Input tokens of a message list: the release's words*1.3 on the routed text (parity),
    else `count_message_tokens` with cl100k."""
    if kind == "words1.3":
        return lambda messages: words_token_count(routing_text(messages, 1 << 62,
                                                               "latest+history+system"))
    count = token_counter(kind)
    return lambda messages: count_message_tokens(messages, count)
