"""The decision log on a real PostgreSQL server: records, feedback, report, and a database
killed under traffic (requests keep succeeding; records are dropped and counted, and logging
resumes when the server is back)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from helpers import gateway_settings, tiny_checkpoint
from pg import PostgresServer, postgres_server

from gateway.cli import main as r2


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def test_postgres_store_end_to_end_and_killed_server(make_gateway: Any, tmp_path: Path,
                                                    standin: Any, pg: PostgresServer) -> None:
    settings = gateway_settings(tiny_checkpoint(tmp_path / "ckpt"), standin.base_url)
    settings["log"] = {"database_url": pg.url, "flush_interval_s": 0.05}
    gw = make_gateway(settings)
    client = gw.client()
    log = gw.app.state.decision_log
    ids = []
    for models in ("strong", "strong", "weak"):
        raw = client.chat.completions.with_raw_response.create(
            model="r2-auto", messages=[{"role": "user", "content": "Hi there"}],
            extra_headers={"x-r2-lambda": "0", "x-r2-models": models})
        ids.append(raw.headers["x-request-id"])
    assert client.post("/feedback", body={"request_id": ids[2], "score": 0.75},
                       cast_to=object)["score"] == 0.75
    with pytest.raises(openai.NotFoundError):
        client.post("/feedback", body={"request_id": "r2-unknown", "score": 0.1},
                    cast_to=object)
    out = tmp_path / "rep.json"
    assert r2(["report", "--log", pg.url, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["requests"] == 3
    arms = {a["model"]: a for a in rep["by_arm"]}
    assert arms["strong"]["requests"] == 2 and arms["weak"]["feedback_mean"] == 0.75
    assert rep["saving"]["baseline_arm"].startswith("strong@")

    pg.stop("immediate")  # the database dies under traffic
    try:
        start = time.perf_counter()
        for _ in range(5):
            client.chat.completions.create(model="r2-auto",
                                           messages=[{"role": "user", "content": "Hi"}])
        assert time.perf_counter() - start < 5.0  # requests never wait for the store
        log.flush()
        metrics = gw.app.state.service.metrics.render().decode()
        assert 'r2_decision_log_records_total{result="store_error"}' in metrics
    finally:
        pg.start()
    time.sleep(2.5)  # the writer reopens after its back-off
    client.chat.completions.create(model="r2-auto", messages=[{"role": "user", "content": "x"}])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log.flush()
        if r2(["report", "--log", pg.url, "--json", str(out)]) == 0 and \
                json.loads(out.read_text())["requests"] >= 4:
            break
        time.sleep(0.5)
    assert json.loads(out.read_text())["requests"] >= 4
