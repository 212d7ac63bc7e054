"""Learning from the log: a refit on feedback in which one model's answers are systematically
bad moves decisions away from it; `r2 calibrate --from-log` writes a trade-off table."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from helpers import HASH_DIM, gateway_settings, tiny_checkpoint

from gateway.cli import main as r2
from router_core import Router
from router_core.checkpoint import MANIFEST

TOPICS = ["photosynthesis", "volcanoes", "tax law", "sorting algorithms", "the French "
          "revolution", "black holes", "sourdough", "chess openings", "rust lifetimes",
          "glaciers", "vaccines", "jazz harmony"]


def picks(ckpt: Path, texts: list[str]) -> list[str]:
    router = Router.load(ckpt, {"kind": "hash", "dim": HASH_DIM})
    return [router.route(t, lambda_=0.0).model for t in texts]


def test_refit_moves_decisions_away_from_an_arm_with_bad_feedback(
        make_gateway: Any, tmp_path: Path, standin: Any, capsys: Any) -> None:
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    db = tmp_path / "log.sqlite3"
    settings = gateway_settings(ckpt, standin.base_url)
    settings["log"] = {"path": str(db), "flush_interval_s": 0.05}
    settings["explore"] = {"rate": 0.5, "temperature": 5.0, "seed": 3}
    gw = make_gateway(settings)
    client = gw.client()
    for i in range(120):
        raw = client.chat.completions.with_raw_response.create(
            # fixed request ids: the refit holds out records by a hash of the id, so random
            # ids made the held-out part (and, 1 run in 3, its match count) vary from run to run
            model="r2-auto", extra_headers={"x-r2-lambda": "0", "x-request-id": f"refit-{i:04d}"},
            messages=[{"role": "user", "content": f"Tell me about {TOPICS[i % 12]} ({i})"}])
        model = raw.headers["x-r2-model"]
        score = 0.1 if model == "strong" else 0.9  # users hate the "strong" model's answers
        client.post("/feedback", body={"request_id": raw.headers["x-request-id"],
                                       "score": score}, cast_to=object)
    assert gw.app.state.decision_log.flush()
    served = sqlite3.connect(db).execute(
        "SELECT model, COUNT(*) FROM decisions GROUP BY model").fetchall()
    assert dict(served)["weak"] >= 20  # exploration gave the other model traffic

    new = [f"What do you know about {t}?" for t in TOPICS]
    assert picks(ckpt, new) == ["strong"] * len(new)
    capsys.readouterr()
    assert r2(["train", "--from-log", str(db), "--checkpoint", str(ckpt),
               "--out", str(tmp_path / "refit")]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():  # the refit's report, for `pytest -s`
        print(out)
    assert "validation AUDC (off-policy IPS estimate" in out
    line = next(x for x in out.splitlines() if x.startswith("mean feedback at the logged"))
    base_value, refit_value = (float(v) for v in re.findall(r"(?:base|refit) ([0-9.]+)", line))
    assert base_value < 0.2 and refit_value > 0.8, line
    after = picks(tmp_path / "refit", new)
    assert after.count("weak") >= len(new) - 1, after
    manifest = json.loads((tmp_path / "refit" / MANIFEST).read_text())
    assert manifest["provenance"]["refit_from_log"]["records"] == 120
    assert "decision log" in manifest["tradeoff"]["source"]

    assert r2(["calibrate", "--checkpoint", str(ckpt), "--from-log", str(db),
               "--out", str(tmp_path / "cal")]) == 0
    table = json.loads((tmp_path / "cal" / MANIFEST).read_text())["tradeoff"]
    assert table["queries"] == 120 and table["source"].startswith("decision log")


def test_from_log_needs_a_base_and_scored_records(tmp_path: Path, capsys: Any) -> None:
    from gateway.decisionlog import open_store

    db = tmp_path / "empty.sqlite3"
    open_store(str(db)).close()
    assert r2(["train", "--from-log", str(db), "--out", str(tmp_path / "x")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    assert r2(["train", "--from-log", str(db), "--checkpoint", str(ckpt),
               "--out", str(tmp_path / "x")]) == 2
    assert "no feedback-scored records" in capsys.readouterr().err


def test_train_on_outcome_files_then_the_log(tmp_path: Path, capsys: Any) -> None:
    """`r2 train DATA --from-log DB`: the outcome files train the base, the log corrects it."""
    from gateway.decisionlog import open_store
    from gateway.decisionlog.schema import INSERTED
    from router_core import make_embedder
    from router_core.training.synthetic import synthetic_meta, synthetic_rows, write_outcomes

    data = write_outcomes(tmp_path / "syn.jsonl", synthetic_rows(n_queries=80, seed=4),
                          synthetic_meta())
    embedder = make_embedder({"kind": "hash"})
    prompts = [f"Question {i}: solve equation variable root {TOPICS[i % 12]}" for i in range(60)]
    db = tmp_path / "log.sqlite3"
    store = open_store(str(db))
    records = []
    for i, text in enumerate(prompts):
        model = "large" if i % 2 else "small"
        row = {name: None for name in INSERTED}
        row.update(request_id=f"r2-{i:04d}", ts=1000.0 + i, model=model, policy="256",
                   embedding=np.asarray(embedder.embed([text])[0], "<f2").tobytes(),
                   embedding_kind="float16", status=200, propensity=0.5, input_tokens=30,
                   completion_tokens=100, cost_usd=1e-4, **{"lambda": 0.0})
        records.append(tuple(row.values()))
    store.write(records, [])
    for i in range(60):  # the users of this deployment hate "large"'s answers
        store.feedback(f"r2-{i:04d}", 0.0 if i % 2 else 1.0, None)
    store.close()
    out = tmp_path / "refit"
    assert r2(["train", str(data), "--from-log", str(db), "--out", str(out), "--embedder",
               "hash", "--variant", "ridge", "--folds", "0", "--no-progress",
               "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "log: 60 feedback-scored records over 2 served arms" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["provenance"]["refit_from_log"]["records"] == 60
    router = Router.load(out, {"kind": "hash"})
    chosen = [router.route(p, lambda_=0.0).model for p in prompts[:12]]
    assert chosen.count("small") >= 10, chosen
