"""Sticky sessions: a session's later turns keep the model its first turn was routed to.

A session is named by the `x-r2-session-id` header or, when configured, a body field (such as
`user`). The endpoint binds it to the request (a context variable, so routing code needs no new
argument) and starts looking the session up (one GET that also extends its life), so that the
round trip overlaps embedding and scoring; after the router has decided, `stick` takes the answer
and, when its model is still among the decision's candidates and not cooling down,
takes that model's best candidate instead: the budget is still chosen per turn, among that
model's policies, and the other candidates stay behind it for fallbacks. Otherwise the session
starts (`new`) or moves to the decided model (`moved`), which is stored (one SET).
The response says which in `x-r2-session`. Session ids are stored hashed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from router_core import Candidate, Decision, Policy

from ..errors import bad_request
from .settings import SessionSettings
from .store import Store

HEADER = "x-r2-session-id"
RESPONSE_HEADER = "x-r2-session"
MAX_ID_CHARS = 512
#: The model name of routed requests (`/v1/route` has none).
ROUTED = "r2-auto"

_current: ContextVar[Turn | None] = ContextVar("r2_session_turn", default=None)


@dataclass
class Turn:
    """One request's view of its session; `status` is set once routing has used it."""

    key: str
    status: Literal["new", "kept", "moved"] | None = None
    #: The session's stored model, fetched while the request is embedded and scored.
    lookup: asyncio.Future[str | None] | None = None

    def stamp(self, headers: Any) -> None:
        if self.status is not None:
            headers[RESPONSE_HEADER] = self.status


class Sessions:
    def __init__(self, settings: SessionSettings, store: Store,
                 policy_for: Callable[[int | str], Policy]) -> None:
        self.settings = settings
        self.store = store
        #: The serving checkpoint's policy of a budget label (`Scorer.policy_for`).
        self.policy_for = policy_for

    def bind(self, headers: Mapping[str, str], body: dict[str, Any]) -> Turn | None:
        """Name this request's session (if it has one) for `stick`; None without one."""
        sid: Any = headers.get(HEADER)
        param = HEADER
        if sid is None and self.settings.body_field is not None:
            sid, param = body.get(self.settings.body_field), self.settings.body_field
            if not isinstance(sid, str):
                sid = None
        if sid is None or not sid.strip():
            _current.set(None)
            return None
        if len(sid) > MAX_ID_CHARS:
            raise bad_request(f"the session id is longer than {MAX_ID_CHARS} characters",
                              param, "invalid_session_id")
        digest = hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        turn = Turn(f"session:{digest}")
        if body.get("model", ROUTED) == ROUTED:  # only a routed request reads it
            turn.lookup = asyncio.ensure_future(
                self.store.get(turn.key, refresh_s=self.settings.ttl_s))
        _current.set(turn)
        return turn

    async def stick(self, decision: Decision, cooling: Iterable[str]) -> Decision:
        """The decision for this turn of the bound session (unchanged without one)."""
        turn = _current.get()
        if turn is None:
            return decision
        ttl = self.settings.ttl_s
        model = await (turn.lookup or self.store.get(turn.key, refresh_s=ttl))
        if model is not None and model != decision.model and model not in set(cooling):
            best = next((c for c in decision.candidates if c.model == model), None)
            if best is not None:
                decision = dataclasses.replace(decision, **_served(decision, best,
                                                                   self.policy_for(best.budget)))
        if model == decision.model:
            turn.status = "kept"
            return decision
        turn.status = "new" if model is None else "moved"
        await self.store.set(turn.key, decision.model, ttl)
        return decision


def _served(decision: Decision, arm: Candidate, policy: Policy) -> dict[str, Any]:
    """The fields that change when the session's model replaces the router's pick. A decision
    that carries exploration data (the decision log's) is no longer explored: the session chose
    this arm with certainty, so its propensity is 1 and it is what the router picked."""
    changes: dict[str, Any] = {"chosen": arm, "policy": policy}
    names = {f.name for f in dataclasses.fields(decision)}
    if {"explored", "propensity", "greedy"} <= names:
        changes.update(explored=False, propensity=1.0, greedy=arm)
    return changes
