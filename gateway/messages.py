"""`POST /v1/messages` (the Anthropic Messages API) as a codec over the chat pipeline.

The request is checked here (the shapes LiteLLM's adapter relies on; it fails with a 5xx
otherwise), translated to a chat request by LiteLLM's own Anthropic adapter
(`LiteLLMAnthropicMessagesAdapter.translate_anthropic_to_openai`: `system` becomes the leading
system message, `tool_use`/`tool_result` blocks tool calls and tool messages, `stop_sequences`
`stop`, `metadata.user_id` `user`), and then routed, rewritten (the policy's instruction, its
cap on `max_tokens`) and forwarded exactly as chat is, to whichever deployment is chosen:
LiteLLM speaks that deployment's own protocol (OpenAI-compatible or Anthropic).

The answer comes back as a Messages object (LiteLLM's `translate_openai_response_to_anthropic`)
or as Anthropic's event stream (`message_start`, `content_block_start` / `_delta` / `_stop`,
`message_delta`, `message_stop`; `error` if the upstream fails mid-stream), rendered here from
the pipeline's chat chunks. Errors on this endpoint use Anthropic's shape,
`{"type": "error", "error": {"type": ..., "message": ...}}`, with the same status the OpenAI
envelope would have.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .blockstream import BlockStream
from .chat import Codec, handle_chat, named_event
from .errors import APIError, bad_request
from .protocol import (
    MAX_TOKENS_LIMIT,
    check_forbidden,
    check_int,
    check_model,
    check_number,
    check_objects,
    validate_translated,
)
from .service import Service

#: Anthropic's error `type` by HTTP status (anything else: 4xx invalid request, 5xx api_error).
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 504: "timeout_error"}
#: Chat finish reasons as Anthropic stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
#: Fields LiteLLM's adapter would treat as its own settings, not the provider's.
REFUSED = ("litellm_metadata",)
BLOCK_NEEDS = {"text": ("text", str), "tool_use": ("name", str),
               "tool_result": ("tool_use_id", str), "image": ("source", dict),
               "document": ("source", dict), "thinking": ("thinking", str)}


def anthropic_error_body(err: APIError) -> dict[str, Any]:
    """The error in Anthropic's shape (the field at fault, if any, leads the message)."""
    kind = ERROR_TYPES.get(err.status) or ("api_error" if err.status >= 500
                                           else "invalid_request_error")
    message = f"{err.param}: {err.message}" if err.param else err.message
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_error(err: APIError) -> Response:
    """The error response in Anthropic's shape, with the status the OpenAI envelope has."""
    return JSONResponse(anthropic_error_body(err), status_code=err.status,
                        headers=err.headers)


def _check_content(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request("content must be a string or an array of content blocks", where,
                          "invalid_type")
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str) or not kind:
            raise bad_request("each content block must be an object with a 'type'",
                              f"{where}.{j}", "invalid_type")
        need = BLOCK_NEEDS.get(kind)
        if need is not None and not isinstance(block.get(need[0]), need[1]):
            raise bad_request(f"a {kind} block needs '{need[0]}'", f"{where}.{j}.{need[0]}",
                              "invalid_type")
        if kind == "tool_use" and not isinstance(block.get("input", {}), dict):
            raise bad_request("a tool_use block's 'input' must be an object",
                              f"{where}.{j}.input", "invalid_type")


def validate_messages_body(body: dict[str, Any]) -> None:
    """A 400 naming the field (Anthropic's dotted path) for anything malformed."""
    check_model(body)
    if body.get("max_tokens") is None:
        raise bad_request("'max_tokens' is required", "max_tokens", "invalid_type")
    check_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", "messages", "invalid_type")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise bad_request("each message must be an object with role 'user' or "
                              "'assistant'", f"messages.{i}.role")
        _check_content(msg.get("content"), f"messages.{i}.content")
    system = body.get("system")
    if system is not None:
        _check_content(system, "system")
    for key in ("tools", "stop_sequences"):
        value = body.get(key)
        if value is not None and not isinstance(value, list):
            raise bad_request(f"'{key}' must be an array", key, "invalid_type")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise bad_request("each tool must be an object with a 'name'", f"tools.{i}",
                              "invalid_type")
    for i, stop in enumerate(body.get("stop_sequences") or []):
        if not isinstance(stop, str):
            raise bad_request("stop sequences must be strings", f"stop_sequences.{i}",
                              "invalid_type")
    check_objects(body, ("metadata", "tool_choice", "thinking"))
    check_number(body, "temperature", 0, 1)
    for key in REFUSED:
        if key in body:
            raise bad_request(f"field '{key}' is not allowed", key, "forbidden_field")
    check_forbidden(body)


