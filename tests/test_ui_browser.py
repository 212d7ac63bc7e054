"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
Playwright, against a gateway with the stand-in upstream and traffic from the OpenAI SDK.

`R2_UI_SCREENSHOTS=DIR` writes the screenshots of docs/img/ (ui-live.png, ui-playground.png)
there after the traffic."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import skip_or_fail
from test_ui_api import SUMMARY, FakeLog
from ui_helpers import (
    KEY,
    route,
    tradeoff_dependent_prompt,
    traffic,
    traffic_for,
    ui_gateway,
)

CHROMIUM = os.environ.get("R2_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = os.environ.get("R2_UI_SCREENSHOTS")
#: With screenshots, minutes of extra traffic first, so that the charts have a history.
TRAFFIC_MINUTES = float(os.environ.get("R2_UI_TRAFFIC_MINUTES") or 0)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (it is in the dev extra)")
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"no chromium at {CHROMIUM} (scripts/install.sh installs Debian's)")
    with sync_playwright() as p:
        # The system browser: `playwright install` (a download) is never needed.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console",
                     lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.close()


def chosen_arm(pg: Any, previous: str | None = None) -> str:
    """The playground's chosen arm, once it differs from `previous`."""
    pg.wait_for_function(
        "prev => { const a = document.getElementById('chosen').dataset.arm;"
        " return a && a !== prev; }", arg=previous or "")
    return str(pg.get_attribute("#chosen", "data-arm"))


def wait_arm(pg: Any, arm: str) -> None:
    pg.wait_for_function("arm => document.getElementById('chosen').dataset.arm === arm",
                         arg=arm)


def shot(pg: Any, name: str, selector: str | None = None) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        target = pg.locator(selector) if selector else pg
        target.screenshot(path=str(Path(SHOTS) / name), **({} if selector else
                                                            {"full_page": True}))


def test_page_loads_clean_and_charts_render_after_traffic(
        make_gateway: Any, standin: Any, tmp_path: Path, page: Page) -> None:
    gw = ui_gateway(make_gateway, standin, tmp_path, pacing=0.5)
    if SHOTS and TRAFFIC_MINUTES:
        traffic_for(gw, standin, TRAFFIC_MINUTES)
    sent = traffic(gw, standin)
    pg = page.page
    pg.goto(f"{gw.url}/ui")
    pg.wait_for_selector("#chart-share rect.share")
    totals = httpx.get(f"{gw.url}/ui/api/live").json()["totals"]
    assert pg.text_content("#t-requests") == str(totals["requests"])
    assert pg.text_content("#t-fallbacks") == str(totals["fallbacks"])
    if not TRAFFIC_MINUTES:
        assert totals["requests"] == sent["ok"] + sent["errors"] and totals["fallbacks"] == 1
    # every chart drew marks, not its "no traffic" message
    for sel in ("#chart-rpm rect.bar", "#chart-latency path.line", "#chart-spend path.line",
                "#chart-trunc rect.bar", "#chart-share rect.share", "#chart-spend line.target"):
        assert pg.locator(sel).count() >= 1, sel
    assert pg.locator(".chart text.empty").count() == 0
    heights = pg.eval_on_selector_all("#chart-rpm rect.bar",
                                      "els => els.map(e => e.getBBox().height)")
    assert max(heights) > 10
    arms = {a["arm"] for a in httpx.get(f"{gw.url}/ui/api/live").json()["arms"]}
    legend = pg.text_content("#legend-share") or ""
    assert all(arm in legend for arm in arms)
    assert "tracking" in (pg.text_content("#t-pacing-label") or "") \
        or "target" in (pg.text_content("#t-pacing-label") or "")
    # the saving panel says the decision log is off
    assert "decision log off" in (pg.text_content("#savings") or "")
    chosen_arm(pg)
    shot(pg, "ui-live.png")
    assert page.errors == []


