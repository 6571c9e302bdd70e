// The inspection page: one query through SPLADE (explained) and BM25, side by side.
// Plain DOM, no framework and nothing fetched from elsewhere: the service serves all of it.
// Text from the index is only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const SHOWN_TERMS = 10; // contributions listed per hit
const SHOWN_QUERY_TERMS = 48; // query vector terms listed, heaviest first

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function term(name, expansion) {
  return el("span", "term " + (expansion ? "expansion" : "text"), name);
}

function bar(fraction, expansion) {
  const outer = el("span", "bar " + (expansion ? "expansion" : "text"));
  const fill = el("span", "fill");
  fill.style.width = (100 * Math.max(0, Math.min(1, fraction))).toFixed(1) + "%";
  outer.append(fill);
  return outer;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showError(id, error) {
  const node = $(id);
  node.hidden = !error;
  node.textContent = error ? String(error.message || error) : "";
}

function renderVector(report) {
  // Heaviest first: an object's integer-like keys ("0", "42") would otherwise come first.
  const terms = Object.entries(report.query_vector).sort(([a, x], [b, y]) => y.weight - x.weight || (a < b ? -1 : 1));
  const largest = Math.max(...terms.map(([, t]) => t.weight), 0);
  const expansions = terms.filter(([, t]) => t.expansion).length;
  $("query-summary").textContent =
    `${terms.length} terms: ${terms.length - expansions} from the text, ${expansions} expansions; ` +
    `${report.form} query on ${report.engine.kind} ${report.engine.version}, encoded in ${report.encode_ms} ms`;
  const list = $("vector");
  list.replaceChildren();
  for (const [name, t] of terms.slice(0, SHOWN_QUERY_TERMS)) {
    const item = el("li");
    item.title = `weight ${t.weight}`;
    item.append(term(name, t.expansion), bar(largest ? t.weight / largest : 0, t.expansion));
    list.append(item);
  }
  if (terms.length > SHOWN_QUERY_TERMS) list.append(el("li", "muted", `+${terms.length - SHOWN_QUERY_TERMS} lighter terms`));
}

function hitHead(hit, other, otherName) {
  const head = el("div", "head");
  head.append(el("span", "rank", hit.rank + "."), el("span", "score", hit.score.toFixed(4)),
              el("span", "title", hit.title || "(no title)"), el("span", "id", `[${hit.id}]`));
  const rank = other.get(hit.id);
  head.append(rank ? el("span", "badge shared", `${otherName} #${rank}`) : el("span", "badge", `not in ${otherName}`));
  return head;
}

function renderContributions(hit, largest) {
  const table = el("table", "contributions");
  for (const c of hit.contributions.slice(0, SHOWN_TERMS)) {
    const row = el("tr", "contribution");
    const name = el("td");
    name.append(term(c.term, c.expansion));
    const share = el("td");
    share.append(bar(largest ? c.score / largest : 0, c.expansion));
    row.append(name, share,
               el("td", "numbers", `${c.query_weight.toFixed(2)} × ${c.document_weight.toFixed(2)} = ${c.score.toFixed(3)}`));
    table.append(row);
  }
  const more = hit.contributions.length - SHOWN_TERMS;
  if (more > 0) {
    const row = el("tr");
    row.append(el("td", "numbers", `+${more} more terms`));
    table.append(row);
  }
  if (!hit.contributions.length) {
    const row = el("tr");
    row.append(el("td", "numbers", "no shared term (fused from BM25)"));
    table.append(row);
  }
  return table;
}

function renderHits(listId, summaryId, report, other, otherName) {
  const list = $(listId);
  list.replaceChildren();
  const largest = Math.max(0, ...report.hits.flatMap((hit) => (hit.contributions || []).map((c) => c.score)));
  for (const hit of report.hits) {
    const item = el("li", "hit");
    item.dataset.id = hit.id;
    item.append(hitHead(hit, other, otherName));
    if (hit.snippet) item.append(el("div", "snippet", hit.snippet));
    if (hit.contributions) item.append(renderContributions(hit, largest));
    list.append(item);
  }
  const took = report.took_ms === null ? "" : `, engine ${report.took_ms} ms`;
  $(summaryId).textContent = report.hits.length ? `${report.hits.length} hits${took}` : "no hits";
}

function ranks(report) {
  return new Map(report ? report.hits.map((hit) => [hit.id, hit.rank]) : []);
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  const k = Number($("k").value) || 10;
  const hybrid = $("hybrid").value || null;
  const params = new URLSearchParams({ q: query, k: String(k) });
  if (hybrid) params.set("hybrid", hybrid);
  history.replaceState(null, "", "?" + params);
  document.body.dataset.state = "loading";
  const [splade, bm25] = await Promise.allSettled([
    post("/search", { query, k, hybrid, explain: true }),
    post("/search", { query, k, method: "bm25" }),
  ]);
  const sparse = splade.status === "fulfilled" ? splade.value : null;
  const baseline = bm25.status === "fulfilled" ? bm25.value : null;
  showError("error", null);
  showError("splade-error", sparse ? null : splade.reason);
  showError("bm25-error", baseline ? null : bm25.reason);
  $("query").hidden = !sparse;
  $("columns").hidden = false;
  if (sparse) {
    renderVector(sparse);
    renderHits("splade-hits", "splade-summary", sparse, ranks(baseline), "BM25");
  } else {
    $("splade-hits").replaceChildren();
  }
  if (baseline) renderHits("bm25-hits", "bm25-summary", baseline, ranks(sparse), "SPLADE");
  else $("bm25-hits").replaceChildren();
  document.body.dataset.state = sparse || baseline ? "done" : "error";
}

async function about() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    $("about").textContent = `index ${health.index} · ${health.engine.kind} ${health.engine.version} · ` +
      `model ${health.model}${health.query_encoder === "static" ? " (static queries)" : ""} · ` +
      `splade-es ${health.version}`;
    $("k").max = String(health.settings.max_k);
  } catch (error) {
    $("about").textContent = "the service did not answer /health";
  }
}

function start() {
  $("search").addEventListener("submit", search);
  const params = new URLSearchParams(location.search);
  about();
  if (params.get("q")) { // a shared link: run its search
    $("q").value = params.get("q");
    if (params.get("k")) $("k").value = params.get("k");
    if (params.get("hybrid")) $("hybrid").value = params.get("hybrid");
    $("search").requestSubmit();
  }
}

start();
