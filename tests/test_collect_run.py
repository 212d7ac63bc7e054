"""`r2 collect` against the recording provider stand-in: what it sends, writes, spends, retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour, StandIn

from gateway.cli import main
from gateway.collect import Collector, OutcomeStore, Price, RunOptions, collect, load_questions
from gateway.collect.plan import plan_arms, resolve_policies
from gateway.config import ConfigError, GatewaySettings, parse_settings
from router_core import Policy
from router_core.training.dataset import load_outcomes

QUESTIONS = [
    {"source": "demo", "source_id": i, "topic": "Science", "question": f"Question {i}?",
     "choices": {"A": "alpha", "B": "beta", "C": "gamma"}, "answer": "B"}
    for i in range(1, 7)
]
FAST = RunOptions(progress=False, backoff_s=0.001)


def settings_dict(base_url: str, names: tuple[str, ...] = ("cheap", "dear"),
                  prices: tuple[tuple[float, float], ...] = ((0.5, 1.0), (5.0, 10.0)),
                  **deployment: Any) -> dict[str, Any]:
    return {"checkpoint": "unused", "embedder": {"kind": "hash", "dim": 64},
            "deployments": [{"name": n, "model": f"openai/up-{n}", "api_base": base_url,
                             "timeout_s": 5.0, "input_price_per_million": p[0],
                             "output_price_per_million": p[1], **deployment}
                            for n, p in zip(names, prices, strict=True)]}


def write_questions(path: Path, questions: list[dict[str, Any]] = QUESTIONS) -> Path:
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_each_arm_is_sent_exactly_as_the_gateway_serves_it(
        tmp_path: Path, make_gateway: Any, standin: StandIn) -> None:
    style = Policy("concise_cot", None, 256, "Think step by step, briefly.", "predicted")
    prompt = "Why is the sky blue?"
    served = []
    for best in (1, 3):  # budget 100, then the named policy
        quality = [0.1, 0.1, 0.1, 0.1]
        quality[best] = 0.99
        ck = tiny_checkpoint(tmp_path / f"ck{best}", extra_policies=(style,),
                             quality={"strong": quality, "weak": [0.0] * 4})
        gw = make_gateway(ckpt=ck)
        gw.client().chat.completions.create(
            model="r2-auto", messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-r2-lambda": "0"})
        served.append(standin.received[-1]["body"])
    raw = gateway_settings(tmp_path / "ck1", standin.base_url)
    for dep in raw["deployments"]:
        dep.update(input_price_per_million=1.0, output_price_per_million=2.0)
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text("policies:\n  concise_cot:\n    instruction: Think step by step, "
                           "briefly.\n    max_tokens: 256\n")
    questions = write_questions(tmp_path / "q.jsonl", [{"prompt": prompt, "query_id": "sky"}])
    standin.received.clear()
    raw["judge"] = {"deployment": "weak"}
    standin.behaviours["up-weak"] = Behaviour(text="Score: 1")
    collect(parse_settings(raw), [questions], tmp_path / "o.jsonl", "100,concise_cot",
            models="strong", policy_file=policy_file, options=FAST)
    # collect runs arms concurrently: pair them by their cap (100, then concise_cot's 256), not
    # by the order the stand-in happened to receive them in.
    measured = sorted((r["body"] for r in standin.received if r["body"]["model"] == "up-strong"),
                      key=lambda body: body["max_tokens"])
    assert len(measured) == 2
    assert [b["max_tokens"] for b in served] == [100, 256]
    for sent, got in zip(served, measured, strict=True):
        assert got["messages"] == sent["messages"]
        assert got["max_tokens"] == sent["max_tokens"]
    assert measured[0]["max_tokens"] == 100
    assert "100 tokens" in measured[0]["messages"][0]["content"]


def test_the_unlimited_arm_sends_no_instruction_and_the_deployment_cap(
        tmp_path: Path, standin: StandIn) -> None:
    settings = parse_settings(settings_dict(standin.base_url, max_tokens=7))
    collect(settings, [write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])],
            tmp_path / "o.jsonl", "unlimited", models="cheap", options=FAST)
    body = standin.received[-1]["body"]
    assert body["max_tokens"] == 7
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_rows_have_the_outcome_format_and_r2_train_can_load_them(
        tmp_path: Path, standin: StandIn) -> None:
    standin.behaviours["up-cheap"] = Behaviour(text="Hmm, A or C? No. The answer is (B).")
    standin.behaviours["up-dear"] = Behaviour(text="C")
    out = tmp_path / "o.jsonl"
    result = collect(parse_settings(settings_dict(standin.base_url)),
                     [write_questions(tmp_path / "q.jsonl")], out, "5,unlimited", options=FAST)
    assert result.report.complete and result.report.written == 6 * 2 * 2
    got = rows(out)
    first = next(r for r in got if r["model"] == "cheap" and r["policy"] == "unlimited")
    assert first["score"] == 1.0 and first["extracted"] == "B" and first["gold"] == "B"
    assert first["answer"] == "Hmm, A or C? No. The answer is (B)."
    assert first["finish_reason"] == "stop"
    assert first["input_tokens"] == 11 and first["output_tokens"] == 9
    assert first["cost_usd"] == pytest.approx((11 * 0.5 + 9 * 1.0) / 1e6)
    assert first["split"] in ("train", "test") and first["query_id"].startswith("mcqa/demo/")
    capped = next(r for r in got if r["model"] == "cheap" and r["policy"] == 5)
    assert capped["output_tokens"] == 5 and capped["finish_reason"] == "length"
    assert all(r["score"] == 0.0 for r in got if r["model"] == "dear")
    data = load_outcomes([out])
    assert data.models == ("cheap", "dear") and data.policies == (5, "unlimited")
    assert data.prices["dear"].output_per_million == 10.0
    summary = {(s.model, s.policy): s for s in result.summary}
    assert summary[("cheap", 5)].truncated == 1.0 and summary[("cheap", 5)].compliance == 1.0
    assert summary[("cheap", "unlimited")].compliance is None


def test_samples_per_arm_average_the_scores(tmp_path: Path, standin: StandIn) -> None:
    standin.behaviours["up-cheap"] = Behaviour(text="B")
    out = tmp_path / "o.jsonl"
    collect(parse_settings(settings_dict(standin.base_url)),
            [write_questions(tmp_path / "q.jsonl", QUESTIONS[:1])], out, "unlimited",
            models="cheap", options=RunOptions(samples=3, progress=False, temperature=1.0))
    (row,) = rows(out)
    assert row["samples"] == 3 and len(row["sample_results"]) == 3 and row["score"] == 1.0
    assert all(r["body"]["temperature"] == 1.0 for r in standin.received)


def test_the_cost_cap_stops_cleanly_without_being_exceeded(tmp_path: Path,
                                                           standin: StandIn) -> None:
    # $1 per output token; a budget-10 call reserves $10 and really costs $3 (three words).
    standin.default = Behaviour(text="The answer: B")
    settings = parse_settings(settings_dict(standin.base_url, ("cheap",), ((0.0, 1e6),)))
    out = tmp_path / "o.jsonl"
    result = collect(settings, [write_questions(tmp_path / "q.jsonl")], out, "10,20",
                     options=RunOptions(progress=False, max_cost_usd=25.0, concurrency=2))
    report = result.report
    assert report.cost_cap_hit and not report.complete
    assert report.spent_usd <= 25.0
    assert report.spent_usd == pytest.approx(3.0 * report.written)
    assert len(rows(out)) == report.written == len(standin.received)
    code = main(["collect", str(tmp_path / "q.jsonl"), "--config", _yaml(tmp_path, settings),
                 "--policies", "10,20", "--out", str(out), "--max-cost-usd", "2",
                 "--no-progress"])
    assert code == 1
    assert len(rows(out)) == report.written


def _yaml(tmp_path: Path, settings: GatewaySettings) -> str:
    import yaml

    raw = settings.model_dump(mode="json", exclude_none=True)
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


class ScriptedUpstream:
    """A `Completer` that fails with the given statuses first, then answers."""

    def __init__(self, *statuses: int, usage: bool = True) -> None:
        self.statuses = list(statuses)
        self.usage = usage
        self.calls = 0

    async def complete(self, body: dict[str, Any]) -> Any:
        self.calls += 1
        if self.statuses:
            error = RuntimeError("scripted failure")
            error.status_code = self.statuses.pop(0)  # type: ignore[attr-defined]
            raise error
        return {"choices": [{"message": {"content": "B"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1} if self.usage else None}


def _run_scripted(tmp_path: Path, upstream: ScriptedUpstream, n_questions: int = 1) -> Any:
    import asyncio

    settings = parse_settings(settings_dict("http://127.0.0.1:9/v1", ("cheap",), ((1.0, 1.0),)))
    questions = load_questions([write_questions(tmp_path / "q.jsonl", QUESTIONS[:n_questions])])
    policies, _ = resolve_policies([10], None)
    arms = plan_arms(questions, settings.deployments, policies, set())
    store = OutcomeStore.open(tmp_path / "o.jsonl")
    collector = Collector(upstream, settings, store, {"cheap": Price(1.0, 1.0)},
                          RunOptions(progress=False, backoff_s=0.001, retries=3,
                                     concurrency=1))
    report = asyncio.run(collector.run(arms))
    store.close()
    return report


def test_transient_failures_are_retried_with_backoff(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(503, 429)
    report = _run_scripted(tmp_path, upstream)
    assert upstream.calls == 3 and report.written == 1 and report.complete


def test_a_request_error_fails_the_arm_without_retrying(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(400)
    report = _run_scripted(tmp_path, upstream)
    assert upstream.calls == 1 and report.written == 0
    assert report.failures == {"cheap: RuntimeError (status 400)": 1}


def test_an_answer_without_usage_fails_the_arm_and_counts_its_worst_case(
        tmp_path: Path) -> None:
    report = _run_scripted(tmp_path, ScriptedUpstream(usage=False))
    assert report.written == 0
    assert report.failures == {"cheap: the response has no choices or no usage": 1}
    assert report.spent_usd > 0


def test_an_auth_error_stops_asking_that_deployment(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(401)
    report = _run_scripted(tmp_path, upstream, n_questions=4)
    assert upstream.calls == 1 and report.written == 0
    assert "cheap" in report.stopped_deployments


def test_bad_setup_is_refused_before_any_request(tmp_path: Path, standin: StandIn) -> None:
    raw = settings_dict(standin.base_url)
    questions = write_questions(tmp_path / "q.jsonl", [{"prompt": "Open question?"}])
    with pytest.raises(ConfigError, match="judge"):
        collect(parse_settings(raw), [questions], tmp_path / "o.jsonl", "10", options=FAST)
    del raw["deployments"][0]["input_price_per_million"]
    mcq = write_questions(tmp_path / "m.jsonl")
    with pytest.raises(ConfigError, match="prices"):
        collect(parse_settings(raw), [mcq], tmp_path / "o.jsonl", "10", options=FAST)
    with pytest.raises(ConfigError, match="no instruction"):
        collect(parse_settings(settings_dict(standin.base_url)), [mcq], tmp_path / "o.jsonl",
                "concise_cot", options=FAST)
    with pytest.raises(ConfigError, match="names no deployment"):
        collect(parse_settings(settings_dict(standin.base_url)), [mcq], tmp_path / "o.jsonl",
                "10", models="nope", options=FAST)
    assert standin.received == []


def test_judge_config_must_name_a_deployment_and_have_slots(standin: StandIn) -> None:
    raw = settings_dict(standin.base_url)
    with pytest.raises(ConfigError, match="judge.deployment"):
        parse_settings({**raw, "judge": {"deployment": "nope"}})
    with pytest.raises(ConfigError, match="judge.prompt"):
        parse_settings({**raw, "judge": {"deployment": "cheap", "prompt": "Grade it."}})
    assert parse_settings({**raw, "judge": {"deployment": "cheap"}}).judge is not None


def test_a_killed_run_resumes_without_asking_done_rows_again(tmp_path: Path,
                                                             standin: StandIn) -> None:
    standin.default = Behaviour(text="B", delay_s=0.25)
    settings = parse_settings(settings_dict(standin.base_url, ("cheap",), ((1.0, 1.0),)))
    config, questions = _yaml(tmp_path, settings), write_questions(tmp_path / "q.jsonl")
    out = tmp_path / "o.jsonl"
    args = ["collect", str(questions), "--config", config, "--policies", "10,20,30",
            "--out", str(out), "--concurrency", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and len(rows(out)) >= 3):
            assert time.monotonic() < deadline and proc.poll() is None, "no rows written"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len(rows(out))
    assert 3 <= done < 18
    with out.open("a") as fh:
        fh.write('{"query_id": "mcqa/demo/6", "prompt": "Topic')  # a torn write
    standin.received.clear()
    standin.default = Behaviour(text="B")
    assert main(args) == 0
    final = rows(out)
    assert len(standin.received) == 18 - done
    assert len(final) == 18
    assert len({(r["query_id"], r["policy"]) for r in final}) == 18


def test_rerunning_a_finished_collection_asks_nothing(tmp_path: Path, standin: StandIn,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse_settings(settings_dict(standin.base_url))
    args = ["collect", str(write_questions(tmp_path / "q.jsonl")), "--config",
            _yaml(tmp_path, settings), "--policies", "10", "--out", str(tmp_path / "o.jsonl"),
            "--no-progress", "--json-summary", str(tmp_path / "s.json")]
    assert main(args) == 0
    standin.received.clear()
    assert main(args) == 0
    assert standin.received == []
    out = capsys.readouterr().out
    assert "0 written, 12 already in" in out
    assert "within_1.1x" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert {a["model"] for a in summary["arms"]} == {"cheap", "dear"}
