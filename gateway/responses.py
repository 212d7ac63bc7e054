"""`POST /v1/responses` (the OpenAI Responses API) as a codec over the chat pipeline.

Most deployments (llama.cpp, vLLM, most self-hosted servers) speak only Chat Completions, so a
Responses request is bridged: checked here, translated to a chat request by LiteLLM's own
Responses-to-Chat bridge (`LiteLLMCompletionResponsesConfig`: `instructions` become the leading
system message, `input` items messages, `function_call` / `function_call_output` items tool
calls and tool messages, function tools chat tools, `max_output_tokens` `max_tokens`, `text`
`response_format`), then routed (the routing text is read from those messages, so from `input`
and `instructions`), rewritten (the policy's instruction, its cap) and forwarded exactly as chat
is. The answer comes back as a `response` object (LiteLLM's bridge again) or as the Responses
event stream, rendered here from the chat chunks: `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta` /
`.done`, `response.function_call_arguments.delta` / `.done`, `response.content_part.done`,
`response.output_item.done`, and `response.completed` (`response.incomplete` when the answer
was cut at its cap, `response.failed` when the upstream failed mid-stream).

Nothing is stored: `store: true`, `previous_response_id`, `conversation`, `background`, stored
`prompt`s and `item_reference` items are refused with a 400 naming the field (never silently
dropped), as are tools other than function tools, which a chat deployment cannot run.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .blockstream import BlockStream
from .chat import Codec, handle_chat, named_event
from .errors import APIError, bad_request
from .protocol import (
    MAX_TOKENS_LIMIT,
    check_forbidden,
    check_int,
    check_model,
    check_objects,
    validate_translated,
)
from .service import Service

#: Fields that need server-side state this gateway does not keep: refused unless at the
#: value that asks for none.
STATEFUL: dict[str, tuple[Any, ...]] = {
    "store": (None, False), "previous_response_id": (None,), "conversation": (None,),
    "background": (None, False), "prompt": (None,)}
#: Fields with no chat equivalent: refused unless at their no-op value.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "truncation": (None, "disabled"), "max_tool_calls": (None,), "top_logprobs": (None, 0)}
#: Extras `include` may ask for that this bridge can honour (it produces no reasoning items,
#: so there is no encrypted reasoning to leave out).
INCLUDABLE = frozenset({"reasoning.encrypted_content"})
#: Responses fields the bridge reads; `stream_options` and `include` are handled here.
BRIDGED = frozenset({"model", "input", "instructions", "max_output_tokens", "tools",
                     "tool_choice", "parallel_tool_calls", "temperature", "top_p", "user",
                     "text", "reasoning", "service_tier", "safety_identifier", "metadata",
                     "stream", "stream_options", "include", "prompt_cache_key",
                     *STATEFUL, *UNSUPPORTED})
#: What the bridge may produce that the chat pipeline forwards (LiteLLM-only keys are not).
CHAT_KEYS = frozenset({"messages", "model", "tools", "tool_choice", "parallel_tool_calls",
                       "temperature", "top_p", "user", "max_tokens", "stream", "stream_options",
                       "service_tier", "safety_identifier", "response_format",
                       "reasoning_effort", "web_search_options"})
MESSAGE_ROLES = ("user", "assistant", "system", "developer")


def _check_input(value: Any) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise bad_request("'input' must not be empty", "input", "empty_content")
        return
    if not isinstance(value, list) or not value:
        raise bad_request("'input' is required: a string or a non-empty array of items",
                          "input", "invalid_type")
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request("each input item must be an object", where, "invalid_type")
        kind = item.get("type", "message")
        if kind == "item_reference":
            raise bad_request("item references need stored responses, which this gateway "
                              "does not keep: send the item itself", where,
                              "unsupported_parameter")
        if kind == "message":
            if item.get("role") not in MESSAGE_ROLES:
                raise bad_request("a message item needs a role (user, assistant, system or "
                                  "developer)", f"{where}.role")
            content = item.get("content")
            if not isinstance(content, str | list):
                raise bad_request("message content must be a string or an array of parts",
                                  f"{where}.content", "invalid_type")
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise bad_request("each content part must be an object with a 'type'",
                                      f"{where}.content[{j}]", "invalid_type")
        elif kind in ("function_call", "function_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise bad_request(f"a {kind} item needs a string 'call_id'",
                                  f"{where}.call_id", "invalid_type")
            field = "arguments" if kind == "function_call" else "output"
            if not isinstance(item.get(field), str | list):
                raise bad_request(f"a {kind} item needs '{field}'", f"{where}.{field}",
                                  "invalid_type")
            if kind == "function_call" and not isinstance(item.get("name"), str):
                raise bad_request("a function_call item needs a string 'name'",
                                  f"{where}.name", "invalid_type")


def validate_responses_body(body: dict[str, Any]) -> None:
    """A 400 naming the field for anything malformed or needing state."""
    check_model(body)
    for key, allowed in STATEFUL.items():
        if body.get(key) not in allowed:
            raise bad_request(f"'{key}' is not supported: this gateway stores no responses, "
                              "so send the whole conversation in 'input' (and store: false)",
                              key, "unsupported_parameter")
    for key, allowed in UNSUPPORTED.items():
        if body.get(key) not in allowed:
            raise bad_request(f"'{key}' is not supported by this gateway's /v1/responses",
                              key, "unsupported_parameter")
    _check_input(body.get("input"))
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise bad_request("'instructions' must be a string", "instructions", "invalid_type")
    check_int(body, "max_output_tokens", 1, MAX_TOKENS_LIMIT)
    include = body.get("include")
    if include is not None and not (isinstance(include, list)
                                    and all(isinstance(x, str) for x in include)):
        raise bad_request("'include' must be an array of strings", "include", "invalid_type")
    for value in include or ():
        if value not in INCLUDABLE:
            raise bad_request(f"'include' value '{value}' is not supported by this gateway",
                              "include", "unsupported_parameter")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad_request("'tools' must be an array", "tools", "invalid_type")
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or tool.get("type") != "function" \
                or not isinstance(tool.get("name"), str):
            raise bad_request("only function tools ({'type': 'function', 'name': ...}) are "
                              "supported: a chat deployment cannot run hosted tools",
                              f"tools[{i}]", "unsupported_tool")
    check_objects(body, ("text", "reasoning", "metadata"))
    check_forbidden(body)


@functools.cache
def _bridge() -> Any:
    """LiteLLM's Responses-to-Chat bridge, imported once, on first use (not at import: LiteLLM
    is heavy to load)."""
    from litellm.responses.litellm_completion_transformation.transformation import (
        LiteLLMCompletionResponsesConfig,
    )

    return LiteLLMCompletionResponsesConfig


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request a Responses request stands for, validated as chat is."""
    validate_responses_body(body)
    bridge = _bridge()
    options: Any = {k: v for k, v in body.items()
                    if k in BRIDGED and k not in ("model", "input")}
    try:
        bridged = bridge.transform_responses_api_request_to_chat_completion_request(
            model=body["model"], input=json.loads(json.dumps(body["input"])),
            responses_api_request=options, stream=bool(body.get("stream")))
    except APIError:
        raise
    except Exception:  # noqa: BLE001 - LiteLLM refused an input it cannot convert
        raise bad_request("the input items could not be converted for a chat deployment",
                          "input", "invalid_value") from None
    chat = {k: v for k, v in bridged.items() if k in CHAT_KEYS}
    chat["model"] = body["model"]
    if body.get("metadata") is not None:
        chat["metadata"] = body["metadata"]
    # Fields the bridge does not know go on to the provider untouched, as on the chat path.
    chat.update({k: v for k, v in body.items() if k not in BRIDGED})
    validate_translated(chat, "input")
    return chat


