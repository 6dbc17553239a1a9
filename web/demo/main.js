// demo/main.js: the in-browser demo page (index.html, demo.css), plain ES modules on forge.js.
// Pick a model, a runtime and a target, load it with progress, then see sentence similarity
// as a live heatmap or chat with a streaming answer, and compare either with the engine.
// This module wires the page: the model, runtime and target pickers, loading with progress,
// and the start. The rest: similarity.js (heatmap), chat.js, panel.js (Running on),
// page.js (shared elements, state, selection, error line), dom.js (helpers).
//
// Stable hooks for tests (data-testid; ids in parentheses where they differ):
//   model-select (#model)      the models, one option per model (value: its name)
//   runtime-select (#runtime)  the runtimes that can run it (value: the models.json entry name)
//   target-select (#target)    auto | wasm | webgpu (options it cannot use are disabled)
//   load-button (#load)        loads the selection; "Loaded" while it is the loaded one
//   progress                   data-status: idle | loading | ready | error
//   progress-bar               role=progressbar, aria-valuenow = percent (0-100)
//   progress-text              "34.2 MB / 90.9 MB · 37%"
//   info-panel (#info)         data-loaded = "true" once the selected model runs; fields:
//                              info-model, info-runtime, info-backend, info-device, info-target,
//                              info-isolation, info-threads, info-load-ms, info-call-ms
//   why                        forge's reason for the target, verbatim ("fell back to WASM: …")
//   env-isolation, env-threads, env-webgpu   what this browser offers, before any load
//   embed-panel, chat-panel    the panel of the selected model's task; data-ready = "true" when loaded
//   sentences-input (#sentences)  one sentence per line; the heatmap follows as you type
//   heatmap                    <table>; data-count = sentences shown, data-texts = their JSON,
//                              aria-busy = "true" while computing
//   heatmap-cell               <td data-row data-col data-value> (data-value: full-precision cosine)
//   embed-stats                "3 sentences · 21 tokens · 12 ms"
//   embed-compare              "Compare with server" (embeddings)
//   embed-compare-result       data-min-cosine, data-max-diff; rows' compare-cosine cells (data-value)
//   chat-input, chat-send, chat-stop, chat-clear, chat-max-tokens
//   chat-system                the system prompt sent before the conversation (empty: none)
//   chat-history               <ol>; items chat-message (data-role = user | assistant)
//   chat-answer                the latest answer; data-state = streaming | done | stopped | error
//   chat-tps                   tokens/s of the latest answer; data-value = the number
//   chat-compare               "Compare with server" (chat)
//   chat-compare-result        browser and server answers side by side: server-answer, server-ms
//   error (error-text)         the last error as one readable line; hidden when there is none
import * as forge from "../forge.js";
import { wireChat } from "./chat.js";
import { $, h, mb } from "./dom.js";
import { RUNTIME_NAMES, TARGET_NAME, TASK_NAMES, clearError, loadedInfo, selectedForm, selectedGroup, showError, state, ui } from "./page.js";
import { renderEnv, renderInfo } from "./panel.js";
import { runEmbed, wireSimilarity } from "./similarity.js";

const RUNTIME_TARGETS = { ort: ["wasm", "webgpu"], pyodide: ["webgpu"], wllama: ["wasm"] }; // what each Mold can run on

// ---------- the model picker ----------
function groupModels(list) {
  const groups = new Map(); // a converted form is listed under its parent, even where only it was exported
  for (const entry of list) {
    const key = entry.parent ?? entry.name;
    if (!groups.has(key)) groups.set(key, { name: key, task: entry.task, forms: [] });
    groups.get(key).forms.push(entry);
  }
  for (const g of groups.values()) g.forms.sort((a, b) => (a.runtime === "ort" ? -1 : b.runtime === "ort" ? 1 : 0));
  return [...groups.values()].sort((a, b) => a.name.localeCompare(b.name));
}

function fillModels() {
  ui.model.replaceChildren(
    ...state.groups.map((g) => h("option", { value: g.name }, `${g.name} · ${TASK_NAMES[g.task] ?? g.task}`)),
  );
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && state.groups.some((g) => g.name === wanted)) ui.model.value = wanted;
  onModelChange();
}

function onModelChange() {
  const group = selectedGroup();
  if (!group) return;
  const shared = (runtime) => group.forms.filter((f) => f.runtime === runtime).length > 1;
  ui.runtime.replaceChildren(
    ...group.forms.map((f) => h("option", { value: f.name }, `${RUNTIME_NAMES[f.runtime] ?? f.runtime}${shared(f.runtime) ? ` · ${f.name}` : ""}`)),
  );
  const running = group.forms.find((f) => loadedInfo(f.name));
  ui.runtime.value = (running ?? group.forms[0]).name;
  onRuntimeChange();
}

function onRuntimeChange() {
  const runtime = selectedForm()?.runtime;
  const only = RUNTIME_TARGETS[runtime];
  for (const option of ui.target.options) {
    const target = option.value;
    if (target === "auto") continue;
    const reason = only && !only.includes(target) ? `${RUNTIME_NAMES[runtime]} runs on ${only.map(TARGET_NAME).join(" or ")}`
      : target === "webgpu" && state.env && !state.env.webgpu ? "off in this browser" : null;
    option.disabled = Boolean(reason);
    option.textContent = reason ? `${TARGET_NAME(target)} (${reason})` : TARGET_NAME(target);
  }
  if (ui.target.selectedOptions[0]?.disabled) ui.target.value = "auto";
  refreshView();
}

