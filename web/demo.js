// demo.js: the in-browser demo page (index.html, demo.css), a plain ES module on forge.js.
// Pick a model, a runtime and a target, load it with progress, then see sentence similarity
// as a live heatmap or chat with a streaming answer, and compare either with the engine.
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
import * as forge from "./forge.js";

const MAX_SENTENCES = 12;
const RUNTIME_NAMES = { ort: "onnxruntime-web", pyodide: "Pyodide + WGSL", wllama: "wllama · llama.cpp" };
const TASK_NAMES = { embed: "Sentence embeddings", chat: "Chat" };
const RUNTIME_TARGETS = { ort: ["wasm", "webgpu"], pyodide: ["webgpu"], wllama: ["wasm"] }; // what each Mold can run on
const TARGET_NAME = (target) => (target === "webgpu" ? "WebGPU" : "WASM");

const $ = (id) => document.getElementById(id);
const ui = Object.fromEntries(
  ["model", "runtime", "target", "load", "progress", "progress-text", "model-meta", "key-field", "api-key", "info", "why",
   "embed-panel", "chat-panel", "empty-panel", "empty-text", "sentences", "heatmap", "embed-stats", "embed-compare",
   "embed-compare-result", "history", "suggest", "chat-form", "chat-input", "chat-send", "chat-stop", "chat-clear",
   "chat-tps", "max-tokens", "system", "system-preview", "chat-compare", "chat-compare-result", "error", "error-text"].map((id) => [id, $(id)]),
);
const state = {
  env: null, // forge.targets()
  groups: [], // [{name, task, forms: [entry]}]: a model and the entries that run it
  loading: false,
  embed: { running: false, again: false, last: null },
  chat: { history: [], controller: null, turn: null },
};

// ---------- small helpers ----------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}
const mb = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);
const ms = (t) => (t === null || t === undefined ? "—" : t >= 1000 ? `${(t / 1000).toFixed(2)} s` : `${t < 10 ? t.toFixed(1) : Math.round(t)} ms`);
const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const sci = (x) => (x === 0 ? "0" : x < 1e-3 ? x.toExponential(1) : x.toFixed(4));
function debounce(fn, wait) {
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, wait);
  };
}
function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb || 1);
}
const maxAbsDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

// ---------- errors: one line in the page ----------
function showError(e) {
  const text = (e?.message ?? String(e)).split("\n")[0].trim() || "something failed";
  console.error(e);
  ui["error-text"].textContent = text.length > 400 ? `${text.slice(0, 400)}…` : text;
  ui["error-text"].title = text;
  ui.error.hidden = false;
}
const clearError = () => (ui.error.hidden = true);

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
const selectedGroup = () => state.groups.find((g) => g.name === ui.model.value);
const selectedForm = () => selectedGroup()?.forms.find((f) => f.name === ui.runtime.value);
const loadedInfo = (name) => forge.loadedModels().find((m) => m.name === name) ?? null;

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

// ---------- the info panel ----------
function renderInfo(info) {
  ui.info.dataset.loaded = String(Boolean(info));
  const env = state.env;
  const fields = info
    ? {
        "info-model": info.model === info.name ? info.model : `${info.model} (${info.name})`,
        "info-runtime": RUNTIME_NAMES[info.runtime] ?? info.runtime,
        "info-backend": info.backend ?? "—",
        "info-device": info.device ?? "—",
        "info-target": TARGET_NAME(info.target),
        "info-threads": info.threads ? `${info.threads} of ${navigator.hardwareConcurrency || "?"} cores` : info.target === "webgpu" ? "— (the work runs on the GPU)" : "—",
        "info-load": ms(info.loadMs),
        "info-call": ms(info.lastMs),
      }
    : { "info-model": "—", "info-runtime": "—", "info-backend": "—", "info-device": "—", "info-target": "—", "info-threads": "—", "info-load": "—", "info-call": "—" };
  for (const [id, text] of Object.entries(fields)) $(id).textContent = text;
  $("info-isolation").textContent = !env ? "—" : env.crossOriginIsolated ? "cross-origin isolated (COOP/COEP): threads on" : "not isolated: WASM runs on 1 thread";
  ui.why.textContent = info ? info.why : "Load a model to see where it runs, and why.";
  ui.why.dataset.kind = !info ? "" : /fell back/i.test(info.why) ? "fallback" : "chosen";
}
const noteCall = (name) => ($("info-call").textContent = ms(loadedInfo(name)?.lastMs));

