// subpixel's page: one image in, the chosen method's result out, shown against nearest and
// bicubic of the same input. Plain DOM and fetch; nothing is loaded from anywhere else.
"use strict";

const KEY_STORAGE = "subpixel.apiKey";
const COMPARISONS = ["nearest", "bicubic"];
const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

const $ = (id) => document.getElementById(id);
const el = {
  app: $("app"), form: $("controls"), drop: $("drop"), file: $("file"), fileName: $("file-name"),
  scale: $("scale"), method: $("method"), budgetField: $("budget-field"), budget: $("budget"),
  keyField: $("key-field"), key: $("key"), keySave: $("key-save"), run: $("run"),
  status: $("status"), error: $("error"), errorTitle: $("error-title"), errorDetail: $("error-detail"),
  info: $("info"), infoMethod: $("info-method"), infoModel: $("info-model"), infoSize: $("info-size"),
  infoAuto: $("info-auto"), timing: $("timing"), download: $("download"),
  viewer: $("viewer"), compare: $("compare"), zoom: $("zoom"), frame: $("frame"),
  viewport: $("viewport"), stage: $("stage"), under: $("under"), result: $("result"),
  divider: $("divider"), legendUnder: $("legend-under"), legendResult: $("legend-result"),
};

const state = {
  file: null,
  methods: {},   // name -> scales, from GET /v1/methods
  run: 0,        // bumped by every run: an answer to an older run is dropped
  abort: null,   // the AbortController of the run in flight
  urls: {},      // object URLs on screen: result, nearest, bicubic
  split: 0.5,    // the divider, as a fraction of the frame's width
  methodChosen: false,
};

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, title, detail) {
    super(title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// fetch with the API key; a non-2xx answer becomes an ApiError carrying the problem's text.
async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...init.headers } });
  if (!response.ok) throw await problemOf(response);
  return response;
}

async function problemOf(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      const problem = await response.json();
      return new ApiError(response.status, problem.title || `HTTP ${response.status}`, problem.detail || "");
    } catch {
      // Not JSON after all: described by its status below.
    }
  }
  // Not ours (a proxy's error page, say): the status is all we can trust.
  return new ApiError(response.status, `HTTP ${response.status} ${response.statusText}`.trim(),
    "The server's answer is not a problem description.");
}

function upscaleUrl(method) {
  const query = new URLSearchParams({ scale: el.scale.value, method });
  if (method === "auto" && el.budget.value) query.set("max_latency_ms", el.budget.value);
  return `/v1/upscale?${query}`;
}

async function upscale(file, method, signal) {
  // The file itself is the body; its type tells the server what it is.
  const response = await api(upscaleUrl(method), {
    method: "POST", body: file, signal,
    headers: { "Content-Type": file.type || "application/octet-stream" },
  });
  const blob = await response.blob();
  if (!blob.type.startsWith("image/")) {
    throw new ApiError(response.status, "Not an image", `The server answered ${blob.type || "no content type"}.`);
  }
  return { blob, headers: response.headers };
}

// "read;dur=0.12, decode;dur=1.05, ...": a name, then ;-separated parameters.
function parseServerTiming(header) {
  return (header || "").split(",").map((entry) => {
    const [name, ...params] = entry.trim().split(";");
    const dur = params.map((p) => p.trim().split("=")).find(([k]) => k === "dur");
    return { name: name.trim(), ms: dur ? Number(dur[1]) : NaN };
  }).filter((m) => m.name);
}

// ---- methods and the key ---------------------------------------------------------------

async function loadMethods() {
  try {
    const list = await (await api("/v1/methods")).json();
    state.methods = Object.fromEntries(list.methods.map((m) => [m.name, m.scales]));
    fillMethods();
    return true;
  } catch (error) {
    fail(error);
    return false;
  }
}

// The options are every method plus auto; those without the chosen scale are disabled.
function fillMethods() {
  const scale = Number(el.scale.value);
  const previous = el.method.value;
  el.method.replaceChildren(new Option("auto", "auto"));
  for (const [name, scales] of Object.entries(state.methods)) {
    const option = new Option(name, name);
    option.disabled = !scales.includes(scale);
    el.method.add(option);
  }
  const usable = (name) => [...el.method.options].some((o) => o.value === name && !o.disabled);
  // Until someone picks a method, espcn is the default; auto until the list is in.
  const keep = state.methodChosen && usable(previous);
  el.method.value = keep ? previous : usable("espcn") ? "espcn" : "auto";
  showBudget();
}

function showBudget() {
  el.budgetField.hidden = el.method.value !== "auto";
}

function showKeyField() {
  // Filled only as it appears: a later 401 must not overwrite what is being typed.
  if (el.keyField.hidden) el.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  el.keyField.hidden = false;
  el.key.focus();
}

async function saveKey() {
  const key = el.key.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  showError(null);
  // Retry what the missing key stopped: the method list, then the pending image.
  if (await loadMethods()) run();
}

// ---- a run: the chosen method, then the two comparisons --------------------------------

