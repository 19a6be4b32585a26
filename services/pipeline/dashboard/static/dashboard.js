// The BTP dashboard: polls the dashboard's read API and redraws. `?interval=ms` sets the period (default
// 2000), `?run=name` picks a run, `#token=...` is sent as the bearer token when BTP_API_TOKEN is set.
"use strict";
import { barChart, fmt, histogramChart, lineChart } from "./charts.js";

const params = new URLSearchParams(location.search);
const INTERVAL = Math.max(250, Number(params.get("interval")) || 2000);
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");
let selected = null;
let wanted = params.get("run"); // ?run=NAME: show that run as soon as it exists (until another is picked)
let refreshes = 0;

async function api(path) {
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  const resp = await fetch(path, { headers });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${resp.status}`);
  return body;
}

const $ = (id) => document.getElementById(id);

function text(tag, content, cls) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (cls) node.className = cls;
  return node;
}

function summary(container, items) {
  container.innerHTML = "";
  for (const [label, value] of items) {
    const d = document.createElement("div");
    d.appendChild(text("b", value));
    d.appendChild(document.createTextNode(label));
    container.appendChild(d);
  }
}

function drawServices(services) {
  const box = $("services");
  box.innerHTML = "";
  for (const [name, s] of Object.entries(services)) {
    let cls = "off", label = `${name}: embedded`;
    if (s.url) {
      cls = s.health && s.health.ok ? "ok" : "bad";
      label = `${name}: ${s.health && s.health.ok ? "ok" : "down"}`;
      if (name === "generator" && s.health && s.health.model) label += ` (${s.health.model})`;
    }
    const b = text("span", label, `badge ${cls}`);
    b.dataset.service = name;
    b.dataset.state = cls;
    b.title = s.url ? `${s.url}${s.health && s.health.error ? " — " + s.health.error : ""}` : "no URL set: runs use it in-process";
    box.appendChild(b);
  }
}

function drawRunList(runs) {
  const sel = $("run-select");
  const names = runs.map((r) => r.name);
  if (wanted && names.includes(wanted)) {
    selected = wanted;
    wanted = null;
  } else if (!selected || !names.includes(selected)) selected = names[0] || null;
  const labels = runs.map((r) => r.name + (r.status === "finished" ? "" : ` (${r.status})`));
  if ([...sel.options].map((o) => o.text).join("\n") !== labels.join("\n")) {
    sel.innerHTML = "";
    runs.forEach((r, i) => sel.appendChild(new Option(labels[i], r.name)));
  }
  if (selected) sel.value = selected;
}

function drawProgress(run) {
  const box = $("run-progress");
  box.innerHTML = "";
  const p = run.progress;
  if (!p || !p.phase) return;
  const where = `${p.phase}: ${p.done}/${p.total}`;
  const done = run.status === "running" ? where
    : run.status === "finished" ? "finished"
    : `${run.status} in ${where}${p.error ? " — " + p.error : ""}`;
  const head = text("div", done);
  head.id = "phase-now";
  box.appendChild(head);
  const outer = document.createElement("div");
  outer.className = "bar-outer";
  const inner = document.createElement("div");
  inner.className = "bar-inner";
  inner.style.width = `${p.total ? Math.min(100, 100 * p.done / p.total) : 100}%`;
  outer.appendChild(inner);
  box.appendChild(outer);
  const a = p.async;  // an async run: versions, lag and waits (metrics/async.json has the history)
  if (a) {
    const lag = a.lag && a.lag.mean !== null && a.lag.mean !== undefined ? `${a.lag.mean.toFixed(2)} (max ${a.lag.max})` : "–";
    const line = text("div", `async · version ${a.version} (generator ${a.served}) · sampling lag ${a.sampling_lag} · ` +
      `trained-program lag ${lag} · ${a.trained_programs} programs trained · passes ${a.passes_stored} sampled / ` +
      `${a.passes_judged} judged · waits: actors ${Math.round(a.actor_wait_s)}s, trainer ${Math.round(a.trainer_wait_s)}s`, "async");
    line.id = "async-now";
    box.appendChild(line);
  }
  box.appendChild(text("div", (p.phases || []).map((ph) =>
    `${ph.name} ${ph.done}/${ph.total}${ph.seconds !== null && ph.seconds !== undefined ? ` (${Math.round(ph.seconds)}s)` : ""}`).join(" · "), "phases"));
}

function drawRun(run) {
  if (!run) {
    summary($("run-summary"), [["runs", "none yet"]]);
    lineChart($("chart-eval"), [], { empty: "no run folder yet: start one with btp run" });
    lineChart($("chart-run-loss"), []);
    return;
  }
  const c = run.config || {};
  const evals = run.rounds.filter((r) => r.eval);
  const last = evals[evals.length - 1];
  summary($("run-summary"), [
    ["model", c.model], ["data", (c.datasets || []).join(", ")], ["rounds done", `${Math.max(0, evals.length - 1)}/${c.rounds}`],
    ["k", c.k], ["alpha / scheme", `${c.alpha} / ${c.scheme}`],
    ["held-out pass rate", last ? fmt(last.eval.pass_rate) : "–"], ["accuracy", last ? fmt(last.eval.accuracy) : "–"],
  ]);
  drawProgress(run);
  lineChart($("chart-eval"), [
    { name: "pass rate", points: evals.map((r) => [r.round, r.eval.pass_rate]) },
    { name: "accuracy", points: evals.map((r) => [r.round, r.eval.accuracy]) },
  ], { xLabel: "round (0 = before training)", yMin: 0, yMax: 1, integerX: true, empty: "no evaluation yet" });
  let offset = 0;
  const loss = [];
  for (const r of run.rounds) {
    for (const p of r.loss_history || []) loss.push([offset + p.step, p.loss]);
    offset += (r.loss_history || []).length;
  }
  lineChart($("chart-run-loss"), [{ name: "loss", points: loss }], { xLabel: "step", integerX: true, empty: "no training yet" });
}

function drawBuffer(buffer, origin) {
  $("buffer-origin").textContent = origin;
  if (!buffer) {
    summary($("buffer-summary"), [["buffer", "not available"]]);
    for (const id of ["chart-groups", "chart-passrate", "chart-p2value", "chart-recent"]) lineChart($(id), []);
    return;
  }
  const st = buffer.stats;
  summary($("buffer-summary"), [["tasks", st.tasks], ["programs", st.experiences], ["judged", st.judged],
    ["P2Value", `alpha ${st.alpha}, ${st.possibility}`]]);
  const rounds = [...new Set(buffer.groups.map((g) => g.round))].sort((a, b) => a - b);
  const sources = [...new Set(buffer.groups.map((g) => g.source))];
  barChart($("chart-groups"), rounds.map((r) => `round ${r}`), sources.map((s) => ({
    name: s, values: rounds.map((r) => (buffer.groups.find((g) => g.round === r && g.source === s) || { experiences: 0 }).experiences),
  })), { stacked: true, empty: "no programs yet" });
  const sets = Object.values(st.datasets);
  const merge = (key) => {
    const withData = sets.map((d) => d[key]).filter((h) => h && h.counts && h.counts.length);
    if (!withData.length) return null;
    return { edges: withData[0].edges, counts: withData[0].counts.map((_, i) => withData.reduce((a, h) => a + (h.counts[i] || 0), 0)) };
  };
  histogramChart($("chart-passrate"), merge("pass_rate_histogram"), "programs", { empty: "nothing judged yet" });
  histogramChart($("chart-p2value"), merge("p2value_histogram"), "programs", { empty: "nothing judged yet" });
  const mean = (xs) => { const v = xs.filter((x) => x !== null); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null; };
  lineChart($("chart-recent"), [
    { name: "mean P2Value", points: buffer.recent.map((d) => [d.seq, mean(d.p2values)]) },
    { name: "mean pass rate", points: buffer.recent.map((d) => [d.seq, mean(d.pass_rates)]) },
  ], { xLabel: "minibatch", yMin: 0, yMax: 1, integerX: true, empty: "no minibatch drawn yet (this buffer process)" });
}

function drawJobs(trainer) {
  const body = $("jobs").querySelector("tbody");
  body.innerHTML = "";
  const jobs = (trainer && trainer.jobs) || [];
  if (!jobs.length) {
    const tr = document.createElement("tr");
    const td = text("td", trainer && trainer.url ? "no jobs yet" : "no trainer service (embedded runs train in-process: see the run's loss)", "muted");
    td.colSpan = 6;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const j of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.id;
    const last = j.loss_history.length ? j.loss_history[j.loss_history.length - 1] : null;
    for (const v of [j.id.slice(0, 12), j.status, `${j.progress.step}/${j.progress.total_steps}`,
      last ? fmt(last.loss) : "–", last && last.lr !== null ? fmt(last.lr) : fmt(j.learning_rate), (j.created_at || "").slice(0, 19)]) {
      tr.appendChild(text("td", String(v)));
    }
    body.appendChild(tr);
  }
  const latest = jobs[0];
  const hist = latest ? latest.loss_history : [];
  lineChart($("chart-job-loss"), [{ name: "loss", points: hist.map((p) => [p.step, p.loss]) }], { xLabel: "step", integerX: true, empty: "no job yet" });
  lineChart($("chart-job-lr"), [{ name: "lr", points: hist.filter((p) => p.lr !== null).map((p) => [p.step, p.lr]) }], { xLabel: "step", yMin: 0, integerX: true, empty: "no job yet" });
}

async function refresh() {
  try {
    const [runs, services] = await Promise.all([api("api/runs"), api("api/services")]);
    drawServices(services);
    drawRunList(runs.runs);
    const run = selected ? await api(`api/runs/${encodeURIComponent(selected)}`) : null;
    drawRun(run);
    const remote = services.buffer && services.buffer.buffer;
    drawBuffer(remote || (run && run.buffer), remote ? `service ${services.buffer.url}` : (run && run.buffer ? `run ${run.name} (embedded)` : ""));
    drawJobs(services.trainer);
    refreshes += 1;
    $("refreshes").dataset.count = String(refreshes);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("updated").textContent = `update failed: ${err.message}`;
  }
}

$("run-select").addEventListener("change", (e) => { selected = e.target.value; wanted = null; refresh(); });
refresh();
setInterval(refresh, INTERVAL);
