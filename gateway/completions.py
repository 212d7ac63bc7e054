"""`POST /v1/completions` (the legacy text API) as a codec over the chat pipeline.

The request is converted to a chat request (the prompt as the one user turn), so `r2-auto` is
routed, rewritten (the policy's instruction and cap on `max_tokens`) and forwarded exactly as
chat is (`chat.handle_chat`), and a named deployment is proxied the same way; the answer is
rendered back as a `text_completion` object, or `text_completion` chunks when streaming.

Fields the chat form cannot carry are refused with a 400 naming them, never dropped: `echo`,
`suffix`, `best_of` above 1, `logprobs`, and a prompt of token ids. A list of prompts is
accepted with one prompt in it: each prompt is routed on its own, so several go as several
requests.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .chat import Codec, handle_chat
from .errors import bad_request
from .protocol import check_forbidden, validate_chat_body
from .service import Service

#: Legacy fields that have a chat equivalent of the same name and meaning.
CARRIED = ("model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
           "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed",
           "metadata", "extra_body")
#: Legacy fields with no chat equivalent: refused unless absent or at their no-op value.
UNSUPPORTED = {"echo": (None, False), "suffix": (None, ""), "best_of": (None, 1),
               "logprobs": (None,)}


def prompt_text(body: dict[str, Any]) -> str:
    """The one prompt of a legacy request, or a 400 naming what is wrong with it."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise bad_request("'prompt' must not be empty", "prompt", "empty_content")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise bad_request("send one prompt per request: each prompt is routed on its own",
                          "prompt", "too_many_prompts")
    if isinstance(prompt, list) and prompt and all(
            isinstance(p, int) and not isinstance(p, bool)
            or isinstance(p, list) for p in prompt):
        raise bad_request("prompts of token ids are not supported: send the prompt as text",
                          "prompt", "unsupported_prompt")
    raise bad_request("'prompt' is required and must be a string or a list of one string",
                      "prompt", "invalid_type")


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request a legacy completion request stands for (validated as chat is)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", "model", "invalid_type")
    for key, allowed in UNSUPPORTED.items():
        if body.get(key) not in allowed:
            raise bad_request(f"'{key}' is not supported by this gateway's /v1/completions",
                              key, "unsupported_parameter")
    check_forbidden(body)
    unknown = [k for k in body if k not in CARRIED and k not in UNSUPPORTED and k != "prompt"]
    chat = {k: body[k] for k in CARRIED if k in body}
    if unknown:  # passed on to the provider untouched, as the chat path does
        chat["extra_body"] = {**(chat.get("extra_body") or {}),
                              **{k: body[k] for k in unknown}}
    chat["messages"] = [{"role": "user", "content": prompt_text(body)}]
    validate_chat_body(chat)
    return chat


def _choice(choice: dict[str, Any], delta: bool) -> dict[str, Any]:
    part = choice.get("delta" if delta else "message") or {}
    return {"text": part.get("content") or "", "index": choice.get("index", 0),
            "logprobs": None, "finish_reason": choice.get("finish_reason")}


def _render(data: dict[str, Any], delta: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": data.get("id"), "object": "text_completion", "created": data.get("created"),
        "model": data.get("model"),
        "choices": [_choice(c, delta) for c in data.get("choices") or [] if isinstance(c, dict)],
    }
    if data.get("system_fingerprint") is not None:
        out["system_fingerprint"] = data["system_fingerprint"]
    if data.get("usage") is not None:
        out["usage"] = data["usage"]
    return out


COMPLETIONS = Codec(render=lambda data: _render(data, delta=False),
                    render_chunk=lambda data: _render(data, delta=True))


def parse_completion_request(body: dict[str, Any]) -> None:
    """Validate a legacy body (the conversion raises any 400) before admission."""
    to_chat(body)


async def handle_completions(request: Request, body: dict[str, Any], svc: Service) -> Response:
    return await handle_chat(request, to_chat(body), svc, COMPLETIONS)
