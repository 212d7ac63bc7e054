"""End to end through a real llama.cpp server (gemma-3-270m): plumbing, not answer quality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import gateway_settings, tiny_checkpoint

pytestmark = pytest.mark.slow
USER = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture
def llama_gateway(tmp_path: Path, make_gateway: Any, llama_base_url: str) -> Any:
    ck = tiny_checkpoint(tmp_path / "ck", budgets=(8, 32),
                         quality={"strong": [0.5, 0.9, 0.3], "weak": [0.2, 0.3, 0.1]})
    settings = gateway_settings(ck, llama_base_url, timeout_s=120.0)
    return make_gateway(settings)


def test_r2_auto_through_llama_cpp_respects_budget(llama_gateway: Any) -> None:
    raw = llama_gateway.client().chat.completions.with_raw_response.create(
        model="r2-auto", messages=USER, temperature=0, extra_headers={"x-r2-lambda": "0"})
    completion = raw.parse()
    assert raw.headers["x-r2-model"] == "strong"
    assert raw.headers["x-r2-budget"] == "32"
    assert completion.model == "strong"
    assert completion.usage is not None
    assert 0 <= completion.usage.completion_tokens <= 32
    assert completion.usage.prompt_tokens > 0
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_streaming_through_llama_cpp(llama_gateway: Any) -> None:
    with llama_gateway.client().chat.completions.with_streaming_response.create(
            model="r2-auto", messages=USER, stream=True, max_tokens=8,
            extra_headers={"x-r2-lambda": "0"}) as resp:
        assert resp.headers["x-r2-budget"] == "8"
        chunks = list(resp.parse())
    assert chunks, "the stream produced no chunks"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    assert all(c.model == "strong" for c in chunks)


def test_plain_proxy_to_llama_cpp(llama_gateway: Any) -> None:
    out = llama_gateway.client().chat.completions.create(model="weak", messages=USER,
                                                         max_tokens=5, temperature=0)
    assert out.model == "weak"
    assert out.usage is not None and out.usage.completion_tokens <= 5


def test_legacy_completions_through_llama_cpp(llama_gateway: Any) -> None:
    client = llama_gateway.client()
    raw = client.completions.with_raw_response.create(
        model="r2-auto", prompt="Name three colours of the rainbow.", temperature=0,
        extra_headers={"x-r2-lambda": "0"})
    done = raw.parse()
    assert raw.headers["x-r2-model"] == "strong" and raw.headers["x-r2-budget"] == "32"
    assert done.object == "text_completion" and done.model == "strong"
    assert done.usage is not None and 0 <= done.usage.completion_tokens <= 32
    assert done.choices[0].text.strip()
    chunks = list(client.completions.create(model="weak", prompt="Say hello.", max_tokens=5,
                                            stream=True))
    assert chunks and all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_r2_chat_cli_routes_and_generates(tmp_path: Path, llama_base_url: str) -> None:
    import yaml

    ck = tiny_checkpoint(tmp_path / "ck", budgets=(8, 32))
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump(gateway_settings(ck, llama_base_url, timeout_s=120.0)))
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "chat", "Say hello.",
                           "--config", str(cfg), "--lambda", "0", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["decision"]["model"] == "strong"
    assert out["usage"]["completion_tokens"] <= out["decision"]["budget"]
