"""`POST /v1/completions` (the legacy text API) as a codec over the chat pipeline.

The request is converted to a chat request (the prompt as the one user turn), so `r2-auto` is
routed, rewritten (the policy's instruction and cap on `max_tokens`) and forwarded exactly as
chat is (`chat.handle_chat`), and a named deployment is proxied the same way; the answer is
rendered back as a `text_completion` object, or `text_completion` chunks when streaming.

Fields the chat form cannot carry are refused with a 400 naming them, never dropped: `echo`,
`suffix`, `best_of` above 1, `logprobs`, and a prompt of token ids. A list of prompts is
answered as OpenAI does (choice `index` = prompt * n + answer), each prompt routed on its own,
one after the other; the `x-r2-*` headers then list one value per prompt, comma-separated. A
stream takes one prompt.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .chat import Codec, handle_chat
from .errors import bad_request
from .protocol import check_forbidden, check_model, validate_chat_body
from .service import Service

#: Legacy fields that have a chat equivalent of the same name and meaning.
CARRIED = ("model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
           "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed",
           "metadata", "extra_body")
#: Legacy fields with no chat equivalent: refused unless absent or at their no-op value.
UNSUPPORTED = {"echo": (None, False), "suffix": (None, ""), "best_of": (None, 1),
               "logprobs": (None,)}


#: Prompts in one request (each is a routed upstream call, made one after the other).
MAX_PROMPTS = 16


def prompts(body: dict[str, Any]) -> list[str]:
    """The prompts of a legacy request, or a 400 naming what is wrong with them."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        for i, text in enumerate(prompt):
            if not text.strip():
                where = "prompt" if isinstance(body["prompt"], str) else f"prompt[{i}]"
                raise bad_request("a prompt must not be empty", where, "empty_content")
        if len(prompt) > MAX_PROMPTS:
            raise bad_request(f"at most {MAX_PROMPTS} prompts per request", "prompt",
                              "too_many_prompts")
        if len(prompt) > 1 and body.get("stream"):
            raise bad_request("a stream takes one prompt", "prompt", "too_many_prompts")
        return prompt
    if isinstance(prompt, list) and prompt and all(
            isinstance(p, int) and not isinstance(p, bool)
            or isinstance(p, list) for p in prompt):
        raise bad_request("prompts of token ids are not supported: send the prompt as text",
                          "prompt", "unsupported_prompt")
    raise bad_request("'prompt' is required and must be a string or a non-empty list of "
                      "strings", "prompt", "invalid_type")


def to_chat(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat requests (one per prompt) a legacy request stands for, validated as chat is."""
    check_model(body)
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
    out = []
    for text in prompts(body):
        chat["messages"] = [{"role": "user", "content": text}]
        validate_chat_body(chat)
        out.append(dict(chat))
    return out


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


def parse_completion_request(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a legacy body before admission by converting it (the conversion raises any
    400); the handler gets the conversion as `request.state.prepared`."""
    return to_chat(body)


async def handle_completions(request: Request, body: dict[str, Any], svc: Service) -> Response:
    bodies: list[dict[str, Any]] = request.state.prepared  # the validator's conversion
    if len(bodies) == 1:
        return await handle_chat(request, bodies[0], svc, COMPLETIONS)
    answers = [await handle_chat(request, b, svc, COMPLETIONS) for b in bodies]
    return _merge(answers, bodies[0].get("n") or 1)


def _merge(answers: list[Response], n: int) -> Response:
    """One `text_completion` for several prompts: choices renumbered, usage summed, each
    `x-r2-*` header one value per prompt."""
    parts = [json.loads(bytes(a.body)) for a in answers]
    merged = {**parts[0], "choices": []}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for i, part in enumerate(parts):
        for choice in part.get("choices") or []:
            merged["choices"].append({**choice, "index": i * n + int(choice.get("index") or 0)})
        for key in usage:
            usage[key] += int((part.get("usage") or {}).get(key) or 0)
    merged["usage"] = usage
    if len({p.get("model") for p in parts}) > 1:  # routed apart: each is in `x-r2-model`
        merged["model"] = "r2-auto"
    headers = {k: ", ".join(a.headers.get(k, "-") for a in answers)
               for k in answers[0].headers if k.startswith("x-r2-")}
    headers["x-request-id"] = answers[0].headers["x-request-id"]
    return JSONResponse(merged, headers=headers)
