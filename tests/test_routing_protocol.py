"""What is routed and what is served (issue 10), through the real OpenAI SDK and the gateway.

- the routing text: the question, not the system prompt; follow-ups with their context;
- the served protocol: exactly the instruction, placement and cap the checkpoint's policy says,
  overridden only by a named gateway.yaml setting;
- client caps: below every policy's cap the shortest policy is chosen and the client's cap is
  sent, in the field the deployment honours; structured outputs are not cut by policy caps;
  `n` answers cost `n` outputs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint

from router_core import HashEmbedder, Policy, budget_policy
from router_core.embedders.base import EmbeddingArray
from router_core.policies import RELEASE_PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ROOT / "checkpoints" / "default"
AGENT_PROMPT = (ROOT / "examples" / "system-prompt-agent.txt").read_text().strip()
SHORT_PROMPT = (ROOT / "examples" / "system-prompt-short.txt").read_text().strip()
EASY = "What is 2+2?"
HARD = ("Prove that there are infinitely many primes, then explain whether the same argument "
        "shows there are infinitely many primes of the form 4k+3.")


def last_body(standin: Any) -> dict[str, Any]:
    return standin.received[-1]["body"]  # type: ignore[no-any-return]


def default_settings(base_url: str) -> dict[str, Any]:
    """The shipped default checkpoint (MiniLM, gpt-3.5-turbo and gpt-4) on the stand-in."""
    return {
        "checkpoint": str(DEFAULT_CKPT),
        "embedder": {"kind": "local-q8"},
        "default_lambda": 0.5,
        "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": base_url}
                        for n in ("gpt-3.5-turbo", "gpt-4")],
    }


@pytest.fixture
def default_gateway(make_gateway: Any, standin: Any) -> Any:
    return make_gateway(default_settings(standin.base_url))


def route(gw: Any, messages: list[dict[str, Any]], lam: str = "0.5", **body: Any) -> Any:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=messages, extra_headers={"x-r2-lambda": lam}, **body)
    raw.parse()
    return raw.headers


# -- routing text ---------------------------------------------------------------------------
def test_questions_under_one_long_system_prompt_get_their_own_predictions(
        default_gateway: Any) -> None:
    assert len(AGENT_PROMPT) > 2500
    seen = {}
    for question in (EASY, HARD):
        headers = route(default_gateway, [{"role": "system", "content": AGENT_PROMPT},
                                          {"role": "user", "content": question}], lam="0")
        seen[question] = (headers["x-r2-model"], headers["x-r2-budget"],
                          headers["x-r2-predicted-quality"])
    assert seen[EASY] != seen[HARD]


def test_a_short_system_prompt_does_not_change_the_model(default_gateway: Any) -> None:
    for question in (EASY, HARD):
        alone = route(default_gateway, [{"role": "user", "content": question}])
        with_system = route(default_gateway, [{"role": "system", "content": SHORT_PROMPT},
                                              {"role": "user", "content": question}])
        assert with_system["x-r2-model"] == alone["x-r2-model"]


class RecordingEmbedder(HashEmbedder):
    """The hash embedder with a MiniLM-sized window that records what it embedded."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim=dim, max_chars=1000)
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> EmbeddingArray:
        self.seen.extend(texts)
        return super().embed(texts)


def test_a_follow_up_is_routed_on_text_that_contains_it(tmp_path: Path, standin: Any,
                                                        serve_app: Any) -> None:
    from gateway.app import build_app
    from gateway.config import parse_settings

    emb = RecordingEmbedder()
    ck = tiny_checkpoint(tmp_path / "ck")
    gw = serve_app(build_app(parse_settings(gateway_settings(ck, standin.base_url)), emb))
    first = "Write a function that merges two sorted lists. " + "Explain each step. " * 120
    route(gw, [{"role": "system", "content": AGENT_PROMPT},
               {"role": "user", "content": first},
               {"role": "assistant", "content": "Here is the function in Go: ..."},
               {"role": "user", "content": "and in Python?"}])
    routed = [t for t in emb.seen if t not in ("warm-up", "ready")][-1]
    assert routed.startswith("and in Python?")
    assert "merges two sorted lists" in routed
    assert AGENT_PROMPT[:40] not in routed


