"""`POST /v1/embeddings`: passed through to the deployments marked `kind: embedding`.

Not routed: the client names an embedding deployment, and the request goes through LiteLLM's
`aembedding` on the same Router as chat, behind the same auth, body limits, admission,
metrics, request id and log line, and the one error table (`errors.py`). A chat deployment (or
`r2-auto`) named here is a 400 that says so; an unknown name is a 404.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .chat import R2_AUTO, Outcome, until_disconnect
from .errors import APIError, bad_request, to_api_error
from .protocol import check_forbidden, check_model, not_found_model
from .requestlog import new_request_id
from .service import Service
from .transport import Attempt

#: Inputs in one request, and tokens in one token-id input (OpenAI's own limits).
MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")


def validate_embedding_body(body: dict[str, Any]) -> None:
    """Raise a 400 naming the field for anything malformed."""
    check_model(body)
    _check_input(body.get("input"))
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODINGS:
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise bad_request("'dimensions' must be a positive integer", "dimensions",
                          "invalid_type")
    if "user" in body and not isinstance(body["user"], str | None):
        raise bad_request("'user' must be a string", "user", "invalid_type")
    check_forbidden(body)


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _check_input(value: Any) -> None:
    """A string, a list of strings, a list of token ids, or a list of such lists; none empty."""
    where = "input"
    if isinstance(value, str):
        if not value:
            raise bad_request("'input' must not be empty", where, "empty_content")
        return
    if _is_tokens(value):
        return
    if not isinstance(value, list) or not value:
        raise bad_request("'input' must be a string or a non-empty array of strings or token "
                          "arrays", where, "invalid_type")
    if len(value) > MAX_INPUTS:
        raise bad_request(f"'input' has more than {MAX_INPUTS} items", where, "too_many_inputs")
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise bad_request("inputs must not be empty strings", f"input[{i}]",
                                  "empty_content")
        elif not _is_tokens(item):
            raise bad_request("each input must be a non-empty string or array of token ids",
                              f"input[{i}]", "invalid_type")


def _deployment(svc: Service, model: str) -> str:
    dep = svc.deployments.get(model)
    if model == R2_AUTO or dep is not None and dep.kind != "embedding":
        names = [d.name for d in svc.deployments.values() if d.kind == "embedding"]
        hint = f" ({', '.join(names)})" if names else " (none is configured)"
        raise bad_request(f"'{model}' is a chat model: /v1/embeddings serves the deployments "
                          f"marked 'kind: embedding'{hint}", "model", "wrong_model_kind")
    if dep is None:
        raise not_found_model()
    return model


def _shape(result: Any, name: str) -> dict[str, Any]:
    """OpenAI's embedding list: LiteLLM's own fields removed, the deployment's name as model."""
    if isinstance(result, dict):
        data = result
    else:
        dump = getattr(result, "model_dump", None)
        data = dump() if dump else json.loads(result.json())
    items = [{"object": "embedding", "index": item.get("index", i),
              "embedding": item.get("embedding")}
             for i, item in enumerate(data.get("data") or []) if isinstance(item, dict)]
    usage = data.get("usage") or {}
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return {"object": "list", "data": items, "model": name,
            "usage": {"prompt_tokens": prompt or 0, "total_tokens": total or prompt or 0}}


async def handle_embeddings(request: Request, body: dict[str, Any], svc: Service) -> Response:
    request_id = getattr(request.state, "request_id", None) or new_request_id()
    name = _deployment(svc, body["model"])
    outcome = Outcome(request_id, name)
    request.state.outcome = outcome  # for the request's log line
    attempt = Attempt()
    start = time.perf_counter()
    try:
        result = await until_disconnect(request, svc.upstream.embed(
            body, svc.settings.server.request_timeout_s, attempt))
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped through the one error table
        err = to_api_error(exc, svc.secrets)
        if attempt.sent:  # only what reached the deployment counts against it
            svc.metrics.upstream_errors.labels(name, str(err.status)).inc()
        raise err from None
    finally:
        svc.metrics.upstream_seconds.labels(name).observe(time.perf_counter() - start)
    return JSONResponse(_shape(result, name), headers=outcome.response_headers())
