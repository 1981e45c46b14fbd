// fedstack's live federation dashboard: polls the homeserver's combined /metrics (with the
// API token, asked once and kept in sessionStorage) and plots per-destination queues,
// backoff and send latency, inbound PDUs per origin, events per second and subscription
// lag with uPlot. The "Now" table shows each plotted series' current value as read from
// /metrics (data-series holds the series as Prometheus writes it).
"use strict";

const POLL_MS = 1000;
const KEEP = 300;                    // points per series (5 minutes at one per second)
const TOKEN_KEY = "fedstack_api_token";

// Each chart: which series it shows and how a sample becomes a point.
//   gauge: the value; rate: per second between two scrapes; avg_ms: d(sum)/d(count) in ms
const CHARTS = [
  {id: "queue", title: "Queue depth per destination (items)", metric: "fedstack_destination_queue_depth", label: "destination", kind: "gauge"},
  {id: "backoff", title: "Backoff per destination (s until retry)", metric: "fedstack_destination_backoff_seconds", label: "destination", kind: "gauge"},
  {id: "latency", title: "Send latency per destination (ms, mean per interval)", metric: "fedstack_outbound_transaction_seconds", label: "destination", kind: "avg_ms"},
  {id: "inbound", title: "Inbound PDUs per origin (per s, staged)", metric: "fedstack_inbound_pdus_total", label: "origin", kind: "rate", where: {outcome: "staged"}},
  {id: "events", title: "Events per second (stream positions)", metric: "fedstack_stream_head_position", label: null, kind: "rate"},
  {id: "lag", title: "Subscription lag (positions behind)", metric: "fedstack_subscription_lag_positions", label: "subscription", kind: "gauge"},
];

const state = {times: [], series: {}, prev: null, charts: {}};

function parseMetrics(text) {
  // [{name, labels: {..}, value, key}] of an exposition (comments skipped)
  const out = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const lab = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const l of text.split("\n")) {
    if (!l || l[0] === "#") continue;
    const m = line.exec(l);
    if (!m) continue;
    const labels = {};
    let x;
    lab.lastIndex = 0;
    while ((x = lab.exec(m[2] || "")) !== null) labels[x[1]] = x[2].replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    out.push({name: m[1], labels, value: parseFloat(m[3]), key: l.slice(0, l.length - m[3].length).trim()});
  }
  return out;
}

function matches(s, chart, suffix) {
  if (s.name !== chart.metric + (suffix || "")) return false;
  for (const [k, v] of Object.entries(chart.where || {})) if (s.labels[k] !== v) return false;
  return true;
}

function point(chart, samples, prev, dt) {
  // {label value: point} for one chart at this scrape
  const out = {};
  const group = (list, suffix) => {
    const g = {};
    for (const s of list) if (matches(s, chart, suffix)) {
      const k = chart.label ? (s.labels[chart.label] || "") : "all";
      g[k] = (g[k] || 0) + s.value;
    }
    return g;
  };
  if (chart.kind === "gauge") return group(samples);
  if (!prev || dt <= 0) return out;
  if (chart.kind === "rate") {
    const now = group(samples), before = group(prev);
    for (const k in now) out[k] = Math.max(0, (now[k] - (before[k] || 0)) / dt);
    return out;
  }
  const sum = group(samples, "_sum"), cnt = group(samples, "_count");
  const psum = group(prev, "_sum"), pcnt = group(prev, "_count");
  for (const k in sum) {
    const n = cnt[k] - (pcnt[k] || 0);
    out[k] = n > 0 ? 1000 * (sum[k] - (psum[k] || 0)) / n : null;
  }
  return out;
}

function record(samples, t) {
  const dt = state.prev ? t - state.prev.t : 0;
  state.times.push(t);
  for (const chart of CHARTS) {
    const pts = point(chart, samples, state.prev && state.prev.samples, dt);
    const per = state.series[chart.id] || (state.series[chart.id] = {});
    for (const k in pts) if (!(k in per)) per[k] = new Array(state.times.length - 1).fill(null);
    for (const k in per) per[k].push(k in pts ? pts[k] : null);
  }
  if (state.times.length > KEEP) {
    state.times.shift();
    for (const id in state.series) for (const k in state.series[id]) state.series[id][k].shift();
  }
  state.prev = {t, samples};
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function draw() {
  const root = document.getElementById("charts");
  for (const chart of CHARTS) {
    const per = state.series[chart.id] || {};
    const names = Object.keys(per).sort();
    const data = [state.times, ...names.map(n => per[n])];
    let c = state.charts[chart.id];
    if (c && c.names.join("\n") !== names.join("\n")) {   // a new series: build it again
      c.plot.destroy();
      c = null;
    }
    if (!c) {
      let panel = document.getElementById("panel-" + chart.id);
      if (!panel) {
        panel = document.createElement("div");
        panel.className = "panel";
        panel.id = "panel-" + chart.id;
        panel.innerHTML = "<h2></h2><div class='plot'></div>";
        panel.querySelector("h2").textContent = chart.title;
        root.appendChild(panel);
      }
      const target = panel.querySelector(".plot");
      target.innerHTML = "";
      const opts = {width: 440, height: 200, series: [{}, ...names.map((n, i) => (
        {label: n || "(none)", stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true}))],
        axes: [{}, {size: 60}], legend: {show: true}};
      c = state.charts[chart.id] = {names, plot: new uPlot(opts, data, target)};
    } else {
      c.plot.setData(data);
    }
  }
}

function showNow(samples) {
  // the current value of every series the charts plot, as /metrics wrote it
  const body = document.getElementById("now");
  const rows = [];
  for (const s of samples) {
    if (CHARTS.some(c => matches(s, c) || matches(s, c, "_count"))) rows.push(s);
  }
  rows.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  body.innerHTML = "";
  for (const s of rows) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = s.key;
    const val = document.createElement("td");
    val.className = "num";
    val.dataset.series = s.key;
    val.textContent = String(s.value);
    tr.append(name, val);
    body.appendChild(tr);
  }
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return askToken();
  let text;
  try {
    const r = await fetch("/metrics", {headers: {Authorization: "Bearer " + token}});
    if (r.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      return askToken("that token was refused");
    }
    text = await r.text();
  } catch (e) {
    document.getElementById("status").textContent = "homeserver unreachable: " + e;
    return setTimeout(poll, POLL_MS);
  }
  const samples = parseMetrics(text);
  record(samples, Date.now() / 1000);
  draw();
  showNow(samples);
  const up = samples.filter(s => s.name === "fedstack_service_up");
  document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString()
    + " · services: " + up.map(s => s.labels.service + (s.value ? " up" : " DOWN")).join(", ");
  document.body.dataset.polls = String((parseInt(document.body.dataset.polls || "0", 10)) + 1);
  setTimeout(poll, POLL_MS);
}

function askToken(error) {
  document.getElementById("main").classList.add("hidden");
  document.getElementById("login").classList.remove("hidden");
  document.getElementById("login-error").textContent = error || "";
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("login").classList.add("hidden");
  document.getElementById("main").classList.remove("hidden");
  poll();
});

if (sessionStorage.getItem(TOKEN_KEY)) {
  document.getElementById("main").classList.remove("hidden");
  poll();
} else {
  askToken();
}