# -- the served protocol --------------------------------------------------------------------
def protocol_checkpoint(tmp_path: Path, favourite: int) -> Path:
    """Budgets under the release's R2-Bench protocol, a named style and the free arm; the
    `favourite` policy (index) has the highest quality, so lambda 0 picks it."""
    r2bench = RELEASE_PROTOCOLS["r2bench"]
    style = Policy("concise_cot", None, 256, "Think step by step, briefly.", "predicted")
    ck = tiny_checkpoint(tmp_path / f"ck{favourite}", budgets=(50,),
                         extra_policies=(style,),
                         quality={"strong": [0.9 if j == favourite else 0.2 for j in range(3)],
                                  "weak": [0.1] * 3})
    manifest = json.loads((ck / "manifest.json").read_text())
    manifest["policies"][0] = budget_policy(50, protocol=r2bench).to_json()
    (ck / "manifest.json").write_text(json.dumps(manifest))
    return ck


USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]


def test_a_numeric_budget_is_served_as_its_checkpoint_protocol(tmp_path: Path, make_gateway: Any,
                                                               standin: Any) -> None:
    gw = make_gateway(ckpt=protocol_checkpoint(tmp_path, 0))
    headers = route(gw, USER, lam="0")
    assert headers["x-r2-budget"] == "50"
    sent = last_body(standin)
    assert sent["max_tokens"] == 60  # N + 10
    assert sent["messages"] == [{"role": "user", "content": (
        "Explain photosynthesis briefly.\n\nYou have a strict budget of 50 words. You must "
        "answer at most 50 words!")}]


def test_a_named_style_and_the_free_arm_are_served_as_stored(tmp_path: Path, make_gateway: Any,
                                                             standin: Any) -> None:
    gw = make_gateway(ckpt=protocol_checkpoint(tmp_path, 2))
    assert route(gw, USER, lam="0")["x-r2-budget"] == "concise_cot"
    sent = last_body(standin)
    assert sent["max_tokens"] == 256
    assert sent["messages"] == [{"role": "system", "content": "Think step by step, briefly."},
                                *USER]
    gw = make_gateway(ckpt=protocol_checkpoint(tmp_path, 1))
    assert route(gw, USER, lam="0")["x-r2-budget"] == "unlimited"
    sent = last_body(standin)
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    assert sent["messages"] == USER


def test_gateway_yaml_overrides_the_protocol_only_when_named(tmp_path: Path, make_gateway: Any,
                                                             standin: Any,
                                                             caplog: Any) -> None:
    ck = protocol_checkpoint(tmp_path, 0)
    settings = gateway_settings(ck, standin.base_url)
    settings["budget_protocol_override"] = "generate"
    with caplog.at_level("WARNING", logger="r2.gateway"):
        gw = make_gateway(settings)
    assert any("budget_protocol_override" in r.getMessage() for r in caplog.records)
    route(gw, USER, lam="0")
    sent = last_body(standin)
    assert "max_tokens" not in sent
    assert sent["messages"] == [{"role": "system", "content": (
        "You MUST respond in 50 tokens or fewer. Directly give the answer follow the format "
        "WITHOUT ANY explanation.")}, *USER]
    settings["budget_protocol_override"] = {"instruction": "At most {budget} tokens.",
                                            "cap_rule": "budget+slack", "cap_slack": 5}
    gw = make_gateway(settings)
    route(gw, USER, lam="0")
    sent = last_body(standin)
    assert sent["max_tokens"] == 55
    assert sent["messages"][0] == {"role": "system", "content": "At most 50 tokens."}


def test_the_removed_budget_instruction_setting_is_refused_by_name(tmp_path: Path,
                                                                  standin: Any) -> None:
    from gateway.config import ConfigError, parse_settings

    settings = gateway_settings(tiny_checkpoint(tmp_path / "ck"), standin.base_url)
    settings["budget_instruction"] = "Be short."
    with pytest.raises(ConfigError, match="budget_protocol_override"):
        parse_settings(settings)


