"""`POST /v1/feedback {"request_id", "score": 0..1, "comment"?}`: a score for a logged request.

Same authentication and error envelope as every endpoint. A score outside [0, 1] (or not a
number) is a 400 naming the field; an id the log does not hold is a 404; a store that cannot
take the feedback right now is a 503 with `Retry-After`.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import APIError, bad_request

MAX_COMMENT = 4000
MAX_ID = 128


def validate_feedback(body: dict[str, Any]) -> None:
    rid = body.get("request_id")
    if not isinstance(rid, str) or not rid.strip() or len(rid) > MAX_ID:
        raise bad_request(f"'request_id' is required: the x-request-id of a routed request "
                          f"(a string of at most {MAX_ID} characters)", "request_id",
                          "invalid_type")
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) \
            or not math.isfinite(score) or not 0 <= score <= 1:
        raise bad_request("'score' is required and must be a number in [0, 1]", "score",
                          "invalid_value")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise bad_request(f"'comment' must be a string of at most {MAX_COMMENT} characters",
                          "comment", "invalid_value")
    unknown = sorted(set(body) - {"request_id", "score", "comment"})
    if unknown:
        raise bad_request(f"unknown field '{unknown[0][:40]}'", unknown[0][:40],
                          "unknown_parameter")


async def handle_feedback(request: Request, body: dict[str, Any], svc: Any) -> Response:
    log = getattr(svc, "decision_log", None)
    if log is None:
        raise APIError(404, "the decision log is off: feedback needs `log:` in the gateway "
                       "config", "invalid_request_error", None, "decision_log_off")
    rid, score = body["request_id"], float(body["score"])
    try:
        found = await log.feedback(rid, score, body.get("comment"))
    except Exception:  # noqa: BLE001 - full queue, store down, timeout
        raise APIError(503, "the decision log cannot store feedback right now; retry shortly",
                       "service_unavailable", None, "decision_log_unavailable",
                       {"Retry-After": "1"}) from None
    if not found:
        raise APIError(404, "no logged request has this request_id", "invalid_request_error",
                       "request_id", "request_not_found")
    return JSONResponse({"object": "feedback", "request_id": rid, "score": score})
