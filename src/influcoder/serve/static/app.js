// influcoder serve: the web page. Plain JS, no libraries (works offline). Every text from the
// server is put in the page with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, result: null, ranking: null, unwanted: [], filters: {} };

// ---- token: taken from ?token= once, kept for this tab, removed from the address bar
(function takeToken() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem("influcoder-token", token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
})();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, body, raw = false) {
  const headers = { "content-type": "application/json" };
  const token = sessionStorage.getItem("influcoder-token");
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch(path, body === undefined ? { headers } :
    { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    $("token-bar").hidden = false;
    throw new Error("this server needs a token (enter it above)");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return raw ? response : response.json();
}

const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "n/a" : Number(x).toFixed(d);
const clip = (s, n) => { s = s.replace(/\s+/g, " ").trim(); return s.length > n ? s.slice(0, n - 1) + "…" : s; };

// ---- the encoder's held-out fidelity estimate (from its card), or why there is none
function fidelityText(f) {
  if (!f) return "Encoder fidelity: no held-out estimate (distilled with --holdout-fraction 0, " +
    "or not distilled by influcoder)";
  const fig = (name, x) => `${name} ${fmt(x.value, 2)} [${fmt(x.low, 2)}, ${fmt(x.high, 2)}]`;
  return `Encoder fidelity on ${f.n_pool} pool samples x ${f.n_queries} queries it never ` +
    `saw (${Math.round(f.level * 100)}% intervals): ` +
    [fig("per-anchor", f.per_anchor_spearman), fig("aggregated", f.aggregated_spearman),
     fig("recall@10", f.recall_at_10)].join(", ") +
    (f.untrained_per_anchor_spearman === null ? "" :
      `; untrained per-anchor ${fmt(f.untrained_per_anchor_spearman, 2)}`) +
    (f.more_ground_truth ? `. ${f.more_ground_truth}.` : "");
}

// ---- start: what the pool holds, its metadata filters
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) { showError(e.message); return; }
  const info = state.info;
  $("pool-info").textContent = `${info.n.toLocaleString()} pool samples · ${info.encoder}` +
    (info.ground_truth ? ` · ground truth: ${info.ground_truth.path}` : "") +
    (info.query_gradients ? ` · query gradients taken like ${info.query_gradients}` : "");
  $("query-gradient-label").hidden = !info.query_gradients;
  $("fidelity-info").textContent = fidelityText(info.fidelity);
  const box = $("filters");
  box.replaceChildren();
  for (const [name, values] of Object.entries(info.facets)) {
    const select = el("select", { id: "filter-" + name, "data-field": name });
    select.append(el("option", { value: "", text: "any" }));
    for (const [value, count] of Object.entries(values)) {
      select.append(el("option", { value, text: `${value} (${count})` }));
    }
    select.addEventListener("change", () => { setFilter(name, select.value); });
    box.append(el("label", { class: "inline", text: name + " " }, select));
  }
  const groupBy = $("group-by");
  groupBy.replaceChildren(el("option", { value: "", text: "none" }),
    ...info.fields.map((name) => el("option", { value: name, text: name })));
  // learned is offered only when the encoder carries a learned pooler
  $("group-aggregate").replaceChildren(...info.group_aggregates.map((name) =>
    el("option", { value: name, text: name, ...(name === "softmax" ? { selected: "" } : {}) })));
}

function setFilter(name, value) {
  if (value) state.filters[name] = value; else delete state.filters[name];
  const select = $("filter-" + name);
  if (select) select.value = value || "";
  if ($("response").value.trim()) runQuery();
}