def parse_responses_request(body: dict[str, Any], max_items: int | None = None
                            ) -> dict[str, Any]:
    """Validate a Responses body by converting it (the conversion raises any 400) before
    admission, and return the conversion (the handler's `request.state.prepared`); an
    `input` of more than `max_items` items (`server.max_messages`) is refused before it is
    walked, as chat's `messages` are."""
    items = body.get("input")
    if max_items is not None and isinstance(items, list) and len(items) > max_items:
        raise bad_request(f"too many input items: at most {max_items} are accepted", "input",
                          "too_many_messages")
    return to_chat(body)


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), \
        int(usage.get("completion_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": int(usage.get("total_tokens") or prompt + completion)}


def _shell(body: dict[str, Any], response_id: str, model: Any) -> dict[str, Any]:
    """The `response` object's fields that echo the request."""
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "model": model, "status": "in_progress", "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": body.get("reasoning"), "store": False,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto", "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": "disabled", "usage": None,
        "user": body.get("user"),
    }


def _finish(shell: dict[str, Any], finish_reason: Any) -> None:
    if finish_reason == "length":
        shell["status"] = "incomplete"
        shell["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        shell["status"] = "incomplete"
        shell["incomplete_details"] = {"reason": "content_filter"}
    else:
        shell["status"] = "completed"


def render(data: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a `response` object: output items by LiteLLM's bridge."""
    bridge = _bridge()
    bridged = bridge.transform_chat_completion_response_to_responses_api_response(
        request_input=body["input"], responses_api_request={}, chat_completion_response=data)
    dumped = bridged.model_dump(mode="json", by_alias=True, exclude_none=True)
    out = _shell(body, f"resp_{uuid.uuid4().hex}", data.get("model"))
    out["created_at"] = data.get("created") or out["created_at"]
    out["output"] = dumped.get("output") or []
    out["usage"] = _usage(data.get("usage"))
    choices = data.get("choices") or [{}]
    _finish(out, choices[0].get("finish_reason"))
    return out


class ResponsesStream(BlockStream):
    """Chat chunks as the Responses event stream: a message item for the text, a
    function_call item per tool call, each opened before its deltas and closed (`.done`)
    before the next opens; the final `response` carries every item and the usage."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body
        self.shell = _shell(body, f"resp_{uuid.uuid4().hex}", None)
        self.seq = 0
        self.items: list[dict[str, Any]] = []

    def _event(self, kind: str, **fields: Any) -> str:
        event = named_event({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return event

    def _opening(self, model: Any) -> list[str]:
        self.shell["model"] = model
        return [self._event("response.created", response=self.shell),
                self._event("response.in_progress", response=self.shell)]

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        i = len(self.items) - 1
        item = self.items[i]
        item["status"] = "completed"
        if item["type"] == "message":
            part = item["content"][0]
            events = [self._event("response.output_text.done", item_id=item["id"],
                                  output_index=i, content_index=0, text=part["text"],
                                  logprobs=[]),
                      self._event("response.content_part.done", item_id=item["id"],
                                  output_index=i, content_index=0, part=part)]
        else:
            events = [self._event("response.function_call_arguments.done", item_id=item["id"],
                                  output_index=i, name=item["name"],
                                  arguments=item["arguments"])]
        return [*events, self._event("response.output_item.done", output_index=i, item=item)]

    def _add(self, item: dict[str, Any]) -> list[str]:
        self.items.append(item)
        i = len(self.items) - 1
        added = {**item, "content": []} if item["type"] == "message" else item
        events = [self._event("response.output_item.added", output_index=i, item=added)]
        if item["type"] == "message":
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=i, content_index=0,
                                      part=item["content"][0]))
        return events

    def _open_text(self) -> list[str]:
        return self._add({"id": f"msg_{uuid.uuid4().hex}", "type": "message",
                          "status": "in_progress", "role": "assistant",
                          "content": [{"type": "output_text", "text": "", "annotations": []}]})

    def _text(self, text: str) -> list[str]:
        item = self.items[-1]
        item["content"][0]["text"] += text
        return [self._event("response.output_text.delta", item_id=item["id"],
                            output_index=len(self.items) - 1, content_index=0,
                            delta=text, logprobs=[])]

    def _open_call(self, call_id: str | None, name: str) -> list[str]:
        return self._add({"id": f"fc_{uuid.uuid4().hex}", "type": "function_call",
                          "status": "in_progress",
                          "call_id": call_id or f"call_{uuid.uuid4().hex[:24]}",
                          "name": name, "arguments": ""})

    def _arguments(self, arguments: str) -> list[str]:
        item = self.items[-1]
        item["arguments"] += arguments
        return [self._event("response.function_call_arguments.delta", item_id=item["id"],
                            output_index=len(self.items) - 1, delta=arguments)]

    def error(self, err: APIError) -> list[str]:
        self.failed = True
        events = self._start(None)
        self.shell.update(status="failed", output=self.items,
                          error={"code": "server_error" if err.status >= 500
                                 else err.code or "invalid_request",
                                 "message": err.message})
        return [*events, self._event("response.failed", response=self.shell)]

    def end(self) -> list[str]:
        if self.failed:
            return []
        events = [*self._start(None), *self._close()]
        _finish(self.shell, self.finish_reason)
        self.shell.update(output=self.items, usage=_usage(self.usage))
        kind = "response.completed" if self.shell["status"] == "completed" \
            else "response.incomplete"
        return [*events, self._event(kind, response=self.shell)]


async def handle_responses(request: Request, body: dict[str, Any], svc: Service) -> Response:
    chat = request.state.prepared  # `parse_responses_request`'s conversion
    codec = Codec(render=lambda data: render(data, body),
                  streamer=lambda: ResponsesStream(body))
    return await handle_chat(request, chat, svc, codec)
