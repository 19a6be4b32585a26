// Tiny SVG charts for the BTP dashboard: line charts and bar charts, no dependencies, no build step.
// Every drawn value carries data-series / data-x / data-y attributes (and a <title> tooltip), so what a
// chart shows can be read back exactly (the browser test does).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const W = 420, H = 220, M = { top: 12, right: 12, bottom: 40, left: 48 };

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e5)) return v.toExponential(2);
  return String(Math.round(v * 10000) / 10000);
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Math.round(t / step) * step);
  return ticks;
}

function frame(container, opts) {
  container.innerHTML = "";
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" }, container);
  if (opts.title) el("title", {}, svg).textContent = opts.title;
  return svg;
}

function axes(svg, x, y, xTicks, yTicks, opts) {
  const g = el("g", { class: "axes" }, svg);
  for (const t of yTicks) {
    el("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t), class: "grid" }, g);
    el("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, g).textContent = fmt(t);
  }
  for (const [pos, label] of xTicks) {
    el("text", { x: pos, y: H - M.bottom + 16, "text-anchor": "middle" }, g).textContent = label;
  }
  if (opts.xLabel) el("text", { x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, g).textContent = opts.xLabel;
}

function legend(container, names) {
  if (names.length < 2) return;
  const div = document.createElement("div");
  div.className = "legend";
  names.forEach((n, i) => {
    const s = document.createElement("span");
    s.innerHTML = `<i style="background:${PALETTE[i % PALETTE.length]}"></i>`;
    s.appendChild(document.createTextNode(n.length > 60 ? "…" + n.slice(-57) : n));
    s.title = n;
    div.appendChild(s);
  });
  container.appendChild(div);
}

function empty(container, message) {
  container.innerHTML = `<p class="empty">${message}</p>`;
}

// series: [{name, points: [[x, y], ...]}]; opts: {xLabel, yMin, yMax, title}
export function lineChart(container, series, opts = {}) {
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  if (!pts.length) return empty(container, opts.empty || "no data yet");
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(...ys), y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
  if (y0 === y1) { if (opts.yMin !== undefined) y1 = y0 + 1; else { y0 -= 0.5; y1 += 0.5; } }
  const x = (v) => M.left + (v - x0) / (x1 - x0) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v - y0) / (y1 - y0) * (H - M.top - M.bottom);
  const svg = frame(container, opts);
  const xt = niceTicks(x0, x1, 6).filter((t) => t >= x0 && t <= x1 && (!opts.integerX || Number.isInteger(t)));
  axes(svg, x, y, xt.map((t) => [x(t), fmt(t)]), niceTicks(y0, y1, 4).filter((t) => t >= y0 && t <= y1), opts);
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const good = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const g = el("g", { class: "series", "data-series": s.name }, svg);
    el("polyline", { points: good.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), fill: "none", stroke: color,
      "stroke-width": 2 }, g);
    if (good.length <= 80) {
      for (const [px, py] of good) {
        const c = el("circle", { cx: x(px), cy: y(py), r: 3.5, fill: color, class: "point", "data-series": s.name,
          "data-x": px, "data-y": py }, g);
        el("title", {}, c).textContent = `${s.name}: ${fmt(py)} at ${fmt(px)}`;
      }
    }
  });
  legend(container, series.map((s) => s.name));
}

// labels: category names; series: [{name, values: [...]}] (grouped bars); opts: {stacked, xLabel, title}
export function barChart(container, labels, series, opts = {}) {
  const total = series.flatMap((s) => s.values).reduce((a, b) => a + (b || 0), 0);
  if (!labels.length || (!total && !opts.showZero)) return empty(container, opts.empty || "no data yet");
  const stacked = !!opts.stacked;
  const sums = labels.map((_, j) => series.reduce((a, s) => a + (s.values[j] || 0), 0));
  const y1 = Math.max(stacked ? Math.max(...sums) : Math.max(...series.flatMap((s) => s.values)), 1e-9);
  const band = (W - M.left - M.right) / labels.length;
  const y = (v) => H - M.bottom - v / y1 * (H - M.top - M.bottom);
  const svg = frame(container, opts);
  const every = Math.ceil(labels.length / 10);
  axes(svg, null, y, labels.map((l, j) => [M.left + band * (j + 0.5), j % every === 0 ? l : ""]),
    niceTicks(0, y1, 4).filter((t) => t <= y1), opts);
  const inner = stacked ? band * 0.8 : band * 0.8 / series.length;
  labels.forEach((label, j) => {
    let base = 0;
    series.forEach((s, i) => {
      const v = s.values[j] || 0;
      const x = M.left + band * j + band * 0.1 + (stacked ? 0 : inner * i);
      const top = stacked ? base + v : v;
      const r = el("rect", { x, y: y(top), width: Math.max(inner - 1, 1), height: Math.max(y(stacked ? base : 0) - y(top), 0),
        fill: PALETTE[i % PALETTE.length], class: "bar", "data-series": s.name, "data-x": label, "data-y": v }, svg);
      el("title", {}, r).textContent = `${s.name} ${label}: ${fmt(v)}`;
      if (stacked) base += v;
    });
  });
  legend(container, series.map((s) => s.name));
}

// A histogram from {edges: [...], counts: [...]} as a bar chart labelled by bin.
export function histogramChart(container, hist, name, opts = {}) {
  if (!hist || !hist.counts || !hist.counts.length) return empty(container, opts.empty || "no data yet");
  const labels = hist.counts.map((_, i) => fmt(hist.edges[i]));
  barChart(container, labels, [{ name, values: hist.counts }], opts);
}

export { fmt };
