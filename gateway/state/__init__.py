"""Shared state: cooldowns, spend pacing, sticky sessions and rate limits behind one `Store`
(in the process, or in Redis shared by workers and replicas). See docs/scaling.md.

Only the settings and the store are imported here (the config imports the settings); the
serving side is `gateway.state.core.SharedState`.
"""

from .settings import RateLimitSettings, SessionSettings, StateSettings
from .store import MemoryStore, RedisStore, Store

__all__ = ["MemoryStore", "RateLimitSettings", "RedisStore", "SessionSettings",
           "StateSettings", "Store"]