/** Show what the selection is: its panel, its info if loaded, the load button's state. */
function refreshView() {
  const group = selectedGroup();
  const form = selectedForm();
  if (!group || !form) return;
  const info = loadedInfo(form.name);
  const target = ui.target.value;
  const files = form.name === group.name ? form.format : `${form.name} (${form.format})`;
  ui["model-meta"].textContent = [TASK_NAMES[form.task] ?? form.task, files, mb(form.size), form.max_length ? `up to ${form.max_length} tokens` : null].filter(Boolean).join(" · ");
  ui["empty-panel"].hidden = true;
  const panel = group.task === "chat" ? ui["chat-panel"] : ui["embed-panel"];
  ui["embed-panel"].hidden = panel !== ui["embed-panel"];
  ui["chat-panel"].hidden = panel !== ui["chat-panel"];
  panel.dataset.ready = String(Boolean(info));
  for (const node of panel.querySelectorAll(".veil-name")) node.textContent = group.name;
  for (const node of panel.querySelectorAll("textarea, .composer button, .suggest button")) node.disabled = !info;
  const current = info && (target === "auto" || info.target === target);
  ui.load.textContent = state.loading ? "Loading…" : current ? "Loaded ✓" : info ? `Reload on ${TARGET_NAME(target)}` : "Load";
  ui.load.disabled = state.loading || Boolean(current);
  ui.load.classList.toggle("loaded", Boolean(current));
  for (const node of [ui.model, ui.runtime, ui.target]) node.disabled = state.loading;
  ui.runtime.disabled ||= group.forms.length < 2;
  if (!state.loading) {
    if (info) setProgress("ready", form.size, form.size);
    else setProgress("idle", 0, form.size);
  }
  renderInfo(info);
  ui["embed-compare"].disabled = !info;
  ui["chat-compare"].disabled = !info || !state.chat.turn;
  if (info && group.task === "embed" && state.embed.last?.model !== info.name) runEmbed();
}

// ---------- loading ----------
let frame = 0;
function setProgress(status, loaded, total) {
  const percent = total ? Math.min(100, (100 * loaded) / total) : 0;
  ui.progress.dataset.status = status;
  const bar = ui.progress.querySelector('[role="progressbar"]');
  bar.setAttribute("aria-valuenow", String(Math.round(percent)));
  bar.querySelector("span").style.setProperty("--p", `${percent}%`);
  ui["progress-text"].textContent =
    status === "idle" ? `Not loaded · ${mb(total)} to fetch`
    : status === "error" ? `Failed at ${mb(loaded)} / ${mb(total)}`
    : `${mb(loaded)} / ${mb(total)} · ${Math.floor(percent)}%${status === "ready" ? " · ready" : percent >= 99 ? " · starting the runtime…" : ""}`;
}

async function loadSelected() {
  const form = selectedForm();
  if (!form || state.loading) return;
  clearError();
  state.loading = true;
  refreshView();
  setProgress("loading", 0, form.size);
  let last = { loaded: 0, total: form.size };
  try {
    await forge.load(form.name, {
      target: ui.target.value,
      runtime: form.runtime,
      onProgress: (p) => {
        last = p;
        cancelAnimationFrame(frame); // one paint per frame, however fast the bytes come
        frame = requestAnimationFrame(() => state.loading && setProgress("loading", p.loaded, p.total));
      },
    });
    state.embed.last = null;
  } catch (e) {
    state.loading = false;
    refreshView();
    setProgress("error", last.loaded, last.total);
    showError(e);
    return;
  }
  cancelAnimationFrame(frame);
  state.loading = false;
  refreshView();
}

// ---------- start ----------
function wire() {
  ui.model.addEventListener("change", onModelChange);
  ui.runtime.addEventListener("change", onRuntimeChange);
  ui.target.addEventListener("change", refreshView);
  ui.load.addEventListener("click", loadSelected);
  $("error-close").addEventListener("click", clearError);
  wireSimilarity();
  wireChat();
  ui["key-field"].addEventListener("submit", (e) => {
    e.preventDefault();
    forge.configure?.({ apiKey: ui["api-key"].value.trim() });
    start();
  });
  addEventListener("unhandledrejection", (e) => showError(e.reason));
  addEventListener("error", (e) => showError(e.error ?? e.message));
}

async function start() {
  clearError();
  const [env, list] = await Promise.allSettled([forge.targets(), forge.models()]);
  state.env = env.value ?? null;
  renderEnv(state.env, env.reason);
  if (list.status === "rejected") {
    ui["empty-text"].textContent = "No browser models: the engine's model list did not load.";
    ui["key-field"].hidden = !/HTTP 401|HTTP 403/.test(list.reason?.message ?? "");
    showError(list.reason);
    return;
  }
  ui["key-field"].hidden = true;
  state.groups = groupModels(list.value);
  if (!state.groups.length) {
    ui["empty-text"].textContent = "The engine has no model a browser runtime can run: pull minilm:l6 or smollm2:135m.";
    return;
  }
  ui.model.disabled = false;
  ui.target.disabled = false;
  fillModels();
}

wire();
start();
