// page.js: what every part of the demo shares: the page's elements by id, its state, the
// selected model and runtime, how it names them, and the error line.
import * as forge from "../forge.js";
import { $ } from "./dom.js";

export const RUNTIME_NAMES = { ort: "onnxruntime-web", pyodide: "Pyodide + WGSL", wllama: "wllama · llama.cpp" };
export const TASK_NAMES = { embed: "Sentence embeddings", chat: "Chat" };
export const TARGET_NAME = (target) => (target === "webgpu" ? "WebGPU" : "WASM");

export const ui = Object.fromEntries(
  ["model", "runtime", "target", "load", "progress", "progress-text", "model-meta", "key-field", "api-key", "info", "why",
   "embed-panel", "chat-panel", "empty-panel", "empty-text", "sentences", "heatmap", "embed-stats", "embed-compare",
   "embed-compare-result", "history", "suggest", "chat-form", "chat-input", "chat-send", "chat-stop", "chat-clear",
   "chat-tps", "max-tokens", "system", "system-preview", "chat-compare", "chat-compare-result", "error", "error-text"].map((id) => [id, $(id)]),
);

export const state = {
  env: null, // forge.targets()
  groups: [], // [{name, task, forms: [entry]}]: a model and the entries that run it
  loading: false,
  embed: { running: false, again: false, last: null },
  chat: { history: [], controller: null, turn: null },
};

// ---------- the selection ----------
export const selectedGroup = () => state.groups.find((g) => g.name === ui.model.value);
export const selectedForm = () => selectedGroup()?.forms.find((f) => f.name === ui.runtime.value);
export const loadedInfo = (name) => forge.loadedModels().find((m) => m.name === name) ?? null;

// ---------- errors: one line in the page ----------
export function showError(e) {
  const text = (e?.message ?? String(e)).split("\n")[0].trim() || "something failed";
  console.error(e);
  ui["error-text"].textContent = text.length > 400 ? `${text.slice(0, 400)}…` : text;
  ui["error-text"].title = text;
  ui.error.hidden = false;
}
export const clearError = () => (ui.error.hidden = true);