// ---- explain one output
async function runQuery(event) {
  if (event) event.preventDefault();
  showError("");
  const response = $("response").value;
  if (!response.trim()) { showError("write the model output to explain"); return; }
  const body = { prompt: $("prompt").value, response, k: Number($("k").value) || 10,
                 filters: state.filters, bins: 40 };
  const id = $("query-id").value.trim();
  if (id) body.id = id;
  if (state.info && state.info.query_gradients) body.query_gradient = $("query-gradient").checked;
  if ($("group-by").value) {
    body.group_by = $("group-by").value;
    body.group_aggregate = $("group-aggregate").value || "softmax";
  }
  $("run").disabled = true;
  try {
    state.result = await api("/api/attribute", body);
    renderResult(state.result);
  } catch (e) { showError(e.message); } finally { $("run").disabled = false; }
}

function renderResult(r) {
  $("results").hidden = false;
  const filtered = Object.keys(r.filters).length ?
    ` among ${r.n_candidates.toLocaleString()} matching ` +
    Object.entries(r.filters).map(([k, v]) => `${k}=${v.join("|")}`).join(", ") : "";
  $("summary").textContent = `${r.hits.length} most influential of ${r.n_pool.toLocaleString()} ` +
    `pool samples${filtered}` + (r.query_gradient ? ", by the output's own gradient" : "") +
    `. This query's scores over the pool: mean ${fmt(r.pool_scores.mean)}, ` +
    `max ${fmt(r.pool_scores.max)}.`;
  drawHistogram(r);
  const list = $("hits");
  list.replaceChildren(...r.hits.map((h) => renderHit(h, r.pool_scores)));
  renderGroundTruth(r.ground_truth);
  renderGroups(r.groups);
}

function renderGroups(g) {
  // the query's influence per group of a metadata field, over every pool sample (filters aside)
  const box = $("groups");
  box.replaceChildren();
  box.hidden = !g;
  if (!g) return;
  const missing = g.n_missing ? ` ${g.n_missing} pool samples lack ${g.field}: their group is ${g.missing_group}.` : "";
  box.append(el("p", { id: "groups-info", text: `Influence per ${g.field} over every pool sample's ` +
    `score, highest ${g.aggregate} first (softmax: AirRep's group score, the sum of softmax(|s|/${g.temperature}) × s ` +
    `over the group` + (g.rows.length && g.rows[0].learned != null ? "; learned: the encoder's learned pooling of the group" : "") +
    `; the metadata filters do not apply).${missing}` }));
  const stats = ["mean", "sum", "max", "softmax"].concat(g.rows.length && g.rows[0].learned != null ? ["learned"] : []);
  box.append(el("table", { id: "groups-table" },
    el("tr", {}, el("th", { text: g.field }), el("th", { text: "n" }), ...stats.map((s) => el("th", { text: s }))),
    ...g.rows.map((r) => el("tr", { "data-group": r.group }, el("td", { text: r.group }),
      el("td", { class: "num", text: r.n }), ...stats.map((s) => el("td", { class: "num", text: fmt(r[s], 4) }))))));
}

function renderHit(h, pool) {
  // the bar: where the score lies between this query's lowest and highest pool score
  const width = Math.max(0, Math.min(1, (h.score - pool.min) / ((pool.max - pool.min) || 1))) * 100;
  const chips = Object.entries(h.meta || {}).map(([k, v]) => {
    const value = typeof v === "string" ? v : JSON.stringify(v);
    return el("span", { class: "chip", title: "filter by " + k, "data-field": k, text: `${k}: ${value}`,
                        onclick: () => setFilter(k, value) });
  });
  const text = h.prompt ? `${h.prompt} → ${h.response}` : h.response;
  return el("li", { class: "hit", "data-id": h.id },
    el("div", { class: "hit-head" },
      el("span", { class: "rank", text: "#" + h.rank }),
      el("span", { class: "bar", title: "score (cosine) " + fmt(h.score, 4) },
        el("span", { style: `width:${width.toFixed(1)}%` })),
      el("span", { class: "score", text: fmt(h.score, 4) }),
      el("span", { class: "pct", title: "share of the pool scoring at or below this sample; z: standard deviations above the pool's mean",
                   text: `percentile ${fmt(h.percentile, 1)} · z ${fmt(h.z, 1)}` }),
      el("span", { class: "hit-id", text: h.id }), ...chips),
    el("p", { class: "preview", text: clip(text, 160) }),
    el("details", {}, el("summary", { text: "full text" }),
      el("div", { class: "full" }, el("b", { text: "prompt: " }), h.prompt || "(none)", "\n",
        el("b", { text: "response: " }), h.response)));
}