function pick(file) {
  if (!file) return;
  state.file = file;
  el.fileName.textContent = `${file.name} (${formatBytes(file.size)})`;
  el.run.disabled = false;
  run();
}

async function run() {
  const file = state.file;
  if (!file) return;
  state.abort?.abort();
  const abort = new AbortController();
  state.abort = abort;
  const generation = ++state.run;
  const requested = el.method.value;
  const started = performance.now();
  hideResult();
  showError(null);
  setState("busy", `Upscaling ${file.name} x${el.scale.value} with ${requested}`);
  try {
    const main = await upscale(file, requested, abort.signal);
    const used = main.headers.get("X-SR-Method") || requested;
    // Requested after the result, not beside it: on a small server they would share its
    // cores and inflate the timings shown. Cheap, and skipped when the result is one of them.
    const others = await Promise.all(
      COMPARISONS.map((m) => (m === used ? main : upscale(file, m, abort.signal))),
    );
    if (generation !== state.run) return;
    const shown = await show(generation, file, main, used,
      Object.fromEntries(COMPARISONS.map((m, i) => [m, others[i]])));
    if (!shown) return;
    const requests = 1 + COMPARISONS.filter((m) => m !== used).length;
    setState("done", `Done in ${Math.round(performance.now() - started)} ms (${requests} requests).`);
  } catch (error) {
    if (generation !== state.run || error.name === "AbortError") return;
    hideResult();
    fail(error);
  }
}

// Puts a run's answers on screen; false when a newer run started meanwhile.
async function show(generation, file, main, used, comparisons) {
  state.urls.result = URL.createObjectURL(main.blob);
  for (const [name, answer] of Object.entries(comparisons)) state.urls[name] = URL.createObjectURL(answer.blob);
  // Decode before showing: an image the browser cannot draw is an error, not a broken icon.
  await Promise.all([setImage(el.result, state.urls.result), setImage(el.under, state.urls[el.compare.value])]);
  if (generation !== state.run) return false;

  const scale = Number(main.headers.get("X-SR-Scale") || el.scale.value);
  const { naturalWidth: w, naturalHeight: h } = el.result;
  el.infoMethod.textContent = used;
  el.infoModel.textContent = main.headers.get("X-SR-Model") || "none (classical resampler)";
  el.infoSize.textContent = `${w / scale}x${h / scale} → ${w}x${h} (x${scale}), ${formatBytes(main.blob.size)}`;
  const note = main.headers.get("X-SR-Auto");
  el.infoAuto.hidden = !note;
  el.infoAuto.textContent = note ? `auto: ${note}` : "";
  showTiming(parseServerTiming(main.headers.get("Server-Timing")));

  const base = file.name.replace(/\.[^.]*$/, "") || "image";
  el.download.href = state.urls.result;
  el.download.download = `${base}-x${scale}-${used}.${EXTENSIONS[main.blob.type] || "img"}`;
  el.legendResult.textContent = used;
  el.legendUnder.textContent = el.compare.value;

  el.info.hidden = false;
  el.viewer.hidden = false;
  applyZoom(); // needs the viewer laid out
  return true;
}

function setImage(img, url) {
  img.src = url;
  return img.decode().catch(() => {
    throw new ApiError(0, "The result cannot be displayed", "The browser could not decode the image the server sent.");
  });
}

function hideResult() {
  el.viewer.hidden = true;
  el.info.hidden = true;
  el.result.removeAttribute("src");
  el.under.removeAttribute("src");
  el.download.removeAttribute("href");
  for (const url of Object.values(state.urls)) URL.revokeObjectURL(url);
  state.urls = {};
}