function renderEnv(env, error) {
  const chip = (id, kind, text, title = "") => Object.assign($(id), { className: `chip ${kind}`, textContent: text, title });
  if (!env) return chip("env-webgpu", "off", "WebGPU: unknown", error?.message ?? "");
  chip("env-isolation", env.crossOriginIsolated ? "ok" : "warn", env.crossOriginIsolated ? "cross-origin isolated" : "not isolated",
    env.crossOriginIsolated ? "COOP/COEP are set: WASM threads work" : "no COOP/COEP headers: WASM runs on one thread");
  chip("env-threads", env.threads > 1 ? "ok" : "warn", count(env.threads, "WASM thread"));
  const gpu = env.adapter ? [env.adapter.vendor, env.adapter.architecture, env.adapter.description].filter(Boolean).join(" ") : "";
  if (!env.webgpu) chip("env-webgpu", "off", "WebGPU off", env.reason ?? "");
  else chip("env-webgpu", env.software ? "warn" : "ok", env.software ? `WebGPU: software (${gpu})` : `WebGPU: ${gpu || "on"}`, env.software ? "a software adapter: WASM is faster, so auto picks WASM" : "");
}

// ---------- embeddings: the live similarity heatmap ----------
function sentences() {
  return ui.sentences.value.split("\n").map((s) => s.trim()).filter(Boolean);
}

async function runEmbed() {
  const info = loadedInfo(selectedForm()?.name);
  if (!info || info.task !== "embed") return;
  if (state.embed.running) {
    state.embed.again = true; // the running call's result is stale: go again when it returns
    return;
  }
  state.embed.running = true;
  ui.heatmap.setAttribute("aria-busy", "true");
  try {
    do {
      state.embed.again = false;
      const all = sentences();
      const texts = all.slice(0, MAX_SENTENCES);
      const result = texts.length ? await forge.embed(info.name, texts) : { embeddings: [], ids: [], ms: 0 };
      if (state.embed.again) continue;
      state.embed.last = { model: info.name, texts, embeddings: result.embeddings, ms: result.ms };
      renderHeatmap(texts, result.embeddings);
      const tokens = result.ids.reduce((n, ids) => n + ids.length, 0);
      const shown = all.length > texts.length ? `first ${texts.length} of ${all.length} lines` : count(texts.length, "sentence");
      ui["embed-stats"].textContent = texts.length ? `${shown} · ${count(tokens, "token")} · ${ms(result.ms)}` : "";
      noteCall(info.name);
    } while (state.embed.again);
  } catch (e) {
    showError(e);
  } finally {
    state.embed.running = false;
    ui.heatmap.setAttribute("aria-busy", "false");
  }
}
const embedSoon = debounce(runEmbed, 250);

function renderHeatmap(texts, vectors) {
  const table = ui.heatmap;
  table.dataset.count = String(texts.length);
  table.dataset.texts = JSON.stringify(texts);
  if (!texts.length) {
    table.replaceChildren(h("caption", { class: "hint" }, "Type a sentence per line to compare them."));
    return;
  }
  const head = h("tr", {}, h("th", {}), texts.map((t, j) => h("th", { scope: "col", title: t, "data-col": j }, String(j + 1))));
  const rows = texts.map((t, i) =>
    h("tr", { "data-row": i },
      h("th", { scope: "row", title: t }, h("span", { class: "idx" }, String(i + 1)), t),
      vectors.map((v, j) => {
        const value = cosine(vectors[i], v);
        const heat = Math.max(0, Math.min(1, value));
        return h("td", {
          "data-testid": "heatmap-cell", "data-row": i, "data-col": j, "data-value": String(value),
          class: [i === j ? "diag" : "", heat > 0.55 ? "hot" : ""].join(" ").trim() || null,
          style: `--heat:${(heat * 100).toFixed(1)}%`,
          title: `“${texts[i]}” ↔ “${texts[j]}”: ${value.toFixed(4)}`,
        }, value.toFixed(2));
      }),
    ),
  );
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}

function lightCell(event) {
  for (const node of ui.heatmap.querySelectorAll(".lit")) node.classList.remove("lit");
  const cell = event.target.closest?.("td[data-row]");
  if (!cell) return;
  ui.heatmap.querySelector(`tbody tr[data-row="${cell.dataset.row}"]`)?.classList.add("lit");
  ui.heatmap.querySelector(`thead th[data-col="${cell.dataset.col}"]`)?.classList.add("lit");
}

