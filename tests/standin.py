"""An HTTP stand-in for an OpenAI-compatible provider, served by uvicorn on 127.0.0.1.

It records exactly what it received (headers and JSON body) and can be told, per upstream
model name, to answer normally, fail with a status (and `Retry-After`), stall, answer slowly,
or break a stream after some chunks. It speaks the real wire protocol (JSON and SSE), so the
gateway's LiteLLM client cannot tell it from a provider.

`active` counts requests being worked on and `cancelled` those whose client (the gateway) went
away first: a stall watches for the disconnect, as a real provider would stop generating.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Behaviour:
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None
    break_after_chunks: int | None = None
    text: str = "Hello from the stand-in."
    finish_reason: str = "stop"
    #: Pause after the stream's headers, before its first chunk (time to first token).
    first_chunk_delay_s: float = 0.0
    #: Pause between stream chunks; `None` means `delay_s / 10`.
    chunk_delay_s: float | None = None
    #: Error message; `{authorization}` and `{key}` are replaced by the Authorization header
    #: received and the key in it, as providers that quote the rejected key do.
    message: str | None = None
    #: Answer a request that offers tools with a call to this tool, with these JSON arguments
    #: (streamed in two pieces, as providers split them).
    tool_call: tuple[str, str] | None = None


@dataclass
class StandIn:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    default: Behaviour = field(default_factory=Behaviour)
    received: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    cancelled: int = 0
    port: int = 0

    def behaviour(self, model: str) -> Behaviour:
        return self.behaviours.get(model, self.default)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.behaviours.clear()
        self.default = Behaviour()
        self.received.clear()
        self.cancelled = 0


def _completion(model: str, b: Behaviour, max_tokens: int | None) -> dict[str, Any]:
    words = b.text.split()
    if max_tokens is not None:
        words = words[:max_tokens]
    finish = "length" if max_tokens is not None and len(b.text.split()) > max_tokens \
        else b.finish_reason
    return {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": len(words),
                  "total_tokens": 11 + len(words)},
    }


TOOL_CALL_ID = "call_standin"


def _tool_completion(model: str, name: str, arguments: str) -> dict[str, Any]:
    call = {"id": TOOL_CALL_ID, "type": "function",
            "function": {"name": name, "arguments": arguments}}
    return {
        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                             "tool_calls": [call]},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


async def _tool_stream(model: str, name: str, arguments: str, body: dict[str, Any]) -> Any:
    base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    half = len(arguments) // 2
    deltas = [{"role": "assistant", "content": None, "tool_calls": [
                  {"index": 0, "id": TOOL_CALL_ID, "type": "function",
                   "function": {"name": name, "arguments": ""}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}]
    for delta in deltas:
        yield "data: " + json.dumps({**base, "choices": [
            {"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n"
    yield "data: " + json.dumps({**base, "choices": [
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + "\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
    yield "data: [DONE]\n\n"


def _anthropic_message(model: str, b: Behaviour, max_tokens: int | None) -> dict[str, Any]:
    """As Anthropic's Messages API answers (for deployments with an `anthropic/` model)."""
    done = _completion(model, b, max_tokens)
    text = done["choices"][0]["message"]["content"]
    stop = "max_tokens" if done["choices"][0]["finish_reason"] == "length" else "end_turn"
    return {"id": "msg_standin", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 11, "output_tokens": len(text.split())}}


