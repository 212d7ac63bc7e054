"""Shared by the dashboard tests: a calibrated checkpoint whose choice depends on the trade-off,
a gateway over it with the stand-in upstream, traffic through the real OpenAI SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from helpers import gateway_settings
from tradeoff_helpers import PROMPTS, varied_checkpoint

from gateway.cli import main

HASH = '{"kind": "hash", "dim": 64}'
KEY = "ui-test-key"
#: Long enough that the 16- and 64-word budgets cut it (finish_reason "length").
LONG_TEXT = " ".join(f"word{i}" for i in range(120))


def calibrated_checkpoint(tmp_path: Path) -> Path:
    ckpt = varied_checkpoint(tmp_path / "ui-ckpt")
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(PROMPTS) + "\n")
    assert main(["calibrate", str(queries), "--checkpoint", str(ckpt), "--embedder", HASH,
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    return ckpt


def ui_gateway(make_gateway: Any, standin: Any, tmp_path: Path, auth: bool = False,
               pacing: float | None = None) -> Any:
    settings = gateway_settings(calibrated_checkpoint(tmp_path), standin.base_url)
    del settings["default_lambda"]  # a calibrated checkpoint defaults to trade-off 0.5
    if auth:
        settings["server"]["api_keys"] = [KEY]
    if pacing is not None:
        settings["pacing"] = {"usd_per_hour": pacing}
    return make_gateway(settings)


def route(gw: Any, prompt: str, key: str | None = None, **headers: str) -> dict[str, Any]:
    if key:
        headers["authorization"] = f"Bearer {key}"
    r = httpx.post(f"{gw.url}/v1/route", headers=headers,
                   json={"messages": [{"role": "user", "content": prompt}]})
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def tradeoff_dependent_prompt(gw: Any, key: str | None = None) -> tuple[str, str, str]:
    """A prompt whose chosen arm at trade-off 0 differs from the one at 1, and both arms."""
    for prompt in PROMPTS:
        a, b = (route(gw, prompt, key, **{"x-r2-tradeoff": t}) for t in ("0", "1"))
        arm_a, arm_b = f"{a['model']}@{a['budget']}", f"{b['model']}@{b['budget']}"
        if arm_a != arm_b:
            return prompt, arm_a, arm_b
    raise AssertionError("no prompt's choice depends on the trade-off")


def traffic(gw: Any, standin: Any, key: str = "unused") -> dict[str, int]:
    """Real requests through the OpenAI SDK: several trade-offs (so several arms), answers cut
    at short budgets, one fallback and one upstream error. Returns what was sent."""
    import openai
    from standin import Behaviour

    client = gw.client(api_key=key)
    standin.default = Behaviour(text=LONG_TEXT)
    sent = {"ok": 0, "errors": 0, "fallbacks": 0}
    for i, t in enumerate(("0", "0.3", "0.5", "0.7", "1", "0", "1", "0.5")):
        client.chat.completions.create(
            model="r2-auto", messages=[{"role": "user", "content": PROMPTS[i]}],
            extra_headers={"x-r2-tradeoff": t})
        sent["ok"] += 1
    # the strong model fails once: the request falls back to the weak one
    standin.behaviours["up-strong"] = Behaviour(status=500)
    raw = client.chat.completions.with_raw_response.create(
        model="r2-auto", messages=[{"role": "user", "content": PROMPTS[10]}],
        extra_headers={"x-r2-tradeoff": "0"})
    assert raw.headers.get("x-r2-fallback", "").startswith("upstream-error")
    sent["ok"] += 1
    sent["fallbacks"] += 1
    # a named deployment that fails: no fallback for a named model, a 5xx reaches the client
    try:
        client.chat.completions.create(model="strong",
                                       messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError:
        sent["errors"] += 1
    standin.behaviours.clear()
    return sent


def traffic_for(gw: Any, standin: Any, minutes: float, key: str = "unused") -> None:
    """Spread SDK traffic over `minutes` (for the screenshots: charts with a history). Every
    10 s a burst of 3-12 requests at random trade-offs; now and then the strong model fails."""
    import random
    import time

    from standin import Behaviour

    rng = random.Random(7)
    client = gw.client(api_key=key)
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        standin.default = Behaviour(text=" ".join(f"w{i}" for i in range(rng.choice((8, 40, 120)))))
        if rng.random() < 0.15:
            standin.behaviours["up-strong"] = Behaviour(status=503)
        for _ in range(rng.randint(3, 12)):
            client.chat.completions.create(
                model="r2-auto", extra_headers={"x-r2-tradeoff": f"{rng.random():.2f}"},
                messages=[{"role": "user", "content": rng.choice(PROMPTS)}])
        standin.behaviours.clear()
        time.sleep(10)
