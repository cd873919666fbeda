// The search page. The URL carries the search (?q=red+car&k=12&label=a&min_score=0.2&cutoff=autocut, or ?similar=ID),
// so a search can be linked and reloaded. Every piece of user or index text goes into the page with
// textContent, never as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function currentParams() {
  return new URLSearchParams(window.location.search);
}

function filterParams() {
  const params = new URLSearchParams();
  params.set("k", $("#k").value || "12");
  if ($("#min-score").value !== "") params.set("min_score", $("#min-score").value);
  if ($("#cutoff").value !== "") params.set("cutoff", $("#cutoff").value);
  for (const box of document.querySelectorAll("#labels input:checked")) params.append("label", box.value);
  return params;
}

// The calibrated threshold is calibrated on text queries (the gateway refuses it for image ones):
// an image search sends no cut-off instead, and its status line says so.
const TEXT_ONLY_NOTE = "; the calibrated cut-off applies to text queries only, so none was applied";

function forImageSearch(params) {
  if (params.get("cutoff") !== "calibrated") return "";
  params.delete("cutoff");
  return TEXT_ONLY_NOTE;
}

async function callApi(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error("The page's server cannot be reached. Is the stack running ('make up')?");
  }
  let body = {};
  try {
    body = await response.json();
  } catch (error) {
    body = { error: `unexpected answer (HTTP ${response.status})` };
  }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function renderHits(result, what, note = "") {
  const grid = $("#grid");
  grid.replaceChildren();
  if (result.hits.length === 0) {
    setStatus(`No images match ${what}${note}.`);
    return;
  }
  const truncated = result.query_truncated ? " (the query was cut to the model's 77 tokens)" : "";
  let cut = "";
  if (result.cutoff_dropped > 0) {
    const below = result.cutoff_score === null ? "" : ` below ${result.cutoff_score.toFixed(4)}`;
    cut = ` (${result.cutoff} cut-off dropped ${result.cutoff_dropped}${below})`;
  }
  setStatus(`${result.hits.length} images for ${what} in ${Math.round(result.took_ms)} ms${truncated}${cut}${note}.`);
  for (const hit of result.hits) {
    const item = element("li");
    const image = element("img");
    image.src = hit.thumb;
    image.alt = hit.id;
    image.loading = "lazy";
    item.append(image);
    const meta = element("div", "meta");
    meta.append(element("span", "score", hit.score.toFixed(4)));
    meta.append(element("span", "id", hit.id));
    const tags = element("div", "tags");
    for (const label of hit.labels) tags.append(element("span", "tag", label));
    meta.append(tags);
    const more = element("button", "secondary", "More like this");
    more.type = "button";
    more.setAttribute("aria-label", `More images like ${hit.id}`);
    more.addEventListener("click", () => navigate({ similar: hit.id }));
    meta.append(more);
    item.append(meta);
    grid.append(item);
  }
}

async function run() {
  const params = currentParams();
  const query = params.get("q") || "";
  const similar = params.get("similar") || "";
  $("#q").value = query;
  if (params.get("k")) $("#k").value = params.get("k");
  if (params.get("min_score") !== null) $("#min-score").value = params.get("min_score");
  $("#cutoff").value = params.get("cutoff") || "";
  const wanted = new Set(params.getAll("label"));
  for (const box of document.querySelectorAll("#labels input")) box.checked = wanted.has(box.value);
  if (!query && !similar) return;
  const api = new URLSearchParams(params);
  const what = similar ? `images like “${similar}”` : `“${query}”`;
  setStatus(`Searching for ${what}…`);
  $("#grid").setAttribute("aria-busy", "true");
  try {
    if (similar) {
      api.set("id", similar);
      const note = forImageSearch(api);
      renderHits(await callApi(`/api/similar?${api}`), what, note);
    } else {
      renderHits(await callApi(`/api/search?${api}`), what);
    }
  } catch (error) {
    $("#grid").replaceChildren();
    setStatus(error.message, true);
  } finally {
    $("#grid").removeAttribute("aria-busy");
  }
}

function navigate(fields) {
  const params = filterParams();
  for (const [key, value] of Object.entries(fields)) params.set(key, value);
  window.history.pushState(null, "", `/?${params}`);
  run();
}

async function searchByImage(file) {
  setStatus(`Searching for images like ${file.name}…`);
  try {
    const params = filterParams();
    const note = forImageSearch(params);
    const result = await callApi(`/api/search-image?${params}`, { method: "POST", body: file, headers: { "content-type": "application/octet-stream" } });
    renderHits(result, `the image ${file.name}`, note);
  } catch (error) {
    $("#grid").replaceChildren();
    setStatus(error.message, true);
  }
}

async function loadInfo() {
  try {
    const info = await callApi("/api/info");
    $("#model").textContent = `model ${info.model_id} · ${info.count} images`;
    $("#random-warning").hidden = !info.random_weights;
    const fieldset = $("#labels");
    $("#labels-empty").hidden = info.labels.length > 0;
    for (const label of info.labels) {
      const wrapper = element("label");
      const box = element("input");
      box.type = "checkbox";
      box.name = "label";
      box.value = label;
      wrapper.append(box, " ", element("span", "", label));
      fieldset.append(wrapper);
    }
    if (info.count === 0) setStatus("Nothing is indexed yet: run 't2i reindex PATH' to add images.");
  } catch (error) {
    setStatus(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#search").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ q: $("#q").value.trim() });
  });
  $("#image").addEventListener("change", () => {
    const file = $("#image").files[0];
    if (file) searchByImage(file);
  });
  window.addEventListener("popstate", run);
  await loadInfo();
  await run();
});