async def _anthropic_stream(message: dict[str, Any]) -> Any:
    def event(data: dict[str, Any]) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    words = message["content"][0]["text"].split()
    yield event({"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None,
        "usage": {"input_tokens": 11, "output_tokens": 1}}})
    yield event({"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}})
    for i, word in enumerate(words):
        yield event({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": (" " if i else "") + word}})
    yield event({"type": "content_block_stop", "index": 0})
    yield event({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                    "stop_sequence": None},
                 "usage": {"output_tokens": len(words)}})
    yield event({"type": "message_stop"})


def build_app(state: StandIn) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.received.append({"headers": dict(request.headers), "body": body,
                               "path": request.url.path})
        model = str(body.get("model"))
        b = state.behaviour(model)
        state.active += 1
        try:
            if b.delay_s and await _disconnected_within(request, b.delay_s):
                state.cancelled += 1
                return Response(status_code=499)
            if b.status != 200:
                headers = {"Retry-After": b.retry_after} if b.retry_after else None
                auth = request.headers.get("authorization", "")
                message = (b.message or f"stand-in error {b.status}").replace(
                    "{authorization}", auth).replace("{key}", auth.partition(" ")[2])
                return JSONResponse({"error": {"message": message, "type": "error",
                                               "param": None, "code": None}},
                                    status_code=b.status, headers=headers)
            cap = body.get("max_tokens") or body.get("max_completion_tokens")
            if b.tool_call is not None and body.get("tools"):
                if body.get("stream"):
                    return StreamingResponse(_tool_stream(model, *b.tool_call, body),
                                             media_type="text/event-stream")
                return JSONResponse(_tool_completion(model, *b.tool_call))
            if body.get("stream"):
                return StreamingResponse(_stream(state, model, b, cap, body),
                                         media_type="text/event-stream")
            return JSONResponse(_completion(model, b, cap))
        except asyncio.CancelledError:
            state.cancelled += 1
            raise
        finally:
            state.active -= 1

    async def messages(request: Request) -> Response:
        body = await request.json()
        state.received.append({"headers": dict(request.headers), "body": body,
                               "path": request.url.path})
        model = str(body.get("model"))
        message = _anthropic_message(model, state.behaviour(model), body.get("max_tokens"))
        if body.get("stream"):
            return StreamingResponse(_anthropic_stream(message), media_type="text/event-stream")
        return JSONResponse(message)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        state.received.append({"headers": dict(request.headers), "body": body,
                               "path": request.url.path})
        b = state.behaviour(str(body.get("model")))
        if b.status != 200:
            return JSONResponse({"error": {"message": f"stand-in error {b.status}",
                                           "type": "error", "param": None, "code": None}},
                                status_code=b.status)
        return JSONResponse(_embeddings(body))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/messages", messages, methods=["POST"]),
                             Route("/v1/models", models)])


EMBED_DIM = 8


def fake_embedding(text: str, dim: int = EMBED_DIM) -> list[float]:
    """Deterministic: the same text always gets the same float32-exact vector."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dim)]


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """As OpenAI answers: one item per input, floats or base64 of little-endian float32."""
    inputs = body["input"]
    if isinstance(inputs, str) or inputs and isinstance(inputs[0], int):
        inputs = [inputs]
    dim = body.get("dimensions") or EMBED_DIM
    data = []
    for i, item in enumerate(inputs):
        vector = fake_embedding(item if isinstance(item, str) else json.dumps(item), dim)
        value: Any = vector
        if body.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(str(x).split()) for x in inputs)
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _disconnected_within(request: Request, seconds: float) -> bool:
    """Wait `seconds`, returning early (True) if the client disconnects meanwhile."""
    async def disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnect(), seconds)
    except TimeoutError:
        return False
    return True


async def _stream(state: StandIn, model: str, b: Behaviour, cap: int | None,
                  body: dict[str, Any]) -> Any:
    full = _completion(model, b, cap)
    words = full["choices"][0]["message"]["content"].split()
    base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    state.active += 1
    try:
        await asyncio.sleep(b.first_chunk_delay_s)
        yield "data: " + json.dumps({**base, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        ) + "\n\n"
        for i, word in enumerate(words):
            if b.break_after_chunks is not None and i >= b.break_after_chunks:
                raise RuntimeError("stand-in broke the stream")
            pause = b.chunk_delay_s if b.chunk_delay_s is not None else b.delay_s / 10
            await asyncio.sleep(pause)
            yield "data: " + json.dumps({**base, "choices": [
                {"index": 0, "delta": {"content": (" " if i else "") + word},
                 "finish_reason": None}]}) + "\n\n"
        yield "data: " + json.dumps({**base, "choices": [
            {"index": 0, "delta": {}, "finish_reason": full["choices"][0]["finish_reason"]}]}
        ) + "\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield "data: " + json.dumps({**base, "choices": [], "usage": full["usage"]}) + "\n\n"
        yield "data: [DONE]\n\n"
    except asyncio.CancelledError:
        state.cancelled += 1
        raise
    finally:
        state.active -= 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Runs an ASGI app with uvicorn in a daemon thread; `stop()` shuts it down."""

    def __init__(self, app: Any, port: int | None = None,
                 make_config: Any = uvicorn.Config) -> None:
        """`make_config(app, **options)` builds the uvicorn config (the gateway's own)."""
        self.port = port or free_port()
        config = make_config(app, host="127.0.0.1", port=self.port, log_level="warning",
                             lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop, for inspecting it from a test (`run_coroutine_threadsafe`)."""
        return self.server.servers[0].get_loop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_standin() -> tuple[StandIn, ServerThread]:
    state = StandIn()
    server = ServerThread(build_app(state)).start()
    state.port = server.port
    return state, server
