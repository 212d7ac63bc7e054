"""Hostile peers for the transport tests: raw-socket upstreams and clients that misbehave the way
real ones do, with no framework in between to soften it.

`RawUpstream` is an OpenAI-compatible provider on a plain TCP socket, one thread per connection,
that reads the request and then answers in the chosen way: a stream written as fast as the
socket takes it (hundreds of thousands of small chunks), a stream that never ends, or a JSON
body far larger than anything sane. It records when each connection was closed by the gateway,
so a test can measure how long the gateway kept consuming after its client left.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 0,
         "model": "up", "choices": [{"index": 0, "delta": {"content": "x"},
                                      "finish_reason": None}]}
SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def sse_events(n: int) -> bytes:
    """`n` small SSE chunk events (one token each)."""
    first = {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": None}]}
    event = b"data: " + json.dumps(CHUNK, separators=(",", ":")).encode() + b"\n\n"
    return b"data: " + json.dumps(first).encode() + b"\n\n" + event * (n - 1)


@dataclass
class RawUpstream:
    """`mode(sock)` writes the answer; it returns when done or when the gateway hung up."""

    mode: Callable[[socket.socket], None]
    #: Connections that are open right now, and when each closed one was seen closed.
    active: int = 0
    closed_at: list[float] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.active += 1
        try:
            if _read_request(conn):
                with self._lock:
                    self.requests += 1
                self.mode(conn)
        except OSError:
            pass  # the gateway hung up: that is what is being measured
        finally:
            conn.close()
            with self._lock:
                self.active -= 1
                self.closed_at.append(time.monotonic())

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def _read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def fast_stream(chunks: int) -> Callable[[socket.socket], None]:
    """A stream of `chunks` one-token events, written as fast as the socket accepts them."""
    block = _chunked(sse_events(1000))

    def mode(conn: socket.socket) -> None:
        conn.sendall(SSE_HEAD)
        for _ in range(chunks // 1000):
            conn.sendall(block)
        conn.sendall(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    return mode


def paced_stream(interval_s: float, chunks: int) -> Callable[[socket.socket], None]:
    """A stream of `chunks` one-token events, one every `interval_s`."""
    event = _chunked(sse_events(1))

    def mode(conn: socket.socket) -> None:
        conn.sendall(SSE_HEAD)
        for _ in range(chunks):
            conn.sendall(event)
            time.sleep(interval_s)
        conn.sendall(_chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    return mode


def endless_stream(interval_s: float) -> Callable[[socket.socket], None]:
    """A stream that never ends: one token every `interval_s`, well inside any gap timeout."""
    event = _chunked(sse_events(1))

    def mode(conn: socket.socket) -> None:
        conn.sendall(SSE_HEAD)
        while True:
            conn.sendall(event)
            time.sleep(interval_s)

    return mode


def huge_json(size: int, declare_length: bool = True) -> Callable[[socket.socket], None]:
    """A 200 JSON answer of `size` bytes (a completion whose content is all padding), sent as
    fast as the socket takes it, with or without a Content-Length."""
    prefix = (b'{"id":"chatcmpl-raw","object":"chat.completion","created":0,"model":"up",'
              b'"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
              b'"content":"')
    suffix = b'"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    pad = b"x" * 65536

    def mode(conn: socket.socket) -> None:
        padding = size - len(prefix) - len(suffix)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        head += b"content-length: %d\r\n\r\n" % size if declare_length \
            else b"transfer-encoding: chunked\r\n\r\n"
        wrap = (lambda b: b) if declare_length else _chunked
        conn.sendall(head + wrap(prefix))
        while padding > 0:
            piece = pad[:padding]
            conn.sendall(wrap(piece))
            padding -= len(piece)
        conn.sendall(wrap(suffix) + (b"" if declare_length else b"0\r\n\r\n"))

    return mode


def trickled_json(interval_s: float) -> Callable[[socket.socket], None]:
    """A 200 JSON answer whose body arrives a byte every `interval_s`, forever: each read is
    quick, so only a deadline on the whole body can end it."""
    def mode(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000000\r\n\r\n{")
        while True:
            time.sleep(interval_s)
            conn.sendall(b" ")

    return mode
