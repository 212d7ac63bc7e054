"""The cost-quality knobs through the real OpenAI SDK, and `r2 calibrate` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from helpers import gateway_settings
from tradeoff_helpers import PROMPTS, varied_checkpoint

from gateway.cli import main
from gateway.config import ConfigError, parse_settings
from router_core import HashEmbedder, load_checkpoint

USER = [{"role": "user", "content": PROMPTS[3]}]
HASH = '{"kind": "hash", "dim": 64}'


def calibrated(tmp_path: Path, name: str = "ck") -> Path:
    ckpt = varied_checkpoint(tmp_path / name)
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(PROMPTS) + "\n")
    assert main(["calibrate", str(queries), "--checkpoint", str(ckpt), "--embedder", HASH,
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    return ckpt


def send(gw: Any, **headers: str) -> Any:
    return gw.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, extra_headers=headers)


def error_of(gw: Any, **headers: str) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        send(gw, **headers)
    return info.value


def test_tradeoff_header_maps_through_the_table_and_is_echoed(
        make_gateway: Any, tmp_path: Path) -> None:
    ckpt = calibrated(tmp_path)
    table = load_checkpoint(ckpt).tradeoff
    assert table is not None
    gw = make_gateway(ckpt=ckpt)
    costs = []
    for t in ("0", "0.5", "1"):
        raw = send(gw, **{"x-r2-tradeoff": t})
        assert raw.headers["x-r2-tradeoff"] == repr(float(t))
        assert float(raw.headers["x-r2-lambda"]) == pytest.approx(table.lambda_for(float(t)))
        costs.append(float(raw.headers["x-r2-predicted-cost-usd"]))
    assert costs[0] >= costs[1] >= costs[2] and costs[0] > costs[2]


def test_usd_per_quality_header_sets_lambda(make_gateway: Any, tmp_path: Path) -> None:
    gw = make_gateway(ckpt=varied_checkpoint(tmp_path / "ck"))
    raw = send(gw, **{"x-r2-usd-per-quality": "0.25"})
    assert float(raw.headers["x-r2-lambda"]) == pytest.approx(1 / 1.25)
    assert "x-r2-tradeoff" not in raw.headers
    raw = send(gw, **{"x-r2-lambda": "0.3"})
    assert raw.headers["x-r2-lambda"] == "0.3"


@pytest.mark.parametrize(("headers", "param"), [
    ({"x-r2-tradeoff": "NaN"}, "x-r2-tradeoff"),
    ({"x-r2-tradeoff": "-0.1"}, "x-r2-tradeoff"),
    ({"x-r2-tradeoff": "1.01"}, "x-r2-tradeoff"),
    ({"x-r2-tradeoff": "half"}, "x-r2-tradeoff"),
    ({"x-r2-usd-per-quality": "-1"}, "x-r2-usd-per-quality"),
    ({"x-r2-usd-per-quality": "0"}, "x-r2-usd-per-quality"),
    ({"x-r2-usd-per-quality": "nan"}, "x-r2-usd-per-quality"),
    ({"x-r2-usd-per-quality": "inf"}, "x-r2-usd-per-quality"),
    ({"x-r2-lambda": "-0.5"}, "x-r2-lambda"),
    ({"x-r2-tradeoff": "0.5", "x-r2-lambda": "0.5"}, None),
    ({"x-r2-tradeoff": "0.5", "x-r2-usd-per-quality": "1"}, None),
    ({"x-r2-lambda": "0.5", "x-r2-usd-per-quality": "1"}, None),
])
def test_bad_knob_values_are_400_in_the_envelope(make_gateway: Any, standin: Any,
                                                 tmp_path: Path, headers: dict[str, str],
                                                 param: str | None) -> None:
    gw = make_gateway(ckpt=calibrated(tmp_path))
    err = error_of(gw, **headers)
    assert err.status_code == 400
    body = err.response.json()["error"]
    assert body["type"] == "invalid_request_error"
    if param is None:
        assert body["code"] == "conflicting_headers"
        assert "one cost-quality knob" in body["message"]
    else:
        assert body["param"] == param
    assert standin.received == []


def test_checkpoint_without_table_refuses_tradeoff(make_gateway: Any, tmp_path: Path) -> None:
    gw = make_gateway(ckpt=varied_checkpoint(tmp_path / "plain"))
    err = error_of(gw, **{"x-r2-tradeoff": "0.5"})
    body = err.response.json()["error"]
    assert body["code"] == "tradeoff_not_calibrated" and body["param"] == "x-r2-tradeoff"
    assert "r2 calibrate" in body["message"]
    # the other knobs still work there
    assert send(gw, **{"x-r2-usd-per-quality": "1"}).headers["x-r2-lambda"] == "0.5"


def test_default_tradeoff_from_config(make_gateway: Any, standin: Any, tmp_path: Path) -> None:
    ckpt = calibrated(tmp_path)
    table = load_checkpoint(ckpt).tradeoff
    assert table is not None
    settings = gateway_settings(ckpt, standin.base_url)
    del settings["default_lambda"]
    settings["default_tradeoff"] = 0.25
    gw = make_gateway(settings)
    raw = send(gw)
    assert raw.headers["x-r2-tradeoff"] == "0.25"
    assert float(raw.headers["x-r2-lambda"]) == pytest.approx(table.lambda_for(0.25))
    # neither default given: a calibrated checkpoint starts at the balanced 0.5
    del settings["default_tradeoff"]
    assert send(make_gateway(dict(settings))).headers["x-r2-tradeoff"] == "0.5"


def test_config_knob_errors(standin: Any, tmp_path: Path) -> None:
    from gateway.app import build_app

    plain = varied_checkpoint(tmp_path / "plain")
    both = {**gateway_settings(plain, standin.base_url), "default_tradeoff": 0.5}
    with pytest.raises(ConfigError, match="not both"):
        parse_settings(both)
    paced = {**gateway_settings(plain, standin.base_url), "pacing": {"usd_per_hour": 1}}
    with pytest.raises(ConfigError, match="pacing"):
        parse_settings(paced)
    no_table = gateway_settings(plain, standin.base_url)
    del no_table["default_lambda"]
    no_table["default_tradeoff"] = 0.5
    with pytest.raises(ConfigError, match="r2 calibrate"):
        build_app(parse_settings(no_table))


def test_pacing_gauges_and_default_moves(make_gateway: Any, standin: Any,
                                         tmp_path: Path) -> None:
    ckpt = calibrated(tmp_path)
    settings = gateway_settings(ckpt, standin.base_url)
    del settings["default_lambda"]
    settings["pacing"] = {"usd_per_hour": 1e-6, "time_constant_s": 60}
    gw = make_gateway(settings)
    pacer = gw.service.pacing
    now = [pacer.clock()]
    pacer.clock = lambda: now[0]  # simulated time from here on
    for _ in range(40):  # far over a tiny target: the default walks to the cheapest end
        now[0] += 5.0
        raw = send(gw)
    assert float(raw.headers["x-r2-tradeoff"]) == 1.0
    assert send(gw, **{"x-r2-tradeoff": "0"}).headers["x-r2-tradeoff"] == "0.0"  # own knob
    metrics = httpx_get(gw.url + "/metrics")
    assert "r2_pacing_tradeoff 1.0" in metrics
    assert "r2_pacing_target_unreachable 1.0" in metrics
    assert "r2_pacing_spend_usd_per_hour" in metrics


def httpx_get(url: str) -> str:
    import httpx

    return httpx.get(url).text


# -- r2 calibrate -------------------------------------------------------------------------------
def test_calibrate_prompt_file_query_log_and_embeddings(tmp_path: Path,
                                                        capsys: Any) -> None:
    src = varied_checkpoint(tmp_path / "src")
    before = (src / "manifest.json").read_text()
    log = tmp_path / "queries.jsonl"
    log.write_text("\n".join(json.dumps({"routing_text": p} if i % 2 else {"prompt": p})
                             for i, p in enumerate(PROMPTS)) + "\n")
    assert main(["calibrate", str(log), "--checkpoint", str(src), "--out",
                 str(tmp_path / "out"), "--embedder", HASH, "--no-progress",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (src / "manifest.json").read_text() == before  # --out leaves the source alone
    table = load_checkpoint(tmp_path / "out").tradeoff
    assert table is not None and table.queries == len(PROMPTS)
    assert "tradeoff 0.5" in capsys.readouterr().out
    # the same queries as precomputed embeddings, updating in place
    emb = HashEmbedder(64).embed(PROMPTS)
    np.save(tmp_path / "emb.npy", emb)
    assert main(["calibrate", "--embeddings", str(tmp_path / "emb.npy"), "--checkpoint",
                 str(src), "--input-tokens", str(tmp_path / "queries.jsonl")]) == 2
    counts = tmp_path / "tokens.txt"
    from router_core import token_counter

    count = token_counter("words1.3")
    counts.write_text("\n".join(str(count(p)) for p in PROMPTS))
    assert main(["calibrate", "--embeddings", str(tmp_path / "emb.npy"), "--checkpoint",
                 str(src), "--input-tokens", str(counts)]) == 0
    in_place = load_checkpoint(src).tradeoff
    assert in_place is not None
    assert in_place.lambda_ == pytest.approx(table.lambda_)
    assert [f.name for f in src.iterdir() if f.name.startswith(".")] == []


def test_calibrate_errors(tmp_path: Path, capsys: Any) -> None:
    src = varied_checkpoint(tmp_path / "src")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": 1}\n')
    assert main(["calibrate", str(bad), "--checkpoint", str(src), "--embedder", HASH]) == 2
    assert "routing_text or prompt" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(src)]) == 2
    assert load_checkpoint(src).tradeoff is None


def test_route_cli_knobs(tmp_path: Path, capsys: Any) -> None:
    ckpt = calibrated(tmp_path)
    np.save(tmp_path / "e.npy", HashEmbedder(64).embed(PROMPTS[:4]))
    base = ["route", "--checkpoint", str(ckpt), "--embeddings", str(tmp_path / "e.npy"),
            "--input-tokens", "20"]
    capsys.readouterr()
    assert main([*base, "--tradeoff", "0"]) == 0
    dear = [json.loads(x)["predicted_cost_usd"] for x in capsys.readouterr().out.splitlines()]
    assert main([*base, "--tradeoff", "1"]) == 0
    cheap = [json.loads(x)["predicted_cost_usd"] for x in capsys.readouterr().out.splitlines()]
    assert sum(cheap) < sum(dear)
    assert main([*base, "--usd-per-quality", "1e-9"]) == 0
    assert main([*base, "--tradeoff", "0.5", "--lambda", "0.5"]) == 2
    assert main([*base, "--tradeoff", str(math.nan)]) == 2
    plain = varied_checkpoint(tmp_path / "plain")
    assert main(["route", "--checkpoint", str(plain), "--embeddings", str(tmp_path / "e.npy"),
                 "--input-tokens", "20", "--tradeoff", "0.5"]) == 2
    assert "r2 calibrate" in capsys.readouterr().err
