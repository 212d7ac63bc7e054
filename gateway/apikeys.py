"""The API key a request presents: the bearer token, else `x-api-key` (as the Anthropic SDK
sends it). Authentication, rate-limit buckets and the decision log's key id all read it here,
so they cannot disagree about which key a request carries."""

from __future__ import annotations

from collections.abc import Mapping


def presented_key(headers: Mapping[str, str]) -> str:
    """The key the request carries, or "" without one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    return headers.get("x-api-key", "")
