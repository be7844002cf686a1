// Shared helpers of the dashboard's pages. DOM built with textContent only (no HTML from data).
"use strict";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
}

function phaseBadge(phase) {
  return h("span", { class: `phase phase-${phase}` }, phase);
}

function progressText(run) {
  const parts = [];
  parts.push(run.percent === null ? "—" : `${run.percent}%`);
  parts.push(`${run.succeeded}${run.total !== null && run.total !== undefined ? " / " + run.total : ""} done`);
  if (run.failed) parts.push(`${run.failed} failed`);
  if (!run.finished && run.itemsPerSecond) parts.push(`${Number(run.itemsPerSecond).toFixed(1)} items/s`);
  if (!run.finished && run.eta) parts.push(`ETA ${run.eta}`);
  return parts.join(" · ");
}

async function api(url, options) {
  const response = await fetch(url, options);
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = (body && body.error) || body || response.statusText;
    throw new Error(message);
  }
  return body;
}

function post(url, body) {
  return api(url, {
    method: "POST",
    headers: { "X-Batchpredict-Action": "1", "Content-Type": "text/plain" },
    body: body === undefined ? "" : body,
  });
}

function showError(message) {
  const el = document.getElementById("error");
  el.hidden = !message;
  el.textContent = message || "";
}

async function loadConfig() {
  const config = await api("/api/config");
  if (config.readOnly) document.getElementById("mode").textContent = "Read-only";
  return config;
}

// An EventSource that says whether the page is live; `onMessage` gets parsed messages.
function liveStream(url, onMessage) {
  const live = document.getElementById("live");
  const source = new EventSource(url);
  source.onopen = () => { live.textContent = "Live"; };
  source.onerror = () => { live.textContent = "Reconnecting…"; };
  source.onmessage = (event) => onMessage(JSON.parse(event.data));
  return source;
}