function showTiming(metrics) {
  const total = metrics.find((m) => m.name === "total")?.ms || Math.max(...metrics.map((m) => m.ms || 0), 1);
  el.timing.replaceChildren(...metrics.map(({ name, ms }) => {
    const item = document.createElement("li");
    item.className = name === "total" ? "total" : "";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.min(100, (100 * (ms || 0)) / total)}%`;
    item.append(span(name), bar, span(Number.isFinite(ms) ? `${ms.toFixed(2)} ms` : "?", "ms"));
    return item;
  }));
}

// ---- feedback ----------------------------------------------------------------------------

function setState(name, text = "") {
  el.app.dataset.state = name;
  el.status.textContent = text;
}

function fail(error) {
  const problem = error instanceof ApiError ? error
    : new ApiError(0, "The request failed", String(error.message || error));
  setState("error");
  showError(problem);
  if (problem.status === 401) showKeyField();
}

function showError(problem) {
  el.error.hidden = !problem;
  el.errorTitle.textContent = problem ? problem.title : "";
  el.errorDetail.textContent = problem ? problem.detail : "";
}

function span(text, className = "") {
  const node = document.createElement("span");
  node.textContent = text;
  node.className = className;
  return node;
}

function formatBytes(n) {
  return n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

// ---- the viewer: zoom, divider, pan ------------------------------------------------------

function applyZoom() {
  const w = el.result.naturalWidth;
  const h = el.result.naturalHeight;
  if (!w || !h) return;
  const vp = el.viewport;
  const fit = Math.min(vp.clientWidth / w, vp.clientHeight / h);
  const zoom = el.zoom.value === "fit" ? fit : Number(el.zoom.value);
  el.zoom.options[0].textContent = `fit (${Math.round(fit * 100)}%)`;
  // Keep the image point at the centre of the view where it is.
  const oldW = el.stage.offsetWidth || w * zoom;
  const oldH = el.stage.offsetHeight || h * zoom;
  const cx = (vp.scrollLeft + vp.clientWidth / 2) / oldW;
  const cy = (vp.scrollTop + vp.clientHeight / 2) / oldH;
  el.stage.style.width = `${Math.floor(w * zoom)}px`;
  el.stage.style.height = `${Math.floor(h * zoom)}px`;
  el.stage.classList.toggle("pixelated", zoom > 1);
  vp.scrollLeft = cx * w * zoom - vp.clientWidth / 2;
  vp.scrollTop = cy * h * zoom - vp.clientHeight / 2;
  updateClip();
}

// The divider stays over the frame while the image scrolls under it, so the result's clip
// is measured on screen: from the stage's left edge to the divider.
function updateClip() {
  el.divider.style.left = `${state.split * 100}%`;
  el.divider.setAttribute("aria-valuenow", String(Math.round(state.split * 100)));
  const frame = el.frame.getBoundingClientRect();
  const stage = el.stage.getBoundingClientRect();
  const x = Math.min(Math.max(frame.left + state.split * frame.width - stage.left, 0), stage.width);
  el.result.style.clipPath = `inset(0 0 0 ${x}px)`;
}

function moveSplit(fraction) {
  state.split = Math.min(Math.max(fraction, 0), 1);
  updateClip();
}

function dragDivider(event) {
  const frame = el.frame.getBoundingClientRect();
  moveSplit((event.clientX - frame.left) / frame.width);
}

const DIVIDER_KEYS = { ArrowLeft: -0.02, ArrowRight: 0.02, ArrowDown: -0.02, ArrowUp: 0.02 };

function onDividerKey(event) {
  if (event.key === "Home") moveSplit(0);
  else if (event.key === "End") moveSplit(1);
  else if (event.key in DIVIDER_KEYS) moveSplit(state.split + DIVIDER_KEYS[event.key] * (event.shiftKey ? 5 : 1));
  else return;
  event.preventDefault();
}

// Mouse drag pans; touch screens pan the scrollable view natively.
let pan = null;

function startPan(event) {
  if (event.pointerType !== "mouse" || event.button !== 0) return;
  pan = { x: event.clientX, y: event.clientY, left: el.viewport.scrollLeft, top: el.viewport.scrollTop };
  el.viewport.setPointerCapture(event.pointerId);
  el.viewport.classList.add("panning");
}

function movePan(event) {
  if (!pan) return;
  el.viewport.scrollLeft = pan.left - (event.clientX - pan.x);
  el.viewport.scrollTop = pan.top - (event.clientY - pan.y);
}

function endPan() {
  pan = null;
  el.viewport.classList.remove("panning");
}

// ---- wiring ------------------------------------------------------------------------------

function wire() {
  el.file.addEventListener("change", () => pick(el.file.files[0]));
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  el.scale.addEventListener("change", () => {
    fillMethods();
    run();
  });
  el.method.addEventListener("change", () => {
    state.methodChosen = true;
    showBudget();
    run();
  });
  el.budget.addEventListener("change", run);
  el.keySave.addEventListener("click", saveKey);
  el.key.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault(); // not the form's submit: the key comes first
    saveKey();
  });

  // Dropping anywhere on the page counts: a near miss must not make the browser open the file.
  for (const type of ["dragenter", "dragover"]) {
    window.addEventListener(type, (event) => {
      event.preventDefault();
      el.drop.classList.add("over");
    });
  }
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) el.drop.classList.remove("over");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    el.drop.classList.remove("over");
    pick(event.dataTransfer.files[0]);
  });

  el.compare.addEventListener("change", () => {
    if (state.urls[el.compare.value]) el.under.src = state.urls[el.compare.value];
    el.legendUnder.textContent = el.compare.value;
  });
  el.zoom.addEventListener("change", applyZoom);
  el.viewport.addEventListener("scroll", updateClip);
  window.addEventListener("resize", applyZoom);

  el.divider.addEventListener("pointerdown", (event) => {
    el.divider.setPointerCapture(event.pointerId);
    dragDivider(event);
  });
  el.divider.addEventListener("pointermove", (event) => {
    if (el.divider.hasPointerCapture(event.pointerId)) dragDivider(event);
  });
  el.divider.addEventListener("keydown", onDividerKey);
  el.viewport.addEventListener("pointerdown", startPan);
  el.viewport.addEventListener("pointermove", movePan);
  el.viewport.addEventListener("pointerup", endPan);
  el.viewport.addEventListener("pointercancel", endPan);
}

wire();
if (sessionStorage.getItem(KEY_STORAGE)) el.keyField.hidden = false;
el.key.value = sessionStorage.getItem(KEY_STORAGE) || "";
loadMethods();
