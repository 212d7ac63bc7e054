"""The decision log end to end: real OpenAI SDK -> gateway -> stand-in; records, feedback,
exploration, `r2 report` checked against what was sent, and a store that fails."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from standin import Behaviour

from gateway.cli import main as r2

USER = [{"role": "user", "content": "Explain photosynthesis briefly."}]
#: tiny_checkpoint prices (USD per million tokens): strong 2 in / 4 out, weak 1 / 2.
PRICES = {"strong": (2.0, 4.0), "weak": (1.0, 2.0)}
KEY = "client-secret"


def logged_gateway(make_gateway: Any, tmp_path: Path, standin: Any, **log: Any) -> Any:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ckpt"), standin.base_url,
                                api_keys=[KEY])
    settings["log"] = {"path": str(tmp_path / "log.sqlite3"), "flush_interval_s": 0.05, **log}
    return make_gateway(settings)


def feedback(client: openai.OpenAI, body: dict[str, Any]) -> Any:
    return client.post("/feedback", body=body, cast_to=object)


def send(client: openai.OpenAI, headers: dict[str, str], **kw: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers=headers, **kw)


def rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM decisions ORDER BY ts")]
    conn.close()
    return out


def test_traffic_feedback_and_report_match_what_was_sent(make_gateway: Any, tmp_path: Path,
                                                         standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin)
    client = gw.client(KEY)
    # Long answers: cut at budget 10 (finish_reason length), not at 100.
    standin.default = Behaviour(text=" ".join(["word"] * 30))
    plan = ([{"x-r2-lambda": "0", "x-r2-models": "strong"}] * 6
            + [{"x-r2-lambda": "0", "x-r2-models": "weak"}] * 4)
    sent = []
    for headers in plan:
        raw = send(client, headers)
        usage = raw.parse().usage
        model = raw.headers["x-r2-model"]
        cost = (usage.prompt_tokens * PRICES[model][0]
                + usage.completion_tokens * PRICES[model][1]) / 1e6
        sent.append({"id": raw.headers["x-request-id"], "model": model,
                     "budget": raw.headers["x-r2-budget"], "cost": cost,
                     "tokens": usage.completion_tokens,
                     "predicted": float(raw.headers["x-r2-predicted-cost-usd"]),
                     "finish": raw.parse().choices[0].finish_reason})
    # A streamed request with usage is logged too.
    stream = client.chat.completions.create(
        model="r2-auto", messages=USER, stream=True, stream_options={"include_usage": True},
        extra_headers={"x-r2-lambda": "0", "x-r2-models": "weak"})
    chunks = list(stream)
    assert chunks[-1].usage is not None
    scores = {}
    for i, s in enumerate(sent):
        scores[s["id"]] = 0.25 if s["model"] == "strong" else 1.0
        assert feedback(client, {"request_id": s["id"], "score": scores[s["id"]],
                                 "comment": f"note {i}"}) == {
            "object": "feedback", "request_id": s["id"], "score": scores[s["id"]]}
    log = gw.app.state.decision_log
    assert log.flush()
    records = rows(tmp_path / "log.sqlite3")
    assert len(records) == 11
    by_id = {r["request_id"]: r for r in records}
    for s in sent:
        rec = by_id[s["id"]]
        assert (rec["model"], rec["policy"]) == (s["model"], s["budget"])
        assert rec["cost_usd"] == pytest.approx(s["cost"])
        assert rec["completion_tokens"] == s["tokens"]
        assert rec["finish_reason"] == s["finish"] == "length"
        assert rec["truncated"] == 1 and rec["status"] == 200
        assert rec["feedback_score"] == scores[s["id"]]
        assert rec["key_id"] == "key-0"
        assert rec["embedding_kind"] == "float16" and len(rec["embedding"]) == 64 * 2
        assert rec["prompt"] is None and rec["answer"] is None  # log.content is off
        assert rec["propensity"] == 1.0 and rec["explored"] == 0
        assert json.loads(rec["candidates"])[0]["model"] == s["model"]
    assert KEY not in json.dumps([{k: v for k, v in r.items() if k != "embedding"}
                                  for r in records])

    out = tmp_path / "report.json"
    assert r2(["report", "--log", str(tmp_path / "log.sqlite3"), "--json", str(out),
               "--plot", str(tmp_path / "report.png")]) == 0
    rep = json.loads(out.read_text())
    # The contract with the dashboard (docs/production-learning.md, `r2 report --json`).
    assert {"requests", "spend_usd", "predicted_spend_usd", "by_arm", "saving"} <= rep.keys()
    for arm in rep["by_arm"]:
        assert {"model", "policy", "requests", "spend_usd", "predicted_cost_usd",
                "mean_output_tokens", "predicted_output_tokens", "truncation_rate",
                "feedback_mean", "feedback_count"} <= arm.keys()
    assert set(rep["saving"]) == {"baseline_arm", "baseline_cost_usd", "actual_cost_usd",
                                  "saving_usd", "saving_fraction", "assumptions"}
    assert rep["requests"] == 11
    stream_rec = next(r for r in records if r["request_id"] not in scores)
    expected_spend = sum(s["cost"] for s in sent) + stream_rec["cost_usd"]
    assert stream_rec["cost_usd"] > 0
    assert rep["spend_usd"] == pytest.approx(expected_spend)
    assert rep["predicted_spend_usd"] == pytest.approx(
        sum(s["predicted"] for s in sent) + stream_rec["predicted_cost_usd"])
    arms = {(a["model"], a["policy"]): a for a in rep["by_arm"]}
    strong = arms[("strong", "10")]
    assert strong["requests"] == 6
    assert strong["spend_usd"] == pytest.approx(sum(s["cost"] for s in sent[:6]))
    assert strong["feedback_mean"] == pytest.approx(0.25) and strong["feedback_count"] == 6
    assert strong["truncation_rate"] == 1.0
    assert strong["mean_output_tokens"] == 10
    assert arms[("weak", "10")]["requests"] == 5
    assert arms[("weak", "10")]["feedback_count"] == 4
    saving = rep["saving"]
    assert saving["baseline_arm"].startswith("strong@")  # the highest predicted quality
    assert saving["actual_cost_usd"] == pytest.approx(expected_spend)
    # Every request sent to strong@10 (same prompt, answers cut at 10 tokens) would have cost
    # what the strong requests cost each: the predicted baseline, scaled by realised/predicted.
    assert saving["baseline_cost_usd"] == pytest.approx(11 * sent[0]["cost"])
    assert saving["saving_usd"] == pytest.approx(saving["baseline_cost_usd"] - expected_spend)
    assert "baseline" in saving["assumptions"]
    assert (tmp_path / "report.png").stat().st_size > 1000
    # The dashboard's summary is the same dict.
    assert asyncio.run(log.summary()) == rep
    assert asyncio.run(log.summary(since=records[-1]["ts"] + 1))["requests"] == 0


def test_feedback_errors_use_the_envelope(make_gateway: Any, tmp_path: Path,
                                          standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin)
    client = gw.client(KEY)
    rid = send(client, {}).headers["x-request-id"]
    with pytest.raises(openai.NotFoundError) as err:
        feedback(client, {"request_id": "r2-nosuchrequest", "score": 0.5})
    assert err.value.body["code"] == "request_not_found"  # type: ignore[index]
    for bad in (1.5, -0.1, "0.5", True, None):
        with pytest.raises(openai.BadRequestError) as err400:
            feedback(client, {"request_id": rid, "score": bad})
        assert err400.value.body["param"] == "score"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err400:
        feedback(client, {"score": 0.5})
    assert err400.value.body["param"] == "request_id"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        feedback(gw.client("wrong-key"), {"request_id": rid, "score": 0.5})
    assert feedback(client, {"request_id": rid, "score": 0})["score"] == 0


def test_feedback_without_log_is_a_clear_404(make_gateway: Any) -> None:
    gw = make_gateway()
    assert gw.app.state.decision_log is None
    with pytest.raises(openai.NotFoundError) as err:
        feedback(gw.client(), {"request_id": "r2-x", "score": 0.5})
    assert err.value.body["code"] == "decision_log_off"  # type: ignore[index]


def test_content_logged_only_when_asked(make_gateway: Any, tmp_path: Path,
                                        standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin, content=True, embedding="sha256")
    send(gw.client(KEY), {"x-r2-lambda": "0"})
    assert gw.app.state.decision_log.flush()
    (rec,) = rows(tmp_path / "log.sqlite3")
    assert json.loads(rec["prompt"]) == USER
    assert rec["answer"] == "Hello from the stand-in."
    assert rec["embedding_kind"] == "sha256" and len(rec["embedding"]) == 32


def test_automatic_signals_upstream_error_and_fallback(make_gateway: Any, tmp_path: Path,
                                                       standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin)
    client = gw.client(KEY)
    standin.behaviours["up-strong"] = Behaviour(status=500)
    raw = send(client, {"x-r2-lambda": "0"})
    assert raw.headers["x-r2-fallback"].startswith("upstream-error")
    with pytest.raises(openai.InternalServerError):
        send(client, {"x-r2-lambda": "0", "x-r2-models": "strong"})
    assert gw.app.state.decision_log.flush()
    fell, failed = rows(tmp_path / "log.sqlite3")
    assert fell["model"] == "weak" and fell["fallback"].startswith("upstream-error:strong")
    assert fell["greedy_model"] == "strong" and fell["upstream_error"] == 0
    assert failed["status"] == 502 and failed["upstream_error"] == 1
    assert failed["cost_usd"] is None


def test_exploration_stays_within_constraints_and_records_propensity(
        make_gateway: Any, tmp_path: Path, standin: Any) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ckpt"), standin.base_url)
    settings["log"] = {"path": str(tmp_path / "log.sqlite3"), "flush_interval_s": 0.05}
    settings["explore"] = {"rate": 0.5, "temperature": 0.5, "seed": 7}
    gw = make_gateway(settings)
    client = gw.client()
    for _ in range(40):
        send(client, {"x-r2-lambda": "0", "x-r2-models": "weak"})
    for _ in range(20):  # a cap below budget 100: that policy is never feasible
        send(client, {"x-r2-lambda": "0"}, max_tokens=20)
    assert gw.app.state.decision_log.flush()
    records = rows(tmp_path / "log.sqlite3")
    assert {r["model"] for r in records[:40]} == {"weak"}
    explored = [r for r in records[:40] if r["explored"]]
    assert 8 <= len(explored) <= 32
    for r in records[:40]:
        if r["explored"]:
            assert r["policy"] != r["greedy_policy"] and 0 < r["propensity"] < 0.5
        else:
            assert r["propensity"] == pytest.approx(0.5)
    assert {r["policy"] for r in records[40:]} <= {"10", "unlimited"}
    assert any(r["explored"] for r in records[40:])
    # The propensities are a distribution: the explored arms' p / rate sum to 1 per request.
    weights = {r["policy"]: r["propensity"] / 0.5 for r in explored}
    assert sum(weights.values()) == pytest.approx(1.0)


def test_a_failing_store_never_fails_requests(make_gateway: Any, tmp_path: Path,
                                              standin: Any) -> None:
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ckpt"), standin.base_url)
    settings["log"] = {"path": str(blocked), "flush_interval_s": 0.05}
    gw = make_gateway(settings)
    client = gw.client()
    for _ in range(5):
        assert send(client, {}).parse().choices[0].message.content
    gw.app.state.decision_log.flush()
    with pytest.raises(openai.APIStatusError) as err:  # feedback: the store is down
        feedback(client, {"request_id": "r2-x", "score": 0.5})
    assert err.value.status_code == 503
    metrics = gw.app.state.service.metrics.render().decode()
    assert 'r2_decision_log_records_total{result="store_error"} 5.0' in metrics


def test_a_full_queue_drops_and_counts(make_gateway: Any, tmp_path: Path,
                                       standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin, queue_size=1)
    log = gw.app.state.decision_log
    log.writer.stop()  # nothing drains the queue now
    client = gw.client(KEY)
    for _ in range(4):
        send(client, {})
    metrics = gw.app.state.service.metrics.render().decode()
    assert 'r2_decision_log_records_total{result="queue_full"} 3.0' in metrics


def test_report_since_and_cli_errors(tmp_path: Path, capsys: Any) -> None:
    from gateway.commands.report import parse_since

    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86_400
    assert parse_since("1700000000") == 1_700_000_000.0
    assert r2(["report", "--log", str(tmp_path / "missing.sqlite3")]) == 2
    assert "no decision log" in capsys.readouterr().err
    assert r2(["report", "--log", str(tmp_path / "x"), "--since", "yesterday"]) == 2


def test_schema_is_versioned_migrated_once_and_retention_deletes(tmp_path: Path) -> None:
    from gateway.decisionlog import StoreError, open_store
    from gateway.decisionlog.schema import INSERTED, SCHEMA_VERSION

    db = str(tmp_path / "log.sqlite3")
    store = open_store(db)
    assert store.migrate() == SCHEMA_VERSION  # idempotent
    row = {name: None for name in INSERTED}
    old = tuple({**row, "request_id": "old", "ts": 1000.0}.values())
    new = tuple({**row, "request_id": "new", "ts": 5000.0}.values())
    store.write([old, new, new], [(1000.0, "m", "10", 1, 0.5, 0.1)])  # a repeated id: kept once
    assert store.delete_before(2000.0) == 1
    assert store.query("SELECT request_id FROM decisions") == [("new",)]
    assert store.query("SELECT COUNT(*) FROM arm_totals") == [(0,)]
    store.query("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    store.close()
    with pytest.raises(StoreError, match="newer than this gateway"):
        open_store(db)


def test_writer_sweeps_expired_records(tmp_path: Path) -> None:
    from gateway.decisionlog import open_store
    from gateway.decisionlog.schema import INSERTED
    from gateway.decisionlog.writer import Writer

    db = str(tmp_path / "log.sqlite3")
    store = open_store(db)
    store.write([tuple({**{n: None for n in INSERTED}, "request_id": "a", "ts": 1.0}.values())],
                [])
    store.close()
    counts: list[tuple[str, int]] = []
    writer = Writer(lambda: open_store(db), lambda items: (items, []), 10, 10, 0.01,
                    retention_s=3600.0, counted=lambda r, n: counts.append((r, n)))
    writer.start()
    assert writer.flush()
    writer.stop()
    check = open_store(db)
    assert check.query("SELECT COUNT(*) FROM decisions") == [(0,)]
    check.close()


def test_client_disconnect_is_recorded(make_gateway: Any, tmp_path: Path,
                                       standin: Any) -> None:
    gw = logged_gateway(make_gateway, tmp_path, standin)
    standin.default = Behaviour(delay_s=3.0)
    with pytest.raises(openai.APITimeoutError):
        send(gw.client(KEY, timeout=0.5), {"x-r2-lambda": "0"})
    log = gw.app.state.decision_log
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not records:
        log.flush()
        records = rows(tmp_path / "log.sqlite3")
        time.sleep(0.1)
    (rec,) = records
    assert rec["client_closed"] == 1 and rec["upstream_error"] == 0
    assert rec["status"] == 499 and rec["model"] == "strong"
