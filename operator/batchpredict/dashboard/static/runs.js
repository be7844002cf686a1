// The runs table: a snapshot then each change, pushed by the server (one watch for all pages).
"use strict";

const runs = new Map();  // "namespace/name" -> row
const FILTERS = { "f-phase": "phase", "f-model": "model", "f-user": "startedBy", "f-namespace": "namespace" };

function key(run) { return `${run.namespace}/${run.name}`; }

function fillSelect(id, field) {
  const select = document.getElementById(id);
  const chosen = select.value;
  const values = [...new Set([...runs.values()].map((r) => r[field]).filter(Boolean))].sort();
  const current = [...select.options].slice(1).map((o) => o.value);
  if (values.join("\n") === current.join("\n")) return;
  select.replaceChildren(h("option", { value: "" }, "All"), ...values.map((v) => h("option", { value: v }, v)));
  select.value = values.includes(chosen) ? chosen : "";
}

function matches(run) {
  for (const [id, field] of Object.entries(FILTERS)) {
    const wanted = document.getElementById(id).value;
    if (wanted && run[field] !== wanted) return false;
  }
  const text = document.getElementById("search").value.trim().toLowerCase();
  if (!text) return true;
  return [run.name, run.namespace, run.model, run.dataset, run.startedBy, run.phase]
    .some((v) => String(v || "").toLowerCase().includes(text));
}

function row(run) {
  const href = `/runs/${encodeURIComponent(run.namespace)}/${encodeURIComponent(run.name)}`;
  const bar = h("progress", { max: 100, "aria-label": `Progress of ${run.name}` });
  if (run.percent !== null) bar.value = run.percent;
  return h("tr", { "data-run": key(run), class: `row-${run.phase}` },
    h("td", { class: "name" }, h("a", { href }, run.name), h("div", { class: "small" }, run.namespace)),
    h("td", { class: "model" }, run.model),
    h("td", { class: "wide dataset small" }, run.dataset),
    h("td", { class: "wide user" }, run.startedBy || "—"),
    h("td", { class: "progress" }, h("div", { class: "progress-cell" }, bar,
      h("span", { class: "small progress-text" }, progressText(run)))),
    h("td", { class: "wide small" }, fmtTime(run.startTime)),
    h("td", { class: "wide small" }, fmtTime(run.completionTime)),
    h("td", { class: "wide num" }, fmtDuration(run.durationSeconds)),
    h("td", { class: "phase-cell" }, phaseBadge(run.phase), run.suspended && run.phase !== "Suspended" ? h("div", { class: "small" }, "suspending") : null),
  );
}

function render() {
  for (const [id, field] of Object.entries(FILTERS)) fillSelect(id, field);
  const shown = [...runs.values()].filter(matches).sort((a, b) =>
    String(b.startTime || "").localeCompare(String(a.startTime || "")) || key(a).localeCompare(key(b)));
  document.getElementById("rows").replaceChildren(...shown.map(row));
  document.getElementById("empty").hidden = shown.length > 0;
  document.getElementById("caption").textContent =
    `Batch predictions: ${shown.length} shown of ${runs.size}`;
}

function onMessage(message) {
  if (message.type === "error") { showError(message.message); return; }
  showError("");
  if (message.type === "snapshot") {
    runs.clear();
    for (const run of message.runs) runs.set(key(run), run);
  } else if (message.type === "update") {
    runs.set(key(message.run), message.run);
  } else if (message.type === "deleted") {
    runs.delete(key(message.run));
  }
  render();
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const id of [...Object.keys(FILTERS), "search"]) {
    document.getElementById(id).addEventListener("input", render);
  }
  try { await loadConfig(); } catch (error) { showError(error.message); }
  liveStream("/api/stream", onMessage);
});
