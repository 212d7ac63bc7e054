"""Fault-injection helpers for the reliability tests: a sentinel port, embedders that record,
fail or stall, raw HTTP requests a client can abandon, and probes of a running gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from helpers import HASH_DIM

from router_core import EmbedderUnavailableError, HashEmbedder

Vectors = npt.NDArray[np.float32]


class Sentinel:
    """A listening port nobody should ever connect to; `connected()` reports if one did.

    The kernel completes the TCP handshake into the backlog without `accept`, so a connection
    attempt is seen even though the sentinel never answers.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def connected(self, wait_s: float = 0.05) -> bool:
        self.sock.settimeout(wait_s)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


class RecordingEmbedder(HashEmbedder):
    """The hash embedder, remembering the length of every text it was given."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM, max_chars=8192)
        self.lengths: list[int] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.lengths.extend(len(t) for t in texts)
        return super().embed(texts)


class FailingEmbedder(HashEmbedder):
    """An embedder whose backend cannot be reached."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise EmbedderUnavailableError("embedder at http://embedder.invalid unreachable")


class StallingEmbedder(HashEmbedder):
    """An embedder that hangs until `release()` (so the test never leaves a stuck thread)."""

    def __init__(self) -> None:
        super().__init__(dim=HASH_DIM)
        self.gate = threading.Event()

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.gate.wait(60)
        return super().embed(texts)

    def release(self) -> None:
        self.gate.set()


def chat_request(body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1",
             "Content-Type: application/json", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def open_request(port: int, raw: bytes) -> socket.socket:
    """Send a raw HTTP request and return the socket, so the caller can walk away from it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(raw)
    return sock


def read_until(sock: socket.socket, marker: bytes, timeout_s: float = 5.0) -> bytes:
    """Bytes received until `marker` shows up (e.g. the first SSE event after the headers)."""
    sock.settimeout(timeout_s)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_response(sock: socket.socket, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Status and raw bytes of one response (to its Content-Length or chunked end)."""
    sock.settimeout(timeout_s)
    data = b""
    try:
        while not _complete(data) and (chunk := sock.recv(65536)):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return rest.endswith(b"0\r\n\r\n")


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def loop_tasks(loop: asyncio.AbstractEventLoop) -> int:
    """How many asyncio tasks are alive on a server's loop (counted on that loop's thread)."""
    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), loop).result(timeout=5)


def open_fds() -> int:
    """Open file descriptors of this process (sockets included); Linux only."""
    return len(os.listdir("/proc/self/fd"))