# -- client caps ----------------------------------------------------------------------------
@pytest.mark.parametrize("cap", [20, 127])
def test_a_cap_below_every_policy_picks_the_shortest_and_sends_the_cap(
        default_gateway: Any, standin: Any, cap: int) -> None:
    for lam in ("0", "0.5"):
        headers = route(default_gateway, [{"role": "user", "content": HARD}], lam=lam,
                        max_tokens=cap)
        assert headers["x-r2-budget"] == "answer_only"
        sent = last_body(standin)
        assert sent["max_tokens"] == cap
        assert "Give only the final answer" in sent["messages"][0]["content"]


def test_max_completion_tokens_reaches_the_upstream_in_the_field_it_honours(
        tmp_path: Path, make_gateway: Any, standin: Any) -> None:
    ck = tiny_checkpoint(tmp_path / "ck", quality={"strong": [0.1, 0.1, 0.9],
                                                   "weak": [0.1, 0.1, 0.1]})
    gw = make_gateway(ckpt=ck)  # OpenAI-compatible servers at an api_base: max_tokens
    assert route(gw, USER, lam="0", max_completion_tokens=5)["x-r2-budget"] == "10"
    sent = last_body(standin)
    assert sent["max_tokens"] == 5 and "max_completion_tokens" not in sent
    route(gw, USER, lam="0", max_tokens=1_000_000, max_completion_tokens=7)
    sent = last_body(standin)
    assert sent["max_tokens"] == 7 and sent["max_completion_tokens"] == 7
    settings = gateway_settings(ck, standin.base_url)
    for dep in settings["deployments"]:
        dep["max_tokens_field"] = "max_completion_tokens"
    gw = make_gateway(settings)
    route(gw, USER, lam="0", max_tokens=5)
    sent = last_body(standin)
    assert sent["max_completion_tokens"] == 5 and "max_tokens" not in sent


def test_a_named_deployment_gets_the_cap_in_its_field_too(make_gateway: Any,
                                                          standin: Any) -> None:
    gw = make_gateway()
    gw.client().chat.completions.create(model="strong", messages=USER, max_completion_tokens=5)
    sent = last_body(standin)
    assert sent["max_tokens"] == 5 and "max_completion_tokens" not in sent


def test_the_cap_field_default_follows_the_provider() -> None:
    from gateway.config import Deployment

    assert Deployment(name="a", model="openai/gpt-4o").cap_field == "max_completion_tokens"
    assert Deployment(name="a", model="gpt-4o").cap_field == "max_completion_tokens"
    assert Deployment(name="a", model="openai/local", api_base="http://x/v1").cap_field == \
        "max_tokens"
    assert Deployment(name="a", model="openrouter/qwen/qwen3").cap_field == "max_tokens"


def test_structured_output_keeps_the_instruction_but_not_a_short_policy_cap(
        default_gateway: Any, standin: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}}}}
    headers = route(default_gateway, [{"role": "user", "content": HARD}], max_tokens=50,
                    response_format=fmt)
    assert headers["x-r2-budget"] == "answer_only"
    sent = last_body(standin)
    assert sent["max_tokens"] == 50  # the client's own cap, not answer_only's 128 ... or less
    route(default_gateway, [{"role": "user", "content": HARD}], lam="1", response_format=fmt)
    sent = last_body(standin)
    assert "max_tokens" not in sent  # no policy cap can cut the JSON
    assert sent["messages"][0]["role"] == "system"


