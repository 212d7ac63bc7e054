"""A misbehaving OpenAI-compatible upstream, scripted per request.

`tests/standin.py` answers like a healthy provider (or fails cleanly); this one sends what a
broken or hostile provider sends: usage counts that are negative, huge or not numbers, a JSON
body in reply to a streaming request, redirects to another host, raw SSE lines. Each request
is recorded; `answer` (set per test) builds the raw response from the request body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

Answer = Callable[[dict[str, Any]], Response]


def completion(model: str, usage: Any = None, content: str = "Hi there.",
               finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-rogue", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": usage if usage is not None else {"prompt_tokens": 5,
                                                      "completion_tokens": 3,
                                                      "total_tokens": 8}}


def json_answer(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def sse_answer(events: list[Any]) -> Response:
    """Each event is a dict (sent as JSON) or a raw string (sent as is after `data: `)."""
    async def body() -> Any:
        for event in events:
            yield "data: " + (event if isinstance(event, str) else json.dumps(event)) + "\n\n"
    return StreamingResponse(body(), media_type="text/event-stream")


def stream_events(model: str, words: list[str], finish: str = "stop",
                  usage: dict[str, Any] | None = None) -> list[Any]:
    base = {"id": "chatcmpl-rogue", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    events: list[Any] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                      "content": ""},
                                               "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w},
                                     "finish_reason": None}]} for i, w in enumerate(words)]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        events.append({**base, "choices": [], "usage": usage})
    events.append("[DONE]")
    return events


def normal(body: dict[str, Any]) -> Response:
    model = str(body.get("model"))
    if body.get("stream"):
        return sse_answer(stream_events(model, ["Hi", "there."], usage={
            "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}))
    return json_answer(completion(model))


@dataclass
class Rogue:
    answer: Answer = normal
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def models(self) -> list[str]:
        return [str(r["body"].get("model")) for r in self.received]


def build_app(state: Rogue) -> Starlette:
    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        state.received.append({"headers": dict(request.headers), "body": body})
        return state.answer(body)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def start_rogue() -> tuple[Rogue, ServerThread]:
    state = Rogue()
    server = ServerThread(build_app(state)).start()
    state.port = server.port
    return state, server
