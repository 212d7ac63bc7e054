"""Configuration of shared state, sticky sessions and rate limits (validated with the rest).

`state: {redis_url: redis://redis:6379/0}` shares cooldowns, spend pacing, sessions and rate
limits between worker processes and replicas; without it all state lives in the process.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSettings(_Strict):
    """Where replicas share their state."""

    #: `redis://[:password@]host:port/db` or `rediss://...`; None keeps state in the process.
    redis_url: str | None = None
    #: Prefix of every key, so that several gateways can share one Redis.
    key_prefix: str = Field(default="r2:", min_length=1, max_length=64)
    #: Bound on one Redis command (connect, send and answer): a request never waits longer
    #: for Redis, and falls back to in-process state when it would have to.
    timeout_s: float = Field(default=0.1, gt=0, le=5)
    #: How often a replica reads the shared cooldowns and pushes its pacing steps.
    sync_interval_s: float = Field(default=0.25, gt=0, le=10)
    #: How often an unreachable Redis is tried again.
    reconnect_interval_s: float = Field(default=1.0, gt=0, le=60)

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class SessionSettings(_Strict):
    """Sticky sessions: the model of a session's first turn is kept for its later turns."""

    #: Seconds a session is remembered after its last turn.
    ttl_s: float = Field(default=1800.0, gt=0)
    #: A body field that names the session when no `x-r2-session-id` header is sent
    #: (e.g. `user`); None: the header only.
    body_field: str | None = Field(default=None, min_length=1, max_length=64)
    #: Sessions remembered in the process (the fallback when Redis is unreachable).
    max_local: int = Field(default=100_000, gt=0)


class RateLimitSettings(_Strict):
    """Requests per API key (the bearer token, else `x-api-key`; one bucket for clients without
    one) in a fixed window, counted across replicas when Redis is configured."""

    requests: int = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0)
