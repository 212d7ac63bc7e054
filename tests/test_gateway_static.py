"""A shipped `*-static` checkpoint served with the `static-minilm` embedder, through the real
OpenAI SDK against the recording stand-in: the gateway's decisions are the offline router's on
the same checkpoint and embedder; a MiniLM embedder is refused for it at start-up; `r2 route`
and `r2 serve` take `--embedder`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import serve_without_listening

from router_core import Router

CKPT = Path(__file__).resolve().parents[1] / "checkpoints" / "mcqa_concise_cot-static"
MODELS = ("gpt-3.5-turbo", "gpt-4")
PROMPTS = [
    "What is 17 * 23? Answer with the number.",
    "A train leaves at 3 pm at 60 km/h; a second leaves at 4 pm at 90 km/h on the same track. "
    "When does the second catch the first? Options: A) 5 pm B) 6 pm C) 7 pm D) 8 pm",
    "Which gas do plants absorb for photosynthesis? A) oxygen B) nitrogen C) carbon dioxide",
    "Prove that the square root of 2 is irrational.",
]


def static_settings(base_url: str, kind: str = "static-minilm") -> dict[str, Any]:
    return {
        "checkpoint": str(CKPT),
        "embedder": {"kind": kind},
        "default_tradeoff": 0.5,
        "deployments": [{"name": m, "model": f"openai/up-{m}", "api_base": base_url,
                         "timeout_s": 5.0} for m in MODELS],
    }


def test_static_checkpoint_routes_through_the_gateway_as_offline(make_gateway: Any,
                                                                 standin: Any) -> None:
    gw = make_gateway(static_settings(standin.base_url))
    assert gw.service.embedder.id == "static-minilm-l6-v2-m2v256-int8"
    router = Router.load(CKPT, {"kind": "static-minilm"})
    client = gw.client()
    seen = set()
    for prompt in PROMPTS:
        for tradeoff in ("0", "0.5", "1"):
            raw = client.chat.completions.with_raw_response.create(
                model="r2-auto", messages=[{"role": "user", "content": prompt}],
                extra_headers={"x-r2-tradeoff": tradeoff})
            completion = raw.parse()
            lam = float(raw.headers["x-r2-lambda"])
            expected = router.route(prompt, lam)
            assert raw.headers["x-r2-model"] == expected.model == completion.model
            assert raw.headers["x-r2-budget"] == str(expected.budget)
            assert float(raw.headers["x-r2-predicted-quality"]) == pytest.approx(
                expected.chosen.predicted_quality, abs=1e-4)
            sent = standin.received[-1]["body"]
            assert sent["model"] == f"up-{expected.model}"
            policy = next(p for p in router.checkpoint.policies if p.name == expected.budget)
            assert sent["max_tokens"] == policy.max_tokens
            seen.add((expected.model, expected.budget))
    assert len(seen) >= 2  # the trade-off moves the decision: the heads read the embedding
    router.embedder.close()  # type: ignore[union-attr]


def test_static_checkpoint_with_the_minilm_embedder_is_refused(standin: Any) -> None:
    from gateway.app import build_app
    from gateway.config import parse_settings
    from router_core import R2Error

    with pytest.raises(R2Error, match="256-d embeddings but the configured embedder gives 384-d"):
        build_app(parse_settings(static_settings(standin.base_url, kind="local")))


def test_r2_route_takes_the_embedder_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.commands import route

    parser = argparse.ArgumentParser()
    route.register(parser.add_subparsers())
    args = parser.parse_args(["route", PROMPTS[0], "--checkpoint", str(CKPT), "--embedder",
                              "static-minilm", "--tradeoff", "0", "--json"])
    assert args.func(args) == 0
    decision = json.loads(capsys.readouterr().out)
    router = Router.load(CKPT, {"kind": "static-minilm"})
    assert decision["model"] == router.route(PROMPTS[0], decision["lambda"]).model
    # without the flag the checkpoint's embedder id implies the same embedder
    args = parser.parse_args(["route", PROMPTS[0], "--checkpoint", str(CKPT), "--json",
                              "--tradeoff", "0"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["model"] == decision["model"]


def test_r2_serve_embedder_flag_replaces_the_config_section(
        tmp_path: Path, standin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(static_settings(standin.base_url, kind="local")))
    app = serve_without_listening(monkeypatch, "--config", str(cfg), "--embedder",
                                  "static-minilm", "--port", "0")
    assert app.state.service.embedder.id == "static-minilm-l6-v2-m2v256-int8"