async function compareEmbed() {
  const info = loadedInfo(selectedForm()?.name);
  if (!info) return;
  clearError();
  const button = ui["embed-compare"];
  button.disabled = true;
  button.textContent = "Comparing…";
  try {
    const texts = sentences().slice(0, MAX_SENTENCES);
    if (!texts.length) throw new Error("type at least one sentence to compare");
    const same = state.embed.last?.model === info.name && JSON.stringify(state.embed.last.texts) === JSON.stringify(texts);
    const browser = same ? state.embed.last : await forge.embed(info.name, texts);
    const server = await forge.server.embed(info.model, texts);
    const rows = texts.map((t, i) => ({ t, cos: cosine(browser.embeddings[i], server.embeddings[i]), diff: maxAbsDiff(browser.embeddings[i], server.embeddings[i]) }));
    const minCos = Math.min(...rows.map((r) => r.cos));
    const maxDiff = Math.max(...rows.map((r) => r.diff));
    const box = ui["embed-compare-result"];
    Object.assign(box.dataset, { minCosine: String(minCos), maxDiff: String(maxDiff), stale: "false" });
    box.replaceChildren(
      h("div", { class: "verdict" },
        h("span", { class: `badge ${minCos >= 0.9999 ? "ok" : "warn"}` }, minCos >= 0.9999 ? "Same vectors" : "Vectors differ"),
        h("span", {}, `min cosine ${minCos.toFixed(6)} · max |Δ| ${sci(maxDiff)} · browser ${ms(browser.ms)} · server ${ms(server.ms)} over HTTP (${info.model} on the engine)`)),
      h("div", { class: "scroll" }, h("table", { class: "compare-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "sentence"), h("th", {}, "cosine browser ↔ server"), h("th", {}, "max |Δ|"))),
        h("tbody", {}, rows.map((r, i) => h("tr", {},
          h("td", { class: "num" }, String(i + 1)), h("td", { class: "text", title: r.t }, r.t),
          h("td", { class: "num", "data-testid": "compare-cosine", "data-value": String(r.cos) }, r.cos.toFixed(6)),
          h("td", { class: "num", "data-testid": "compare-diff", "data-value": String(r.diff) }, sci(r.diff))))))),
    );
    box.hidden = false;
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.textContent = "Compare with server";
  }
}

// ---------- chat ----------
function message(role, text, { answer = false } = {}) {
  if (answer) for (const old of ui.history.querySelectorAll('[data-testid="chat-answer"]')) old.dataset.testid = "chat-message";
  const node = h("li", { class: `msg ${role}`, "data-role": role, "data-testid": answer ? "chat-answer" : "chat-message" },
    h("div", { class: "bubble" }, text), h("div", { class: "meta" }));
  ui.history.append(node);
  ui.suggest.hidden = true;
  node.scrollIntoView({ block: "nearest" });
  ui.history.scrollTop = ui.history.scrollHeight;
  return node;
}

function setRate(tps, live) {
  ui["chat-tps"].dataset.value = String(tps);
  ui["chat-tps"].textContent = `${tps.toFixed(1)} tok/s`;
  ui["chat-tps"].classList.toggle("live", live);
}

function setStreaming(on) {
  ui["chat-send"].hidden = on;
  ui["chat-stop"].hidden = !on;
  ui["chat-compare"].disabled = on || !state.chat.turn;
}

async function send(text) {
  const info = loadedInfo(selectedForm()?.name);
  text = text.trim();
  if (!info || !text || state.chat.controller) return;
  clearError();
  ui["chat-input"].value = "";
  const history = state.chat.history; // Clear starts a new array: a late answer lands in the old one
  history.push({ role: "user", content: text });
  const system = ui.system.value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...history];
  message("user", text);
  const node = message("assistant", "", { answer: true });
  const bubble = node.querySelector(".bubble");
  node.dataset.state = "streaming";
  const controller = (state.chat.controller = new AbortController());
  setStreaming(true);
  let streamed = "", pieces = 0, first = null;
  const maxTokens = Math.max(1, Math.min(1024, Number(ui["max-tokens"].value) || 128));
  try {
    const result = await forge.generate(info.name, messages, {
      maxTokens,
      temperature: 0,
      signal: controller.signal,
      onToken: (piece) => {
        first ??= performance.now();
        streamed += piece;
        pieces += 1;
        bubble.textContent = streamed;
        if (pieces > 1) setRate((pieces - 1) / ((performance.now() - first) / 1000 || 1), true);
        ui.history.scrollTop = ui.history.scrollHeight;
      },
    });
    const answer = result.text || streamed;
    const stopped = controller.signal.aborted;
    if (stopped && !answer) throw new DOMException("stopped before the first token", "AbortError");
    bubble.textContent = answer;
    node.dataset.state = stopped ? "stopped" : "done";
    setRate(result.tokensPerSecond, false);
    node.querySelector(".meta").textContent = `${count(result.tokens, "token")} · ${result.tokensPerSecond.toFixed(1)} tok/s · ${ms(result.ms)}${stopped ? " · stopped" : ""}`;
    history.push({ role: "assistant", content: answer });
    if (!stopped && history === state.chat.history) state.chat.turn = { question: text, messages, answer, ms: result.ms, tokens: result.tokens, tps: result.tokensPerSecond, maxTokens };
  } catch (e) {
    if (controller.signal.aborted) {
      node.dataset.state = "stopped";
      if (streamed) {
        node.querySelector(".meta").textContent = `stopped after ${count(pieces, "token")}`;
        history.push({ role: "assistant", content: streamed });
      } else {
        // nothing answered: the question leaves the conversation too, and looks it
        node.querySelector(".meta").textContent = "stopped before the first token · not kept in the conversation";
        node.previousElementSibling?.classList.add("dropped");
        history.pop();
      }
    } else {
      node.dataset.state = "error";
      bubble.textContent = streamed;
      node.querySelector(".meta").textContent = "failed · not kept in the conversation";
      node.previousElementSibling?.classList.add("dropped");
      history.pop();
      showError(e);
    }
  } finally {
    state.chat.controller = null;
    setStreaming(false);
    ui["chat-tps"].classList.remove("live");
    noteCall(info.name);
    ui["chat-input"].focus();
  }
}

