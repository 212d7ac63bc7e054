"use strict";
// Hand-drawn SVG charts for the dashboard: no library, no build step. Every chart is a
// function (element, data) that replaces the element's content with one <svg>.
(function () {
  const W = 560, H = 190, M = { l: 56, r: 12, t: 10, b: 22 };
  const PALETTE = ["#2563eb", "#16a34a", "#e08a00", "#7c3aed", "#0891b2", "#db2777",
    "#65a30d", "#b45309", "#475569", "#dc2626", "#0d9488", "#9333ea"];

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
      '"': "&quot;", "'": "&#39;" }[c]));
  }
  function frame(w, h, body) {
    return `<svg viewBox="0 0 ${w} ${h}" xmlns="http://www.w3.org/2000/svg" role="img">${body}</svg>`;
  }
  function empty(el, msg, h) {
    el.innerHTML = frame(W, h || H, `<text class="empty" x="${W / 2}" y="${(h || H) / 2}" text-anchor="middle">${esc(msg)}</text>`);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v * 1.0000001) return m * p;
    return 10 * p;
  }
  function clock(t) {
    const d = new Date(t * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  // Axes for a time series over n slots (x) and [0, ymax] (y).
  function axes(xs, ymax, fmt) {
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    let out = "";
    for (let i = 0; i <= 4; i++) {
      const y = M.t + ih - (ih * i) / 4;
      out += `<line class="grid-line" x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}"/>`;
      out += `<text x="${M.l - 4}" y="${y + 3}" text-anchor="end">${esc(fmt((ymax * i) / 4))}</text>`;
    }
    const step = Math.max(1, Math.round(xs.length / 6));
    for (let i = 0; i < xs.length; i += step) {
      const x = M.l + (iw * (i + 0.5)) / xs.length;
      out += `<text x="${x}" y="${H - 6}" text-anchor="middle">${clock(xs[i])}</text>`;
    }
    return out;
  }
  function xAt(i, n) { return M.l + ((W - M.l - M.r) * (i + 0.5)) / n; }
  function yAt(v, ymax) { const ih = H - M.t - M.b; return M.t + ih - (ih * v) / ymax; }

  // Lines (gaps where a value is null), optional bars underneath, optional flat target line.
  function timeSeries(el, opts) {
    const xs = opts.xs, n = xs.length;
    const all = [];
    for (const s of opts.lines || []) for (const v of s.values) if (v != null) all.push(v);
    if (opts.bars) for (const v of opts.bars.values) all.push(v);
    if (opts.target != null) all.push(opts.target);
    const peak = Math.max(0, ...all);
    if (!(peak > 0) && !opts.showZero) { empty(el, opts.emptyText || "no traffic yet"); return; }
    const ymax = niceMax(peak);
    let body = axes(xs, ymax, opts.fmt);
    if (opts.bars) {
      const bw = Math.max(1, ((W - M.l - M.r) / n) * 0.7);
      opts.bars.values.forEach((v, i) => {
        if (!(v > 0)) return;
        const y = yAt(v, ymax);
        body += `<rect class="bar" x="${xAt(i, n) - bw / 2}" y="${y}" width="${bw}" height="${yAt(0, ymax) - y}" fill="${opts.bars.color}"><title>${clock(xs[i])}: ${esc(opts.fmt(v))}</title></rect>`;
      });
    }
    if (opts.target != null) {
      const y = yAt(opts.target, ymax);
      body += `<line class="target" x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}" stroke="#d0342c" stroke-dasharray="6 4"/>`;
    }
    for (const s of opts.lines || []) {
      let d = "", pen = false, dots = "";
      s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${xAt(i, n).toFixed(1)},${yAt(v, ymax).toFixed(1)}`;
        pen = true;
        if (v > 0 || s.dotZero) dots += `<circle cx="${xAt(i, n).toFixed(1)}" cy="${yAt(v, ymax).toFixed(1)}" r="2" fill="${s.color}"><title>${clock(xs[i])}: ${esc(opts.fmt(v))}</title></circle>`;
      });
      if (d) body += `<path class="line" d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"${s.dash ? ' stroke-dasharray="4 3"' : ""}/>`;
      body += dots;
    }
    el.innerHTML = frame(W, H, body);
  }

  // Stacked columns of shares (each minute sums to 1 when it had traffic).
  function shareColumns(el, legendEl, xs, rows, colors) {
    const n = xs.length;
    const totals = xs.map((_, i) => rows.reduce((a, r) => a + r.values[i], 0));
    if (!totals.some((t) => t > 0)) { empty(el, "no routed traffic yet"); legendEl.innerHTML = ""; return; }
    let body = axes(xs, 1, (v) => Math.round(v * 100) + "%");
    const bw = Math.max(1, ((W - M.l - M.r) / n) * 0.8);
    for (let i = 0; i < n; i++) {
      if (!totals[i]) continue;
      let acc = 0;
      rows.forEach((r, k) => {
        const v = r.values[i] / totals[i];
        if (!(v > 0)) return;
        const y0 = yAt(acc, 1), y1 = yAt(acc + v, 1);
        body += `<rect class="share" x="${xAt(i, n) - bw / 2}" y="${y1}" width="${bw}" height="${y0 - y1}" fill="${colors[k]}"><title>${clock(xs[i])} ${esc(r.name)}: ${Math.round(v * 100)}% (${r.values[i]})</title></rect>`;
        acc += v;
      });
    }
    el.innerHTML = frame(W, H, body);
    legendEl.innerHTML = rows.map((r, k) => `<span><i data-color="${colors[k]}"></i>${esc(r.name)}</span>`).join("");
    legendEl.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });
  }

  // Horizontal bars for rates in [0, 1], one row each.
  function rateBars(el, rows) {
    const W = 1160;
    if (!rows.length) { el.innerHTML = frame(W, 40, `<text class="empty" x="${W / 2}" y="24" text-anchor="middle">no routed traffic yet</text>`); return; }
    const row = 20, h = M.t + rows.length * row + 8, lw = 220, iw = W - lw - 110;
    let body = "";
    rows.forEach((r, i) => {
      const y = M.t + i * row;
      body += `<text x="${lw - 6}" y="${y + 13}" text-anchor="end">${esc(r.label)}</text>`;
      body += `<rect class="track" x="${lw}" y="${y + 3}" width="${iw}" height="${row - 6}" fill="#eef0f3"/>`;
      body += `<rect class="bar" x="${lw}" y="${y + 3}" width="${Math.max(r.value > 0 ? 1 : 0, iw * r.value)}" height="${row - 6}" fill="${r.value > 0.2 ? "#d0342c" : "#e08a00"}"><title>${esc(r.label)}: ${esc(r.text)}</title></rect>`;
      body += `<text x="${lw + iw + 6}" y="${y + 13}">${esc(r.text)}</text>`;
    });
    el.innerHTML = frame(W, h, body);
  }

  // Scatter with a log x axis: predicted cost (x) and predicted quality (y).
  function scatter(el, legendEl, points, models) {
    if (!points.length) { empty(el, "no candidates", 260); legendEl.innerHTML = ""; return; }
    const h = 260, iw = W - M.l - M.r, ih = h - M.t - M.b - 8;
    const xsLog = points.map((p) => Math.log10(Math.max(p.cost, 1e-12)));
    let lo = Math.floor(Math.min(...xsLog)), hi = Math.ceil(Math.max(...xsLog));
    if (hi === lo) { lo -= 1; hi += 1; }
    // quality on a round range: tenths around the candidates, padded so no point sits on an edge
    const qs = points.map((p) => p.quality);
    const lo0 = Math.min(...qs) - 0.02, hi0 = Math.max(...qs) + 0.02;
    const qstep = hi0 - lo0 <= 0.5 ? 0.1 : hi0 - lo0 <= 1.2 ? 0.2 : 0.5;
    const qlo = Math.floor(lo0 / qstep) * qstep, qhi = Math.ceil(hi0 / qstep) * qstep;
    const X = (c) => M.l + (iw * (Math.log10(Math.max(c, 1e-12)) - lo)) / (hi - lo);
    const Y = (q) => M.t + ih - (ih * (q - qlo)) / (qhi - qlo);
    let body = "";
    for (let e = lo; e <= hi; e++) {
      const x = M.l + (iw * (e - lo)) / (hi - lo);
      body += `<line class="grid-line" x1="${x}" x2="${x}" y1="${M.t}" y2="${M.t + ih}"/>`;
      const label = e >= -6 && e <= 0 ? "$" + Math.pow(10, e).toFixed(-e) : e > 0 ? "$" + Math.pow(10, e) : "$1e" + e;
      body += `<text x="${x}" y="${M.t + ih + 14}" text-anchor="${e === hi ? "end" : e === lo ? "start" : "middle"}">${label}</text>`;
    }
    for (let k = 0; qlo + k * qstep <= qhi + 1e-9; k++) {
      const q = qlo + k * qstep, y = Y(q);
      body += `<line class="grid-line" x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}"/>`;
      body += `<text x="${M.l - 4}" y="${y + 3}" text-anchor="end">${(Math.round(q * 1000) / 1000).toString()}</text>`;
    }
    body += `<text x="${W - M.r}" y="${h - 2}" text-anchor="end">predicted cost per request (log)</text>`;
    body += `<text x="${M.l + 4}" y="${M.t + 10}">predicted quality</text>`;
    let chosen = "";
    for (const p of points) {
      const c = `<circle class="${p.chosen ? "cand chosen" : "cand"}" cx="${X(p.cost).toFixed(1)}" cy="${Y(p.quality).toFixed(1)}" r="${p.chosen ? 8 : 4.5}" fill="${p.color}" fill-opacity="${p.chosen ? 1 : 0.7}" stroke="${p.chosen ? "#111827" : p.color}" stroke-width="${p.chosen ? 3 : 1}"><title>${esc(p.title)}</title></circle>`;
      if (p.chosen) chosen = c; else body += c;
    }
    el.innerHTML = frame(W, h, body + chosen);
    legendEl.innerHTML = models.map((m) => `<span><i data-color="${m.color}"></i>${esc(m.name)}</span>`).join("");
    legendEl.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });
  }

  window.R2Charts = { PALETTE, timeSeries, shareColumns, rateBars, scatter, empty };
})();