def test_slider_changes_the_chosen_arm(make_gateway: Any, standin: Any, tmp_path: Path,
                                       page: Page) -> None:
    gw = ui_gateway(make_gateway, standin, tmp_path)
    prompt, quality_arm, cheap_arm = tradeoff_dependent_prompt(gw)
    pg = page.page
    pg.goto(f"{gw.url}/ui")
    pg.fill("#prompt", prompt)
    pg.fill("#tradeoff", "0")
    wait_arm(pg, quality_arm)
    pg.fill("#tradeoff", "1")
    wait_arm(pg, cheap_arm)
    assert pg.text_content("#tradeoff-value") == "1.00"
    # every candidate is drawn, the chosen one ringed
    candidates = route(gw, prompt, **{"x-r2-tradeoff": "1"})["candidates"]
    assert pg.locator("#chart-candidates circle.cand").count() == len(candidates) == 6
    assert pg.locator("#chart-candidates circle.chosen").count() == 1
    # a willingness to pay replaces the slider
    wtp = route(gw, prompt, **{"x-r2-usd-per-quality": "1000"})
    expected = f"{wtp['model']}@{wtp['budget']}"
    assert expected != cheap_arm  # a dear willingness to pay moves off the cheapest arm
    pg.fill("#wtp", "1000")
    wait_arm(pg, expected)
    assert pg.is_disabled("#tradeoff")
    pg.fill("#wtp", "")
    pg.fill("#tradeoff", "0")
    wait_arm(pg, quality_arm)
    assert pg.is_enabled("#tradeoff")
    # send for real: the answer and the x-r2-* headers
    pg.click("#send")
    pg.wait_for_function("() => document.getElementById('answer-text').textContent"
                         ".startsWith('Hello')")
    headers = pg.text_content("#answer-headers") or ""
    model, budget = quality_arm.rsplit("@", 1)
    assert f"x-r2-model{model}" in headers and f"x-r2-budget{budget}" in headers
    assert "x-r2-tradeoff0" in headers
    sent = standin.received[-1]["body"]
    assert sent["model"] == f"up-{model}"
    shot(pg, "ui-playground.png", "main > section:last-of-type")
    assert page.errors == []


def test_page_refuses_without_the_key_when_auth_is_on(
        make_gateway: Any, standin: Any, tmp_path: Path, page: Page) -> None:
    gw = ui_gateway(make_gateway, standin, tmp_path, auth=True)
    traffic(gw, standin, key=KEY)
    gw.app.state.decision_log = FakeLog()
    pg = page.page
    pg.goto(f"{gw.url}/ui")
    pg.wait_for_selector("#auth", state="visible")
    assert pg.is_hidden("#content")
    assert pg.locator(".chart svg").count() == 0
    assert "strong" not in pg.content()
    # the page's own fetches are refused too, not only hidden
    status = pg.evaluate("() => fetch('/ui/api/live').then(r => r.status)")
    assert status == 401
    pg.fill("#key", "wrong-key")
    pg.click("#keyform button[type=submit]")
    pg.wait_for_function("() => document.getElementById('meta').textContent === "
                         "'API key required'")
    assert pg.is_hidden("#content") and pg.locator(".chart svg").count() == 0
    # with the key: data, and the saving panel from the decision log
    pg.fill("#key", KEY)
    pg.click("#keyform button[type=submit]")
    pg.wait_for_selector("#chart-share rect.share")
    assert pg.is_hidden("#auth")
    pg.wait_for_selector("#saving-usd")
    assert pg.text_content("#saving-usd") == "$0.0160"
    assert SUMMARY["saving"]["baseline_arm"] in (pg.text_content("#savings") or "")
    chosen_arm(pg)
    # the key was kept for the next visit, and forgetting it locks the page again
    pg.reload()
    pg.wait_for_selector("#chart-share rect.share")
    pg.click("#forget")
    pg.wait_for_selector("#auth", state="visible")
    # only the refusals themselves were logged as errors (the browser logs every 401)
    assert page.errors and all("401" in e for e in page.errors), page.errors
