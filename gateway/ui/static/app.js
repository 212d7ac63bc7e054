"use strict";
// The dashboard's behaviour: fetch /ui/api/* with the key as a Bearer header, draw, poll;
// the playground routes through /v1/route on every slider move and sends for real on demand.
(function () {
  const C = window.R2Charts;
  const KEY = "r2-ui-key";
  const POLL_MS = 5000, SAVINGS_EVERY = 6, TOP_ARMS = 8;
  const $ = (id) => document.getElementById(id);
  let config = null, timer = null, polls = 0, routeSeq = 0, routeTimer = null, lastRoute = null;

  // -- formatting ---------------------------------------------------------------------------
  function usd(x) {
    if (x == null) return "-";
    if (x === 0) return "$0";
    if (Math.abs(x) < 0.01) return "$" + x.toPrecision(3);
    return "$" + x.toFixed(Math.abs(x) < 10 ? 4 : 2);
  }
  function ms(x) { return x == null ? "-" : x < 10 ? x.toFixed(1) + " ms" : x < 10000 ? Math.round(x) + " ms" : (x / 1000).toFixed(1) + " s"; }
  function pct(x) { return x == null ? "-" : (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%"; }
  function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }

  // -- the API ------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function headers(extra) {
    const h = Object.assign({ "content-type": "application/json" }, extra || {});
    const key = localStorage.getItem(KEY);
    if (key) h.authorization = "Bearer " + key;
    return h;
  }
  async function call(method, path, body, extra) {
    const resp = await fetch(path, { method, headers: headers(extra), cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const msg = data && data.error ? data.error.message : "HTTP " + resp.status;
      throw new HttpError(resp.status, msg);
    }
    return { data, headers: resp.headers };
  }
  function showError(err) {
    if (err instanceof HttpError && err.status === 401) {
      $("auth").hidden = false; $("content").hidden = true; $("error").hidden = true;
      $("meta").textContent = "API key required";
      stop();
      return;
    }
    $("error").hidden = false;
    $("error").textContent = "Could not load the dashboard: " + err.message;
  }

  // -- live ---------------------------------------------------------------------------------
  function drawLive(live) {
    const m = live.minutes, xs = m.map((b) => b.start), t = live.totals;
    // the last five minutes, the current one counted for the part of it that has passed
    const recent = m.slice(-5).reduce((a, b) => a + b.requests, 0);
    const span = Math.min(m.length, 5) - 1 + (live.now - m[m.length - 1].start) / live.bucket_s;
    $("t-rpm").textContent = (recent / Math.max(span, 1)).toFixed(1);
    $("t-requests").textContent = String(t.requests);
    $("t-p50").textContent = ms(t.p50_ms);
    $("t-p95").textContent = ms(t.p95_ms);
    $("t-errors").textContent = t.errors + " / " + t.client_errors;
    $("t-fallbacks").textContent = String(t.fallbacks);
    $("t-spend").textContent = usd(t.spend_usd) + " / " + usd(t.predicted_usd);
    const pacing = live.pacing;
    if (pacing) {
      $("t-pacing").textContent = usd(pacing.spend_usd_per_hour) + " of " + usd(pacing.target_usd_per_hour) + "/h";
      const state = pacing.unreachable === 1 ? "over target at the cheapest setting" :
        pacing.unreachable === -1 ? "under target at the dearest setting" : "tracking";
      $("t-pacing-label").textContent = "pacing: trade-off " + pacing.tradeoff.toFixed(2) + ", " + state;
    }
    $("key-target").hidden = !pacing;
    $("scope").textContent = "last 60 minutes, worker pid " + live.worker_pid + " only";

    C.timeSeries($("chart-rpm"), { xs, fmt: (v) => String(Math.round(v * 10) / 10),
      bars: { values: m.map((b) => b.requests), color: "#93b4f5" },
      lines: [{ values: m.map((b) => b.errors), color: "#d0342c" },
              { values: m.map((b) => b.fallbacks), color: "#e08a00" }] });
    C.timeSeries($("chart-latency"), { xs, fmt: (v) => ms(v),
      lines: [{ values: m.map((b) => b.p50_ms), color: "#2563eb", dotZero: true },
              { values: m.map((b) => b.p95_ms), color: "#7c3aed", dotZero: true }] });
    C.timeSeries($("chart-spend"), { xs, fmt: usd, emptyText: "no spend yet",
      target: pacing ? pacing.target_usd_per_hour / 60 : null,
      lines: [{ values: m.map((b) => (b.requests ? b.spend_usd : null)), color: "#16a34a" },
              { values: m.map((b) => (b.requests ? b.predicted_usd : null)), color: "#64748b", dash: true }] });

    const top = live.arms.slice(0, TOP_ARMS).map((a) => a.arm);
    const rows = top.map((arm) => ({ name: arm, values: m.map((b) => b.arms[arm] || 0) }));
    if (live.arms.length > TOP_ARMS) {
      rows.push({ name: "other", values: m.map((b) => Object.entries(b.arms)
        .filter(([a]) => !top.includes(a)).reduce((s, [, n]) => s + n, 0)) });
    }
    C.shareColumns($("chart-share"), $("legend-share"), xs, rows,
      rows.map((_, i) => C.PALETTE[i % C.PALETTE.length]));
    C.rateBars($("chart-trunc"), live.arms.slice(0, 16).map((a) => ({
      label: a.model + " @ " + a.policy, value: a.truncation_rate,
      text: pct(a.truncation_rate) + " (" + a.truncated + "/" + a.requests + ")" })));
  }

  function drawSavings(s) {
    const el = $("savings");
    if (!s.enabled) {
      el.innerHTML = '<p class="muted" id="savings-off">decision log off: set <code>log:</code> in gateway.yaml (docs/production-learning.md) to compare against always using the best single arm.</p>';
      return;
    }
    const sv = s.saving || {};
    let html = `<p><span class="saving-big" id="saving-usd">${usd(sv.saving_usd)}</span> saved (${pct(sv.saving_fraction)}) against always using <b>${esc(sv.baseline_arm || "-")}</b>: ${usd(sv.actual_cost_usd)} spent instead of ${usd(sv.baseline_cost_usd)} over ${s.requests} requests.</p>`;
    if (sv.assumptions) html += `<p class="muted">${esc(sv.assumptions)}</p>`;
    html += "<table><tr><th>arm</th><th class=num>requests</th><th class=num>spend</th><th class=num>predicted</th><th class=num>output tokens</th><th class=num>truncated</th><th class=num>feedback</th></tr>";
    for (const a of s.by_arm || []) {
      html += `<tr><td>${esc(a.model)} @ ${esc(a.policy)}</td><td class=num>${a.requests}</td><td class=num>${usd(a.spend_usd)}</td><td class=num>${usd(a.predicted_cost_usd)}</td><td class=num>${a.mean_output_tokens == null ? "-" : Math.round(a.mean_output_tokens)}</td><td class=num>${pct(a.truncation_rate)}</td><td class=num>${a.feedback_count ? a.feedback_mean.toFixed(2) + " (" + a.feedback_count + ")" : "-"}</td></tr>`;
    }
    el.innerHTML = html + "</table>";
  }

  async function poll() {
    try {
      const live = await call("GET", "/ui/api/live");
      drawLive(live.data);
      if (polls % SAVINGS_EVERY === 0) drawSavings((await call("GET", "/ui/api/savings")).data);
      polls++;
      $("error").hidden = true;
    } catch (err) { showError(err); }
  }
  function stop() { if (timer) clearInterval(timer); timer = null; }
  function start() {
    stop(); polls = 0; poll();
    timer = setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);
  }

  // -- playground ---------------------------------------------------------------------------
  function knob() {
    const wtp = $("wtp").value.trim();
    $("tradeoff").disabled = !!wtp || (config && !config.tradeoff_calibrated);
    if (wtp) return { "x-r2-usd-per-quality": wtp };
    if (config && !config.tradeoff_calibrated) return {};
    return { "x-r2-tradeoff": $("tradeoff").value };
  }
  function messages() { return [{ role: "user", content: $("prompt").value }]; }
  function scheduleRoute() {
    $("tradeoff-value").textContent = Number($("tradeoff").value).toFixed(2);
    clearTimeout(routeTimer);
    routeTimer = setTimeout(route, 60);
  }
  async function route() {
    if (!$("prompt").value.trim()) { $("chosen").textContent = "type a prompt"; return; }
    const seq = ++routeSeq;
    try {
      const r = await call("POST", "/v1/route", { messages: messages() }, knob());
      if (seq !== routeSeq) return; // a newer slider position is on its way
      lastRoute = r.data;
      drawRoute(r.data);
    } catch (err) {
      if (seq !== routeSeq) return;
      if (err.status === 401) { showError(err); return; }
      $("chosen").textContent = "routing failed: " + err.message;
      $("chosen").dataset.arm = "";
    }
  }
  function drawRoute(d) {
    const arm = d.model + "@" + d.budget;
    $("chosen").dataset.arm = arm;
    $("chosen").innerHTML = `<b>${esc(d.model)}</b> @ <b>${esc(d.budget)}</b><br>quality ${d.predicted_quality.toFixed(3)}, ${usd(d.predicted_cost_usd)} predicted,<br>${d.candidates.length} candidates, lambda ${d.lambda === 0 ? "0" : d.lambda.toPrecision(5)}, ${d.route_ms.toFixed(1)} ms`;
    const models = config ? config.models : [...new Set(d.candidates.map((c) => c.model))];
    const color = (m) => C.PALETTE[Math.max(0, models.indexOf(m)) % C.PALETTE.length];
    const points = d.candidates.map((c) => ({ cost: c.predicted_cost_usd, quality: c.predicted_quality,
      color: color(c.model), chosen: c.model === d.model && String(c.budget) === String(d.budget),
      title: `${c.model} @ ${c.budget}: quality ${c.predicted_quality.toFixed(3)}, ${usd(c.predicted_cost_usd)}` }));
    C.scatter($("chart-candidates"), $("legend-candidates"), points,
      models.filter((m) => d.candidates.some((c) => c.model === m)).map((m) => ({ name: m, color: color(m) })));
  }
  async function sendForReal() {
    const btn = $("send");
    btn.disabled = true;
    $("answer").hidden = false;
    $("answer-text").textContent = "waiting for the answer…";
    $("answer-headers").innerHTML = "";
    try {
      const r = await call("POST", "/v1/chat/completions", { model: "r2-auto", messages: messages() }, knob());
      const choice = (r.data.choices || [])[0] || {};
      $("answer-text").textContent = (choice.message && choice.message.content) || "(empty answer)";
      let rows = "";
      r.headers.forEach((v, k) => { if (k.startsWith("x-r2-") || k === "x-request-id") rows += `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`; });
      if (r.data.usage) rows += `<tr><th>usage</th><td>${esc(JSON.stringify(r.data.usage))}</td></tr>`;
      rows += `<tr><th>finish_reason</th><td>${esc(choice.finish_reason)}</td></tr>`;
      $("answer-headers").innerHTML = rows;
    } catch (err) {
      $("answer-text").textContent = "failed: " + err.message;
    } finally {
      btn.disabled = false;
      poll();
    }
  }

  // -- start --------------------------------------------------------------------------------
  async function load() {
    try {
      config = (await call("GET", "/ui/api/config")).data;
    } catch (err) { showError(err); return; }
    $("auth").hidden = true; $("content").hidden = false;
    $("meta").textContent = `checkpoint ${config.checkpoint} · ${config.models.length} models × ${config.policies.length} policies` + (config.auth_required ? " · key accepted" : "");
    if (!config.tradeoff_calibrated) {
      $("knob-note").textContent = "This checkpoint has no trade-off table (r2 calibrate adds one): the slider is off; the gateway's default or your willingness to pay applies.";
    } else if (config.default_knob.kind === "tradeoff") {
      $("tradeoff").value = String(config.default_knob.value);
    }
    start();
    scheduleRoute();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key").value = localStorage.getItem(KEY) || "";
    $("keyform").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("key").value.trim();
      if (k) localStorage.setItem(KEY, k); else localStorage.removeItem(KEY);
      load();
    });
    $("forget").addEventListener("click", () => { localStorage.removeItem(KEY); $("key").value = ""; load(); });
    $("tradeoff").addEventListener("input", scheduleRoute);
    $("wtp").addEventListener("input", scheduleRoute);
    $("prompt").addEventListener("input", () => { clearTimeout(routeTimer); routeTimer = setTimeout(route, 300); });
    $("send").addEventListener("click", sendForReal);
    load();
  });
  window.R2Dashboard = { lastRoute: () => lastRoute };
})();