function clearChat() {
  state.chat.controller?.abort();
  state.chat.history = [];
  state.chat.turn = null;
  ui.history.replaceChildren();
  ui.suggest.hidden = false;
  ui["chat-compare-result"].hidden = true;
  ui["chat-compare"].disabled = true;
  ui["chat-tps"].textContent = "— tok/s";
  ui["chat-tps"].dataset.value = "0";
}

async function compareChat() {
  const info = loadedInfo(selectedForm()?.name);
  const turn = state.chat.turn;
  if (!info || !turn) return;
  clearError();
  const button = ui["chat-compare"];
  button.disabled = true;
  button.textContent = "Asking the server…";
  try {
    const server = await forge.server.chat(info.model, turn.messages, { maxTokens: turn.maxTokens, temperature: 0 });
    const serverTps = server.tokens ? server.tokens / (server.ms / 1000) : null;
    const same = server.text.trim() === turn.answer.trim();
    const side = (title, stat, text, ids) =>
      h("article", { "data-testid": ids[0] },
        h("h3", {}, title, h("span", { "data-testid": ids[1] }, stat)),
        h("p", { "data-testid": ids[2] }, text));
    ui["chat-compare-result"].replaceChildren(
      h("div", { class: "verdict" },
        h("span", { class: `badge ${same ? "ok" : "warn"}` }, same ? "Same answer" : "Different answers"),
        h("span", { class: "hint" }, `“${turn.question}” to ${info.model}, greedy, up to ${turn.maxTokens} tokens`)),
      h("div", { class: "sbs" },
        side("In this tab", `${ms(turn.ms)} · ${turn.tps.toFixed(1)} tok/s`, turn.answer, ["browser-side", "browser-ms", "browser-answer"]),
        side("On the server", `${ms(server.ms)}${serverTps ? ` · ${serverTps.toFixed(1)} tok/s incl. HTTP` : ""}`, server.text, ["server-side", "server-ms", "server-answer"])),
    );
    ui["chat-compare-result"].hidden = false;
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.textContent = "Compare with server";
  }
}

// ---------- start ----------
function wire() {
  ui.model.addEventListener("change", onModelChange);
  ui.runtime.addEventListener("change", onRuntimeChange);
  ui.target.addEventListener("change", refreshView);
  ui.load.addEventListener("click", loadSelected);
  $("error-close").addEventListener("click", clearError);
  ui.sentences.addEventListener("input", () => {
    if (!ui["embed-compare-result"].hidden) ui["embed-compare-result"].dataset.stale = "true";
    embedSoon();
  });
  ui.heatmap.addEventListener("mouseover", lightCell);
  ui.heatmap.addEventListener("mouseleave", lightCell);
  ui["embed-compare"].addEventListener("click", compareEmbed);
  ui["chat-form"].addEventListener("submit", (e) => {
    e.preventDefault();
    send(ui["chat-input"].value);
  });
  ui["chat-input"].addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send(ui["chat-input"].value);
    }
  });
  ui["chat-stop"].addEventListener("click", () => state.chat.controller?.abort());
  ui["chat-clear"].addEventListener("click", clearChat);
  ui["chat-compare"].addEventListener("click", compareChat);
  for (const chip of ui.suggest.querySelectorAll("button")) chip.addEventListener("click", () => send(chip.textContent));
  ui["key-field"].addEventListener("submit", (e) => {
    e.preventDefault();
    forge.configure?.({ apiKey: ui["api-key"].value.trim() });
    start();
  });
  const preview = () => (ui["system-preview"].textContent = ui.system.value.trim() || "none");
  ui.system.addEventListener("input", preview);
  preview();
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
    ui["empty-text"].textContent = "The engine has no model a browser runtime can run: pull minilm:l6 (then forge convert minilm:l6 --to onnx) or smollm2:135m.";
    return;
  }
  ui.model.disabled = false;
  ui.target.disabled = false;
  fillModels();
}

wire();
start();