def test_n_answers_multiply_the_predicted_output_cost(tmp_path: Path, make_gateway: Any,
                                                      standin: Any) -> None:
    ck = tiny_checkpoint(tmp_path / "ck", models=("strong",), budgets=(100,),
                         quality={"strong": [0.9, 0.1]}, prices={"strong": (0.0, 10.0)})
    gw = make_gateway(gateway_settings(ck, standin.base_url, models=("strong",)))
    one = float(route(gw, USER, lam="0")["x-r2-predicted-cost-usd"])
    three = float(route(gw, USER, lam="0", n=3)["x-r2-predicted-cost-usd"])
    assert three == pytest.approx(3 * one)
    limit = {"x-r2-lambda": "0", "x-r2-max-cost-usd": repr(one)}
    gw.client().chat.completions.create(model="r2-auto", messages=USER, extra_headers=limit)
    with pytest.raises(openai.BadRequestError, match="x-r2-max-cost-usd"):
        gw.client().chat.completions.create(model="r2-auto", messages=USER, n=3,
                                            extra_headers=limit)


def test_old_manifests_load_with_the_protocol_they_implied(tmp_path: Path) -> None:
    old = {"name": "10", "budget": 10, "max_tokens": 10, "instruction": "At most {budget}.",
           "cost_tokens": "budget"}
    pol = Policy.from_json(old)
    assert (pol.kind, pol.placement, pol.cap_rule, pol.cap) == ("budget", "system", "budget", 10)
    style = Policy.from_json({"name": "cot", "budget": None, "max_tokens": 512,
                              "instruction": "Think.", "cost_tokens": "predicted"})
    assert (style.kind, style.cap_rule, style.cap, style.label) == ("style", "fixed", 512, "cot")
    free = Policy.from_json({"name": "unlimited", "budget": None, "max_tokens": None,
                             "instruction": None, "cost_tokens": "predicted"})
    assert (free.kind, free.cap, free.limit, free.render_instruction()) == \
        ("free", None, None, None)
    assert Policy.from_json(pol.to_json()) == pol
    with pytest.raises(ValueError, match="cap_rule"):
        Policy.from_json({**old, "cap_rule": "sometimes"})
    assert dataclasses.replace(pol, cap_rule="none").cap is None
    assert np.isclose(Policy.from_json({**old, "input_overhead_tokens": 12.5})
                      .input_overhead_tokens, 12.5)


# -- where the protocol comes from -----------------------------------------------------------
def test_the_importer_offers_the_release_protocols_by_name(tmp_path: Path) -> None:
    from helpers import require_shared

    from router_core import CheckpointError, load_checkpoint
    from router_core.upstream_import import import_release

    release = require_shared("upstream-r2router", "r2_router")
    import_release(release, tmp_path / "bench", trust_pickle=True)
    budget = load_checkpoint(tmp_path / "bench").policies[0]
    assert (budget.placement, budget.cap, budget.render_instruction()) == (
        "user_suffix", 20, "You have a strict budget of 10 words. You must answer at most 10 "
        "words!")
    import_release(release, tmp_path / "gen", trust_pickle=True, protocol="generate")
    ckpt = load_checkpoint(tmp_path / "gen")
    budget = ckpt.policies[0]
    assert (budget.placement, budget.cap) == ("system", None)
    assert budget.render_instruction() == ("You MUST respond in 10 tokens or fewer. Directly "
                                           "give the answer follow the format WITHOUT ANY "
                                           "explanation.")
    assert ckpt.policies[-1].kind == "free" and ckpt.provenance["protocol"] == "generate"
    with pytest.raises(CheckpointError, match="protocol"):
        import_release(release, tmp_path / "x", trust_pickle=True, protocol="paraphrase")


def test_collect_records_the_protocol_and_train_carries_it(tmp_path: Path) -> None:
    from gateway.collect.store import policy_spec
    from router_core.training.policyfile import build_policies, with_collected

    r2bench = RELEASE_PROTOCOLS["r2bench"]
    style = Policy("terse", None, 64, "Be terse.", "predicted", placement="user_suffix")
    collected = {"50": policy_spec(budget_policy(50, protocol=r2bench)),
                 "terse": policy_spec(style)}
    policies = build_policies([50, "terse", "unlimited"], with_collected(None, collected))
    assert policies[0].to_json() == {**budget_policy(50, cost_tokens="predicted",
                                                     protocol=r2bench).to_json()}
    assert (policies[1].instruction, policies[1].cap, policies[1].placement) == (
        "Be terse.", 64, "user_suffix")
    assert policies[2].kind == "free"
