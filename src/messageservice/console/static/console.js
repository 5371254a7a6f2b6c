// The console's only script: live refresh of the message page and the dashboard's charts.
// No inline script anywhere (the Content-Security-Policy forbids it): data comes from data-* attributes
// and JSON endpoints, and text is always set with textContent, never parsed as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

async function fetchJson(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) { window.location.reload(); return null; }
  if (!response.ok) return null;
  return response.json();
}

// Message page: follow the message until it reaches an end status; reload when anything changed.
// Every second for the first minute, then every 5 s, for half an hour at most.
function watchMessage(live) {
  if (live.dataset.final === "yes") return;
  const started = Date.now();
  const tick = async () => {
    try {
      const state = await fetchJson(live.dataset.stateUrl);
      if (state && state.fingerprint !== live.dataset.fingerprint) { window.location.reload(); return; }
    } catch (error) { /* the server may be restarting: try again */ }
    const age = Date.now() - started;
    if (age < 30 * 60 * 1000) setTimeout(tick, age < 60 * 1000 ? 1000 : 5000);
  };
  setTimeout(tick, 1000);
}

// Charts are drawn at the size they are shown (one SVG unit a CSS pixel), so that their text stays
// readable on a phone instead of shrinking with the picture.
function drawnWidth(svg, fallback) {
  const width = Math.round(svg.getBoundingClientRect().width);
  return width > 0 ? Math.max(240, width) : fallback;
}

// Messages per minute: created, delivered and failed over the window. `created` is a light area with a
// dashed line drawn last, so that it still shows where `delivered` runs on top of it.
function drawPerMinute(svg, points) {
  svg.replaceChildren();
  const width = drawnWidth(svg, 640), height = width < 480 ? 180 : 220, left = 36, bottom = 22, top = 10;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...points.flatMap((p) => [p.created, p.delivered, p.failed]));
  const x = (i) => left + (points.length <= 1 ? 0 : (i * (width - left - 8)) / (points.length - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  for (const fraction of [0, 0.5, 1]) {
    const value = Math.round(max * fraction);
    svg.append(svgElement("line", { x1: left, x2: width - 8, y1: y(value), y2: y(value), stroke: "#e4e8f0" }));
    svg.append(svgElement("text", { x: 2, y: y(value) + 4 }, value));
  }
  if (points.length) {
    const label = (p) => new Date(p.minute * 1000).toISOString().slice(11, 16);
    svg.append(svgElement("text", { x: left, y: height - 4 }, label(points[0])));
    svg.append(svgElement("text", { x: width - 8, y: height - 4, "text-anchor": "end" }, label(points[points.length - 1])));
  }
  const line = (series) => points.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[series]).toFixed(1)}`).join(" ");
  if (!points.length) return;
  const base = y(0).toFixed(1);
  svg.append(svgElement("path", { d: `${line("created")} L${x(points.length - 1).toFixed(1)},${base} L${x(0).toFixed(1)},${base} Z`,
    fill: "#2f6fed", "fill-opacity": 0.12, stroke: "none", "data-area": "created" }));
  svg.append(svgElement("path", { d: line("failed"), fill: "none", stroke: "#d64545", "stroke-width": 2, "data-series": "failed" }));
  svg.append(svgElement("path", { d: line("delivered"), fill: "none", stroke: "#1f9d55", "stroke-width": 2, "data-series": "delivered" }));
  svg.append(svgElement("path", { d: line("created"), fill: "none", stroke: "#2f6fed", "stroke-width": 2,
    "stroke-dasharray": "6 4", "data-series": "created" }));
}

// Horizontal bars: one per key of counts.
function drawBars(svg, counts, colourOf) {
  svg.replaceChildren();
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const row = 24, width = drawnWidth(svg, 320), label = 110;
  const height = Math.max(row, entries.length * row);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  entries.forEach(([key, value], i) => {
    const length = ((width - label - 50) * value) / max;
    svg.append(svgElement("text", { x: 0, y: i * row + 16 }, key));
    svg.append(svgElement("rect", { x: label, y: i * row + 5, width: Math.max(1, length), height: 14, rx: 2, fill: colourOf(key), "data-key": key }));
    svg.append(svgElement("text", { x: label + length + 6, y: i * row + 16 }, value));
  });
  if (!entries.length) svg.append(svgElement("text", { x: 0, y: 16 }, "no messages yet"));
}

const STATUS_COLOURS = { delivered: "#1f9d55", sent: "#4caf7a", read: "#1f9d55", error: "#d64545", failed: "#d64545",
  undelivered: "#e07a7a", exception: "#d64545", pending: "#c98a0b", queued: "#e0b44c", sending: "#e0b44c" };

function renderDashboard(root, stats) {
  drawPerMinute(root.querySelector("#chart-per-minute"), stats.per_minute);
  drawBars(root.querySelector("#chart-status"), stats.by_status, (k) => STATUS_COLOURS[k] || "#8a94a6");
  for (const node of root.querySelectorAll("[data-stat]")) {
    const value = stats[node.dataset.stat];
    node.textContent = value === null || value === undefined ? "—" : String(value);
  }
  const stamp = root.querySelector("#refreshed");
  if (stamp) stamp.textContent = new Date(stats.generated_at * 1000).toISOString().slice(11, 19) + " UTC";
  const table = root.querySelector("#handler-rows");
  if (table) {
    table.replaceChildren();
    for (const h of stats.handlers) {
      const tr = document.createElement("tr");
      const who = document.createElement("td"), sub = document.createElement("div");
      who.title = h.sender;
      who.textContent = h.sender_name;
      sub.className = "sub";
      sub.textContent = h.sender_detail;
      who.append(sub);
      tr.append(who);
      [h.handler, h.attempts, h.success_rate, h.p95_ms, h.breaker, h.last_error].forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = value === null || value === undefined ? "—" : String(value);
        if (i === 0) td.className = "text";
        tr.append(td);
      });
      if (h.breaker !== "closed") tr.className = "breaker-" + h.breaker;
      table.append(tr);
    }
    if (!stats.handlers.length) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 7; td.className = "empty"; td.textContent = "No handler was called in this window.";
      tr.append(td); table.append(tr);
    }
  }
}

function watchDashboard(root) {
  let last = null;
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => { if (last) renderDashboard(root, last); }, 150);
  });
  const tick = async () => {
    try {
      const stats = await fetchJson(root.dataset.statsUrl);
      if (stats) {
        last = stats;
        renderDashboard(root, stats);
        root.dataset.refreshes = String(Number(root.dataset.refreshes || 0) + 1);
      }
    } catch (error) { /* try again on the next tick */ }
    setTimeout(tick, Number(root.dataset.intervalMs || 5000));
  };
  tick();
}

// Buttons that ask before doing something that cannot be undone.
function confirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) watchMessage(live);
  const dashboard = document.getElementById("dashboard");
  if (dashboard) watchDashboard(dashboard);
  confirmForms();
});
