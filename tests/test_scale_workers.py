"""`r2 serve --workers 2`: two processes on one port, their metrics summed on every scrape
(prometheus-client's multiprocess mode), the request-head limits still enforced in each."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import gateway_settings, tiny_checkpoint
from scale_helpers import GatewayProcess, metric

USER = [{"role": "user", "content": "Hello, workers."}]


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, _standin_server: Any
            ) -> Iterator[tuple[GatewayProcess, Path]]:
    workdir = tmp_path_factory.mktemp("workers")
    settings = gateway_settings(tiny_checkpoint(workdir / "ckpt"), _standin_server[0].base_url)
    settings["server"] = {"max_headers": 50, "workers": 1}
    metrics_dir = workdir / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # left by an earlier run
    gw = GatewayProcess(settings, workdir, "w", "--workers", "2",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        yield gw.wait_ready(), metrics_dir
    finally:
        gw.stop()


def test_two_workers_serve_one_port_and_report_summed_metrics(
        workers: tuple[GatewayProcess, Path]) -> None:
    gw, metrics_dir = workers
    children = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    assert len(children) >= 2
    client = gw.client("any-key")
    for _ in range(30):
        client.chat.completions.create(model="r2-auto", messages=USER)
    pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
    assert "999999" not in pids  # the stale file was removed at start
    assert len(pids) == 2, pids  # both workers counted requests
    # Whichever worker answers the scrape, it reports all workers' requests.
    for _ in range(6):
        text = gw.get("/metrics").text
        assert 'r2_requests_total{endpoint="/v1/chat/completions",status="200"} 30.0' in text
        assert metric(text, "r2_decisions_total") == 30


def test_each_worker_keeps_the_request_head_limits(workers: tuple[GatewayProcess, Path]) -> None:
    gw, _ = workers
    head = "GET /healthz HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"x-h{i}: v\r\n" for i in range(60)) + "\r\n"
    for _ in range(4):  # whichever worker accepts
        with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
            s.sendall(head.encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 431")
