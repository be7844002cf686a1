// One run: header, conditions, rounds, failures, evaluation, results, Events, pod logs, actions.
"use strict";

const [, , NAMESPACE, NAME] = location.pathname.split("/").map(decodeURIComponent);
const BASE = `/api/runs/${encodeURIComponent(NAMESPACE)}/${encodeURIComponent(NAME)}`;
const PAGE = 20;
let config = { readOnly: true };
let detail = null;
let resultsOffset = 0;
let refreshTimer = null;
let lastVersion = null;

function dl(el, pairs) {
  el.replaceChildren(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function tbody(table, rows) {
  document.querySelector(`#${table} tbody`).replaceChildren(...rows);
}

function renderHeader(d) {
  const run = d.row;
  document.title = `${run.name} · batchpredict`;
  document.getElementById("title").textContent = `${run.namespace} / ${run.name}`;
  document.getElementById("run-name").textContent = run.name;
  document.getElementById("phase").replaceChildren(phaseBadge(run.phase));
  const bar = document.getElementById("progress");
  if (run.percent !== null) bar.value = run.percent; else bar.removeAttribute("value");
  document.getElementById("progress-text").textContent = progressText(run);
  document.getElementById("message").textContent = run.message;
  dl(document.getElementById("summary"), [["Namespace", run.namespace], ...d.summary, ["Started by", run.startedBy || "—"]]);
  const t = d.timestamps, items = d.items;
  const pairs = [
    ["Created", fmtTime(t.created)], ["Started", fmtTime(t.started)],
    ["Last progress", fmtTime(t.lastProgress)], ["Completed", fmtTime(t.completed)],
    ["Duration", fmtDuration(run.durationSeconds)], ["Round", String(run.round)],
    ["Items", `${items.total ?? "?"} total, ${items.succeeded ?? 0} succeeded, ${items.failed ?? 0} failed, ${items.retrying ?? 0} retrying, ${items.pending ?? "?"} pending`],
  ];
  if (t.nextRetry) pairs.push(["Next retry", fmtTime(t.nextRetry)]);
  if (d.usage) pairs.push(["Usage", Object.entries(d.usage).map(([k, v]) => `${k}: ${v}`).join(", ")]);
  dl(document.getElementById("times"), pairs);
  // Buttons: what applies to the run now; none in read-only mode.
  const ro = config.readOnly;
  const buttons = {
    "act-retry": run.finished && run.failed > 0,
    "act-suspend": !run.finished && !run.suspended,
    "act-resume": !run.finished && run.suspended,
    "act-cancel": !run.finished,
    "act-copy": true,
  };
  for (const [id, applies] of Object.entries(buttons)) {
    const button = document.getElementById(id);
    button.disabled = ro || !applies;
    button.title = ro ? config.message : "";
  }
}

function renderConditions(d) {
  const items = d.conditions.map((c) => h("li", { class: `tone-${c.tone}` },
    h("strong", {}, c.sentence), " ",
    c.reason ? h("span", { class: "small" }, `(${c.reason}) `) : null,
    c.message ? h("span", {}, c.message, " ") : null,
    h("span", { class: "small" }, `since ${fmtTime(c.since)}`)));
  document.getElementById("conditions").replaceChildren(...(items.length ? items : [h("li", {}, "No conditions yet.")]));
}

function renderRounds(d) {
  const blocks = d.rounds.map((r) => h("div", { class: "round" },
    h("h3", {}, `Round ${r.round}`),
    h("p", { class: "small" }, `Job ${r.job}: ${r.completions ?? "?"} shards, ${r.active} active, ${r.succeeded} succeeded, ${r.failed} failed`),
    r.shards.length ? h("div", { class: "shards" }, ...r.shards.map((s) => {
      const bar = h("progress", { max: 100, "aria-label": `Round ${r.round} shard ${s.shard}` });
      if (s.percent !== null) bar.value = s.percent;
      return h("div", { class: "shard" }, h("strong", {}, `Shard ${s.shard}`), bar,
        h("div", {}, `${s.succeeded}/${s.itemsTotal} done${s.failed ? `, ${s.failed} failed` : ""}${s.finished ? " ✓" : ""}`),
        s.waiting ? h("div", { class: "small" }, s.waiting) : null);
    })) : h("p", { class: "small" }, "Shard reports are gone once the run's counts are in its status.")));
  document.getElementById("rounds").replaceChildren(...(blocks.length ? blocks : [h("p", {}, "No round has started yet.")]));
}

function renderFailures(d) {
  document.getElementById("failure-summary").replaceChildren(...d.failureSummary.map((f) =>
    h("li", {}, `${f.code}: ${f.count}${f.retryable ? " (retryable)" : ""}`)));
  tbody("failed-items", d.failedItems.map((f) => h("tr", { "data-item": f.id },
    h("td", {}, f.id), h("td", { class: "code" }, f.code), h("td", {}, f.message),
    h("td", { class: "num" }, f.attempts), h("td", { class: "num" }, f.shard))));
  if (!d.failedItems.length) tbody("failed-items", [h("tr", {}, h("td", { colspan: 5 }, "No failed items."))]);
}

function renderEvaluation(d) {
  const section = document.getElementById("evaluation-section");
  section.hidden = !d.evaluation;
  if (!d.evaluation) return;
  const flat = Object.entries(d.evaluation).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  dl(document.getElementById("evaluation"), flat);
}

function renderEvents(d) {
  tbody("events", d.events.map((e) => h("tr", {},
    h("td", { class: "small" }, fmtTime(e.time)), h("td", {}, e.type),
    h("td", {}, e.reason), h("td", {}, e.message + (e.count > 1 ? ` (×${e.count})` : "")))));
}

function renderPods(d) {
  document.getElementById("pods").replaceChildren(...d.pods.map((p) => h("li", {},
    h("span", {}, `${p.role}${p.round !== "" ? " round " + p.round : ""}${p.shard !== null && p.shard !== undefined ? " shard " + p.shard : ""}`),
    h("code", { class: "small" }, p.name), h("span", { class: "small" }, `${p.phase}${p.restarts ? `, ${p.restarts} restarts` : ""}`),
    ...p.containers.map((c) => h("button", { type: "button", onclick: () => showLog(p.name, c) },
      p.containers.length > 1 ? `Log of ${c}` : "Show log")))));
  if (!d.pods.length) document.getElementById("pods").replaceChildren(h("li", {}, "No pods (finished Jobs' pods may be gone)."));
}

async function showLog(pod, container) {
  const pre = document.getElementById("log");
  pre.hidden = false;
  pre.textContent = `Loading the log of ${pod}…`;
  try {
    pre.textContent = await api(`${BASE}/logs/${encodeURIComponent(pod)}?container=${encodeURIComponent(container)}`) || "(empty log)";
  } catch (error) {
    pre.textContent = `Cannot read the log: ${error.message}`;
  }
  pre.focus();
}

function renderDownloads(d) {
  const links = [["predictions", "Predictions (JSONL)"], ["failures", "Failures (JSONL)"]];
  if (d.row.finished) links.push(["manifest", "Manifest (JSON)"]);
  if (d.evaluation) links.push(["evaluation", "Evaluation (JSON)"]);
  document.getElementById("downloads").replaceChildren(...links.map(([what, label]) =>
    h("li", {}, h("a", { href: `${BASE}/download/${what}`, download: true }, label))));
}

function cell(column, value) {
  if (column === "id" && detail && detail.images && /\.(png|jpe?g|gif|bmp|webp|tiff?)$/i.test(String(value))) {
    return h("td", {}, h("img", { class: "thumb", src: `${BASE}/thumbnail?id=${encodeURIComponent(value)}`, alt: `Image ${value}`, loading: "lazy" }), h("span", { class: "small" }, value));
  }
  return h("td", { class: typeof value === "number" ? "num" : "" }, value === null ? "—" : String(value));
}

async function loadResults() {
  const note = document.getElementById("results-note");
  try {
    const page = await api(`${BASE}/results?offset=${resultsOffset}&limit=${PAGE}`);
    note.textContent = page.note || (page.finished ? "" : "The run has not finished: these are the predictions committed so far.");
    document.querySelector("#results thead").replaceChildren(h("tr", {}, ...page.columns.map((c) => h("th", { scope: "col" }, c))));
    tbody("results", page.rows.map((r) => h("tr", {}, ...page.columns.map((c) => cell(c, r[c] ?? null)))));
    document.getElementById("results-range").textContent = page.rows.length ? `Rows ${resultsOffset + 1}–${resultsOffset + page.rows.length}` : "No predictions yet";
    document.getElementById("results-prev").disabled = resultsOffset === 0;
    document.getElementById("results-next").disabled = !page.more;
  } catch (error) {
    note.textContent = `Cannot read the results: ${error.message}`;
  }
}

async function refresh() {
  try {
    detail = await api(BASE);
  } catch (error) {
    showError(error.message);
    return;
  }
  showError("");
  renderHeader(detail);
  renderConditions(detail);
  renderRounds(detail);
  renderFailures(detail);
  renderEvaluation(detail);
  renderEvents(detail);
  renderPods(detail);
  renderDownloads(detail);
  if (resultsOffset === 0) loadResults();
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 700);
}

async function act(action, button) {
  const result = document.getElementById("action-result");
  if (action === "cancel" && button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Confirm: cancel the run";
    setTimeout(() => { button.dataset.armed = ""; button.textContent = "Cancel run"; }, 5000);
    return;
  }
  try {
    const answer = await post(`${BASE}/actions/${action}`);
    result.textContent = answer.message;
    scheduleRefresh();
  } catch (error) {
    result.textContent = `Refused: ${error.message}`;
  }
}

async function openEditor() {
  const editor = document.getElementById("editor");
  editor.hidden = false;
  document.getElementById("editor-namespace").value = NAMESPACE;
  document.getElementById("editor-text").value = await api(`${BASE}/template`);
  document.getElementById("editor-text").focus();
}

async function submitEditor(dryRun) {
  const result = document.getElementById("editor-result");
  const namespace = document.getElementById("editor-namespace").value.trim();
  result.textContent = dryRun ? "Validating…" : "Creating…";
  try {
    const answer = await post(`/api/runs/${encodeURIComponent(namespace)}${dryRun ? "?dryRun=true" : ""}`, document.getElementById("editor-text").value);
    result.replaceChildren(answer.message);
    if (!dryRun) result.append(" ", h("a", { href: `/runs/${encodeURIComponent(namespace)}/${encodeURIComponent(answer.name)}` }, "Open it"));
  } catch (error) {
    result.textContent = `Refused: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  try { config = await loadConfig(); } catch (error) { showError(error.message); }
  for (const action of ["retry", "suspend", "resume", "cancel"]) {
    const button = document.getElementById(`act-${action}`);
    button.addEventListener("click", () => act(action, button));
  }
  document.getElementById("act-copy").addEventListener("click", openEditor);
  document.getElementById("editor-validate").addEventListener("click", () => submitEditor(true));
  document.getElementById("editor-create").addEventListener("click", () => submitEditor(false));
  document.getElementById("editor-close").addEventListener("click", () => { document.getElementById("editor").hidden = true; });
  document.getElementById("results-prev").addEventListener("click", () => { resultsOffset = Math.max(0, resultsOffset - PAGE); loadResults(); });
  document.getElementById("results-next").addEventListener("click", () => { resultsOffset += PAGE; loadResults(); });
  await refresh();
  liveStream(`/api/stream?namespace=${encodeURIComponent(NAMESPACE)}&name=${encodeURIComponent(NAME)}`, (message) => {
    if (message.type === "error") { showError(message.message); return; }
    const run = message.type === "snapshot" ? message.runs[0] : message.run;
    if (!run || run.resourceVersion === lastVersion) return;
    lastVersion = run.resourceVersion;
    scheduleRefresh();
  });
});
