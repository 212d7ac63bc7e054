"""The HTTP server under the app: uvicorn's httptools protocol with bounds on the request head.

httptools accepts a header of any size and any number of headers, and uvicorn waits forever
for a request head that never completes (it times out only idle keep-alive connections). One
client could hold a core with an endless header, or hold sockets (file descriptors) by sending
half a request line. `guarded_protocol` adds, per connection:

- a byte limit on the request head (request line and headers, `server.max_header_bytes`) and a
  limit on the number of header lines (`server.max_headers`): 431, connection closed;
- a deadline from a request's first byte (or a new connection) to its complete head
  (`server.header_timeout_s`): 408, connection closed.

Refusals carry an `x-request-id` and leave a log line, like every other response. The number
of open connections is capped by uvicorn's `limit_concurrency` (`server.max_connections`: 503
beyond it), which must sit below the process's descriptor limit (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import ServerSettings

log = logging.getLogger("r2.gateway")

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int
    max_headers: int
    timeout_s: float

    @classmethod
    def from_settings(cls, server: ServerSettings) -> HeadLimits:
        return cls(server.max_header_bytes, server.max_headers, server.header_timeout_s)


class _Refused(Exception):
    """Stops the parser once a refusal has been sent."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = HeadLimits(32 * 1024, 100, 10.0)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._head_open = False
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
            self._refuse(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError:
            if not self._refused:
                self._refuse(400, "invalid HTTP request")
            return
        if self._head_open:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_bytes:
                self._refuse(431, "the request head is too large")

    # Parser callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        self._header_count = 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, "the request has too many headers")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_head_timer()
        super().on_headers_complete()

    # Refusals ---------------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._head_open:
            self._refuse(408, "the request head was not received in time")
        elif self.cycle is None:  # connected and never sent a byte
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` in the OpenAI envelope, close the connection, log one line."""
        self._refused = True
        self._disarm_head_timer()
        request_id = f"r2-{uuid.uuid4().hex[:16]}"
        code = {408: "request_timeout", 431: "request_header_fields_too_large"}.get(
            status, "invalid_request")
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                     "param": None, "code": code}}).encode()
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Bad Request"))
        head += (b"content-type: application/json\r\ncontent-length: %d\r\n"
                 b"connection: close\r\nx-request-id: %s\r\n\r\n"
                 % (len(body), request_id.encode()))
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()
        log.info("request id=%s status=%d error=%s", request_id, status, code)


#: Descriptors the process needs besides client connections: upstream connections (one per
#: admitted request at most), the model files, logs, the embedder's sockets.
FD_HEADROOM = 256


def raise_fd_limit(server: ServerSettings) -> int:
    """Raise the soft descriptor limit to the hard one (as Go's runtime does) and warn when
    `max_connections` plus upstream connections would not fit under it; returns the limit."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    needed = server.max_connections + server.max_concurrency + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("the file descriptor limit (%d) is below server.max_connections + "
                    "server.max_concurrency + %d = %d: raise it (ulimit -n, the container's "
                    "nofile ulimit) or lower max_connections", soft, FD_HEADROOM, needed)
    return int(soft)


def guarded_protocol(limits: HeadLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` option, bound to these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def uvicorn_config(app: Any, server: ServerSettings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway: `options` are uvicorn's own (host, port, ...)."""
    return uvicorn.Config(
        app, http=guarded_protocol(HeadLimits.from_settings(server)),
        limit_concurrency=server.max_connections, **options)
