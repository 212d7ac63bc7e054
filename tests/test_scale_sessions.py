"""Sticky sessions and rate limits on in-process state (one gateway, no Redis): the same
contract as across replicas (tests/test_scale_replicas.py), through the real OpenAI SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from standin import Behaviour, StandIn

USER = [{"role": "user", "content": "Keep talking to me."}]


def turn(gw: Any, sid: str | None = None, key: str = "client-secret", **headers: str) -> Any:
    if sid is not None:
        headers["x-r2-session-id"] = sid
    return gw.client(api_key=key).chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers=headers)


def test_a_session_keeps_its_model_and_moves_when_it_must(make_gateway: Any,
                                                          standin: StandIn) -> None:
    gw = make_gateway(server={"cooldown": {"allowed_fails": 1, "cooldown_s": 60}},
                      sessions={"ttl_s": 60})
    first = turn(gw, "s1", **{"x-r2-models": "weak"})
    assert (first.headers["x-r2-session"], first.headers["x-r2-model"]) == ("new", "weak")
    kept = turn(gw, "s1")
    assert (kept.headers["x-r2-session"], kept.headers["x-r2-model"]) == ("kept", "weak")
    assert turn(gw, "s2").headers["x-r2-model"] == "strong"  # what a new session gets
    # The session's model fails and cools down: the next turn moves, and says so.
    standin.behaviours["up-weak"] = Behaviour(status=500)
    with pytest.raises(openai.InternalServerError):
        turn(gw, "s3", **{"x-r2-models": "weak"})
    moved = turn(gw, "s1")
    assert (moved.headers["x-r2-session"], moved.headers["x-r2-model"]) == ("moved", "strong")
    assert turn(gw, "s1").headers["x-r2-session"] == "kept"
    assert "x-r2-session" not in turn(gw).headers


def test_sessions_expire_after_their_ttl(make_gateway: Any, standin: StandIn) -> None:
    import time

    gw = make_gateway(sessions={"ttl_s": 0.5})
    assert turn(gw, "short", **{"x-r2-models": "weak"}).headers["x-r2-session"] == "new"
    time.sleep(0.7)
    again = turn(gw, "short")
    assert (again.headers["x-r2-session"], again.headers["x-r2-model"]) == ("new", "strong")


def test_a_session_id_that_is_too_long_is_refused(make_gateway: Any, standin: StandIn) -> None:
    gw = make_gateway()
    with pytest.raises(openai.BadRequestError) as err:
        turn(gw, "x" * 600)
    assert err.value.body["param"] == "x-r2-session-id"  # type: ignore[index]
    assert "xxxx" not in err.value.response.text  # the id is not echoed


def test_the_rate_limit_is_per_key_with_retry_after(make_gateway: Any,
                                                    standin: StandIn) -> None:
    gw = make_gateway(server={"api_keys": ["key-a", "key-b"],
                              "rate_limits": {"requests": 3, "window_s": 30}})
    for _ in range(3):
        turn(gw, key="key-a")
    with pytest.raises(openai.RateLimitError) as err:
        turn(gw, key="key-a")
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 30
    assert err.value.response.json()["error"]["code"] == "rate_limit_exceeded"
    assert "key-a" not in err.value.response.text
    turn(gw, key="key-b")  # another key has its own budget
    with pytest.raises(openai.AuthenticationError):  # a bad key is refused before counting
        turn(gw, key="nope")


def test_readyz_says_the_state_is_in_process(make_gateway: Any) -> None:
    import httpx

    gw = make_gateway()
    report = httpx.get(f"{gw.url}/readyz").json()
    assert (report["status"], report["state"]) == ("ready", "in-process")
    assert "r2_state_redis_up" not in httpx.get(f"{gw.url}/metrics").text


async def test_a_kept_turn_is_logged_as_chosen_with_certainty_not_explored() -> None:
    """With the decision log's exploration, a turn the session keeps on its model is served
    with certainty: not explored, propensity 1, and that arm is what the router picked."""
    import dataclasses
    import hashlib

    from gateway.state.sessions import Sessions
    from gateway.state.settings import SessionSettings
    from gateway.state.store import MemoryStore
    from router_core import Candidate, Decision, budget_policy

    @dataclasses.dataclass(frozen=True)
    class Logged(Decision):  # the shape of gateway.decisionlog's LoggedDecision
        explored: bool = False
        propensity: float = 1.0
        greedy: Candidate | None = None

    strong = Candidate("strong", 10, 0.9, 10.0, 1e-5, 0.5)
    weak = Candidate("weak", 100, 0.6, 50.0, 1e-6, 0.3)
    store = MemoryStore()
    sessions = Sessions(SessionSettings(), store, lambda b: budget_policy(int(b)))
    key = "session:" + hashlib.sha256(b"s").hexdigest()[:32]
    await store.set(key, "weak", 60)  # the session's first turn went to `weak`
    sessions.bind({"x-r2-session-id": "s"}, {"model": "r2-auto"})
    explored = Logged(strong, budget_policy(10), 0.5, 7, (strong, weak), explored=True,
                      propensity=0.03, greedy=weak)
    kept = await sessions.stick(explored, cooling=())
    assert isinstance(kept, Logged) and kept.model == "weak" and kept.budget == 100
    assert (kept.explored, kept.propensity, kept.greedy) == (False, 1.0, weak)
    assert await store.get(key) == "weak"