@functools.cache
def _adapter() -> Any:
    """LiteLLM's Anthropic adapter (stateless), imported and built once, on first use (not at
    import: LiteLLM is heavy to load)."""
    from litellm.llms.anthropic.messages.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    return LiteLLMAnthropicMessagesAdapter()


def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The chat request a Messages request stands for (validated as chat is), and LiteLLM's
    map of shortened tool names back to the client's."""
    validate_messages_body(body)
    translated, names = _adapter().translate_anthropic_to_openai(
        json.loads(json.dumps(body)))  # the adapter may change what it is given
    chat: dict[str, Any] = {k: v for k, v in dict(translated).items() if v is not None}
    chat["messages"] = [{k: v for k, v in m.items() if v is not None or k == "content"}
                        for m in chat["messages"]]
    if chat.get("stream"):  # the usage event carries message_delta's output_tokens
        chat["stream_options"] = {"include_usage": True}
    validate_translated(chat, "messages")
    return chat, dict(names)


def parse_messages_request(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Validate a Messages body before admission by converting it (the conversion raises any
    400); the handler gets the conversion as `request.state.prepared`."""
    return to_chat(body)


def render(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A chat completion as a Messages object, by LiteLLM's adapter."""
    from litellm import ModelResponse

    message = _adapter().translate_openai_response_to_anthropic(ModelResponse(**data), names)
    out: dict[str, Any] = json.loads(json.dumps(dict(message), default=str))
    out["model"] = data.get("model")
    return out


class MessagesStream(BlockStream):
    """Chat chunks as Anthropic's event stream: one content block per run of text and one
    per tool call, closed before the next opens; the stop reason and usage in
    `message_delta` (the usage event comes last in a chat stream)."""

    def __init__(self, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names
        self.index = -1
        self.usage = {}

    def _opening(self, model: Any) -> list[str]:
        message = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
                   "content": [], "model": model, "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return [named_event({"type": "message_start", "message": message})]

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [named_event({"type": "content_block_stop", "index": self.index})]

    def _block(self, block: dict[str, Any]) -> list[str]:
        self.index += 1
        return [named_event({"type": "content_block_start", "index": self.index,
                             "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> list[str]:
        return [named_event({"type": "content_block_delta", "index": self.index,
                             "delta": delta})]

    def _open_text(self) -> list[str]:
        return self._block({"type": "text", "text": ""})

    def _text(self, text: str) -> list[str]:
        return self._delta({"type": "text_delta", "text": text})

    def _open_call(self, call_id: str | None, name: str) -> list[str]:
        call_id = call_id or f"toolu_{uuid.uuid4().hex[:24]}"
        return self._block({"type": "tool_use", "id": call_id,
                            "name": self.names.get(name, name), "input": {}})

    def _arguments(self, arguments: str) -> list[str]:
        return self._delta({"type": "input_json_delta", "partial_json": arguments})

    def error(self, err: APIError) -> list[str]:
        self.failed = True
        return [named_event(anthropic_error_body(err))]

    def end(self) -> list[str]:
        if self.failed:
            return []
        usage = {"output_tokens": int(self.usage.get("completion_tokens") or 0)}
        if self.usage.get("prompt_tokens") is not None:
            usage["input_tokens"] = int(self.usage["prompt_tokens"])
        return [*self._start(None), *self._close(),
                named_event({"type": "message_delta", "delta": {
                    "stop_reason": STOP_REASONS.get(self.finish_reason, "end_turn"),
                    "stop_sequence": None}, "usage": usage}),
                named_event({"type": "message_stop"})]


async def handle_messages(request: Request, body: dict[str, Any], svc: Service) -> Response:
    chat, names = request.state.prepared  # `parse_messages_request`'s conversion
    codec = Codec(render=lambda data: render(data, names),
                  streamer=lambda: MessagesStream(names))
    return await handle_chat(request, chat, svc, codec)
