"""Per-API-key request rate limits (`server.rate_limits`), counted in the shared store.

A fixed window per API key (the bearer token, else `x-api-key`; hashed; clients without one
share one bucket): the window's first request creates its counter with the window's expiry, so
every replica counts into the same number (one round trip). Over the limit: 429 in the OpenAI
envelope with `Retry-After`, the seconds until the window ends. While Redis is unreachable each
process counts alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from ..apikeys import presented_key
from ..errors import APIError
from .settings import RateLimitSettings
from .store import Store


def bucket(headers: Mapping[str, str]) -> str:
    token = presented_key(headers)
    if not token:
        return "rate:anonymous"
    return "rate:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    async def check(self, headers: Mapping[str, str]) -> None:
        """Count this request; raise the 429 when its key is over the limit."""
        count, left_s = await self.store.incr_window(bucket(headers), self.settings.window_s)
        if count > self.settings.requests:
            retry = max(1, math.ceil(left_s))
            raise APIError(429, f"rate limit reached: {self.settings.requests} requests per "
                           f"{self.settings.window_s:g} s for this API key; retry in {retry} s",
                           "rate_limit_error", None, "rate_limit_exceeded",
                           {"Retry-After": str(retry)})