function drawHistogram(r) {
  const svg = $("histogram");
  svg.replaceChildren();
  const hist = r.histogram;
  if (!hist) return;
  const W = 360, H = 100, pad = 4, ns = "http://www.w3.org/2000/svg";
  const lo = hist.edges[0], hi = hist.edges[hist.edges.length - 1], span = (hi - lo) || 1;
  const x = (v) => pad + (W - 2 * pad) * (v - lo) / span;
  const top = Math.max(...hist.counts, 1);
  const node = (tag, attrs) => { const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  hist.counts.forEach((c, i) => {
    const h = (H - 10) * c / top;
    svg.append(node("rect", { class: "bin", x: x(hist.edges[i]), y: H - h,
      width: Math.max(1, x(hist.edges[i + 1]) - x(hist.edges[i]) - 1), height: h }));
  });
  for (const hit of r.hits) {
    const line = node("line", { class: "hit", x1: x(hit.score), x2: x(hit.score), y1: 0, y2: H });
    line.append(node("title", {})); line.firstChild.textContent = `#${hit.rank} ${hit.id}: ${fmt(hit.score, 4)}`;
    svg.append(line);
  }
  const label = (v, anchor) => { const t = node("text", { x: x(v), y: H + 14, "text-anchor": anchor });
    t.textContent = fmt(v, 2); svg.append(t); };
  label(lo, "start"); label(hi, "end");
}

function renderGroundTruth(gt) {
  const box = $("ground-truth");
  box.replaceChildren();
  box.hidden = !gt;
  if (!gt) return;
  if (!gt.in_store) { box.append(el("p", { id: "gt-message", text: gt.message })); return; }
  box.append(el("p", { class: "agreement", id: "gt-agreement",
    text: `Gradient ground truth for ${gt.query_id}: Spearman ${fmt(gt.spearman)} over ` +
          `${gt.n_common} pool samples · overlap@${gt.k} ${fmt(gt.overlap_at_k, 2)}` }));
  const table = (title, rows, other) => el("table", {},
    el("caption", { text: title }),
    el("tr", {}, el("th", { text: "rank" }), el("th", { text: "id" }), el("th", { text: "score" }),
      el("th", { text: other })),
    ...rows.map((r) => el("tr", {}, el("td", { class: "num", text: r.rank }), el("td", { text: r.id }),
      el("td", { class: "num", text: fmt(r.score, 4) }), el("td", { class: "num", text: r[other] }))));
  box.append(el("div", { class: "gt-tables" },
    table("gradient ranking", gt.gradient, "encoder_rank"),
    table("encoder ranking", gt.encoder, "gradient_rank")));
}

// ---- downloads, made here from the results already shown
function download(name, text, type) {
  const url = URL.createObjectURL(text instanceof Blob ? text : new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function resultRows(r) {
  return r.hits.map((h) => ({ query_id: r.query.id, rank: h.rank, id: h.id, score: h.score, z: h.z,
    percentile: h.percentile, prompt: h.prompt, response: h.response, meta: h.meta }));
}

function csvCell(v) {
  const s = typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "");
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function toCsv(rows) {
  const cols = Object.keys(rows[0] || {});
  return [cols.join(","), ...rows.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n") + "\n";
}

// ---- clean the training file
function queryOf(row) {
  const q = { prompt: typeof row.prompt === "string" ? row.prompt : "" };
  q.response = String(row.response ?? row.text ?? row.output ?? "");
  if (row.id !== undefined && row.id !== null) q.id = String(row.id);
  return q.response.trim() ? q : null;
}

// JSONL (a line that is not a JSON object is a response), or one JSON array of objects
function readUnwanted(text) {
  if (text.trim().startsWith("[")) {
    try { return JSON.parse(text).filter((r) => r && typeof r === "object").map(queryOf).filter(Boolean); }
    catch (e) { /* not one JSON array: read it line by line */ }
  }
  const queries = [];
  text.split(/\r?\n/).forEach((line) => {
    if (!line.trim()) return;
    let row = null;
    if (line.trim().startsWith("{")) { try { row = JSON.parse(line); } catch (e) { row = null; } }
    const q = row && typeof row === "object" ? queryOf(row) : { prompt: "", response: line };
    if (q) queries.push(q);
  });
  return queries;
}

async function rankPool() {
  showError("");
  $("rank").disabled = true;
  try {
    state.ranking = await api("/api/aggregate", { queries: state.unwanted, how: $("how").value,
                                                  k: Number($("review-k").value) || 50 });
    renderRanking(state.ranking);
  } catch (e) { showError(e.message); } finally { $("rank").disabled = false; }
}

function renderRanking(ranking) {
  $("ranking").hidden = false;
  $("ranking-rows").replaceChildren(...ranking.rows.map((r) => {
    const box = el("input", { type: "checkbox", "data-id": r.id, class: "remove" });
    box.checked = true;
    box.addEventListener("change", updateRemoval);
    const text = r.prompt ? `${r.prompt} → ${r.response}` : r.response;
    return el("tr", { "data-id": r.id },
      el("td", {}, box), el("td", { class: "num", text: r.rank }), el("td", { class: "hit-id", text: r.id }),
      el("td", { class: "num", text: fmt(r.score, 4) }), el("td", { class: "num", text: fmt(r.z, 1) }),
      el("td", {}, el("details", {}, el("summary", { text: clip(text, 90) }),
        el("div", { class: "full", text: text }))),
      el("td", { text: `${r.top_query_id} (${fmt(r.top_query_score, 3)})` }));
  }));
  updateRemoval();
}

function removedIds() {
  return [...document.querySelectorAll("#ranking-rows input.remove:checked")].map((b) => b.dataset.id);
}

function updateRemoval() {
  const n = removedIds().length, pool = state.ranking.n_pool;
  $("removal-info").textContent = `Removing ${n} of ${pool.toLocaleString()} pool samples ` +
    `(keeping ${(pool - n).toLocaleString()}), ranked by ${state.ranking.how} score over ` +
    `${state.ranking.n_queries} unwanted outputs.`;
}

async function downloadClean() {
  showError("");
  const format = $("clean-format").value;
  try {
    const response = await api("/api/filter/kept", { remove: removedIds(), format }, true);
    download("clean." + format, await response.blob());
  } catch (e) { showError(e.message); }
}

// ---- wiring
function showView(name) {
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== "view-" + name; });
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === name));
}

document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showView(t.dataset.view)));
$("query-form").addEventListener("submit", runQuery);
$("download-csv").addEventListener("click", () => download("attribution.csv", toCsv(resultRows(state.result)), "text/csv"));
$("download-jsonl").addEventListener("click", () => download("attribution.jsonl",
  resultRows(state.result).map((r) => JSON.stringify(r)).join("\n") + "\n", "application/x-ndjson"));
$("unwanted-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  state.unwanted = readUnwanted(await file.text());
  $("unwanted-info").textContent = `${state.unwanted.length} unwanted outputs read from ${file.name}`;
  $("rank").disabled = state.unwanted.length === 0;
});
$("group-by").addEventListener("change", () => { if ($("response").value.trim()) runQuery(); });
$("group-aggregate").addEventListener("change", () => { if ($("group-by").value && $("response").value.trim()) runQuery(); });
$("rank").addEventListener("click", rankPool);
$("download-clean").addEventListener("click", downloadClean);
$("token-save").addEventListener("click", () => {
  sessionStorage.setItem("influcoder-token", $("token-input").value);
  $("token-bar").hidden = true;
  start();
});
start();
