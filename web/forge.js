// forge.js: run FerrousForge's small Molds in the browser, offline. The demo page, the notebook
// widget and your own pages use this module:
//
//   import * as forge from "/web/forge.js";
//   await forge.load("minilm:l6", { target: "auto" });       // -> { runtime, target, why, ... }
//   const { embeddings } = await forge.embed("minilm:l6", ["a cat", "a kitten"]);
//   await forge.generate("smollm2:135m", "Hi!", { onToken: (t) => ..., maxTokens: 64 });
//
// Every file (runtimes, models) comes from the same origin as this module.
import { fetchJson, headers } from "./fetch.js";

const BASE = new URL(".", import.meta.url);
const RUNTIMES = { ort: "./runtimes/ort.js", pyodide: "./runtimes/pyodide.js", wllama: "./runtimes/wllama.js" };
const loaded = new Map(); // model name -> handle
const loading = new Map(); // model name -> the load in flight
let catalog = null;

/** Settings for this page: `apiKey` when the engine requires one (forge serve --api-key). */
export function configure({ apiKey } = {}) {
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  else delete headers.authorization;
  catalog = null;
}

/** The browser models the server offers (models.json): [{name, runtime, task, size, ...}]. */
export async function models() {
  catalog ??= fetchJson(new URL("models.json", BASE)).then((c) => c.models);
  try {
    return await catalog;
  } catch (e) {
    catalog = null;
    throw e;
  }
}

/** What this browser can run on: WebGPU and its adapter, shader-f16, threads. */
export async function targets() {
  const isolated = globalThis.crossOriginIsolated === true;
  const base = {
    webgpu: false,
    adapter: null,
    shaderF16: false,
    crossOriginIsolated: isolated,
    threads: isolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4)) : 1,
    reason: null,
  };
  if (!("gpu" in navigator)) return { ...base, reason: "this browser has no WebGPU (navigator.gpu is missing)" };
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    return { ...base, reason: `WebGPU failed: ${e.message}` };
  }
  if (!adapter) return { ...base, reason: "WebGPU has no adapter here (it is turned off, or there is no usable GPU)" };
  const info = adapter.info ?? {};
  const software = info.isFallbackAdapter || /swiftshader/i.test(`${info.description} ${info.architecture}`);
  return {
    ...base,
    webgpu: true,
    software,
    adapter: {
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      device: info.device ?? "",
      description: info.description ?? "",
    },
    shaderF16: adapter.features.has("shader-f16"),
  };
}

function describe(adapter) {
  return [adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(" ") || "an adapter";
}

/** Pick the target for `auto` from what targets() found (`t`), saying why. */
function choose(target, runtime, t) {
  if (target === "webgpu" && !t.webgpu) throw new Error(`target webgpu is not available: ${t.reason}`);
  if (target !== "auto") return { target, why: `${target} was asked for` };
  if (runtime === "pyodide") {
    if (!t.webgpu) throw new Error(`the Pyodide Mold needs WebGPU: ${t.reason}`);
    return { target: "webgpu", why: `WebGPU: ${describe(t.adapter)}` };
  }
  if (!t.webgpu) return { target: "wasm", why: `fell back to WASM: ${t.reason}` };
  if (t.software) {
    return { target: "wasm", why: `fell back to WASM: the only WebGPU adapter is a software renderer (${describe(t.adapter)}), slower than WASM` };
  }
  return { target: "webgpu", why: `WebGPU: ${describe(t.adapter)}` };
}

// The targets each runtime runs on (web/runtimes/*.js refuse the others).
const RUNS_ON = { ort: ["wasm", "webgpu"], pyodide: ["webgpu"], wllama: ["wasm"] };

/** `model` and its converted forms (minilm:l6 -> minilm:l6-onnx), or their shared source. */
function familyOf(all, model) {
  const named = (m) => m.name === model || m.name === `${model}:latest`;
  const root = all.find(named)?.parent ?? model;
  const family = all.filter((m) => named(m) || m.parent === model || m.name === root || m.parent === root);
  const on = (runtime) => family.find((m) => named(m) && m.runtime === runtime) ?? family.find((m) => m.runtime === runtime);
  return { family, on };
}

/** The models.json entry that runs `model` on `target` (auto: what `t` offers): the model
 *  itself or a form of it. An encoder runs on onnxruntime-web through its ONNX form, or as
 *  stored (safetensors) on the Pyodide Mold with WebGPU; failing both, the server is asked
 *  to convert it (POST /web/prepare) before anything is refused. */
async function resolve(model, runtime, target, t) {
  const pick = ({ family, on }) => {
    if (runtime) return on(runtime);
    if (!family.some((m) => m.task === "embed")) return on(family[0].runtime);
    const runs = (m) => (target === "auto" ? m.runtime !== "pyodide" || t.webgpu : RUNS_ON[m.runtime]?.includes(target));
    return [on("ort"), on("pyodide")].find((m) => m && runs(m));
  };
  let forms = familyOf(await models(), model);
  if (!forms.family.length) {
    const names = (await models()).map((m) => m.name).join(", ") || "none";
    throw new Error(`${model} is not a browser model here (have: ${names}); pull it with forge first`);
  }
  let found = pick(forms);
  if (found || !forms.family.some((m) => m.task === "embed")) {
    if (!found) throw new Error(`${model} has no ${runtime} form here`);
    return found;
  }
  const missing = runtime ? `no ${runtime} form` : `no form that runs on ${target === "auto" ? "this browser" : target}`;
  try {
    forms = familyOf(await prepare(model), model);
  } catch (e) {
    throw new Error(`${model} has ${missing} here, and the engine made none (${e.message}): run forge convert ${model} --to onnx, or serve this page with forge web`);
  }
  found = pick(forms);
  if (!found) throw new Error(`${model} has ${missing} here, and no conversion makes one`);
  return found;
}

/** Ask the engine to convert what `model` needs in a browser (its ONNX form, for WASM) and
 *  return the new models list. `forge web` and `forge serve` convert at start, so this is
 *  for models pulled since; a static copy of this app has no engine to ask. */
export async function prepare(model) {
  const answer = await post(new URL("prepare", BASE), { model });
  catalog = Promise.resolve(answer.models);
  return answer.models;
}

/**
 * Load `model` in this page. Options: target ('auto' | 'wasm' | 'webgpu'), runtime ('ort' |
 * 'pyodide' | 'wllama'; default from the model's format), threads, onProgress({file, loaded,
 * total, percent}). Returns the handle's info: {name, runtime, target, why, backend, device,
 * threads, loadMs}.
 */
export async function load(model, options = {}) {
  // one load per model at a time: a second call while one runs waits for it, then decides
  const previous = loading.get(model) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(() => loadNow(model, options));
  loading.set(model, next);
  try {
    return await next;
  } finally {
    if (loading.get(model) === next) loading.delete(model);
  }
}

async function loadNow(model, { target = "auto", runtime, threads, onProgress = () => {} }) {
  const current = loaded.get(model);
  if (current && (target === "auto" || current.target === target) && (!runtime || current.runtime === runtime)) {
    return info(model);
  }
  if (current) await unload(model);
  const started = performance.now();
  const t = await targets();
  const entry = await resolve(model, runtime, target, t);
  const chosen = entry.runtime === "wllama" && target === "auto" ? { target: "wasm", why: "llama.cpp runs on WASM in the browser" } : choose(target, entry.runtime, t);
  const seen = {};
  const onBytes = (file, done, total) => {
    seen[file] = done;
    const sum = Object.values(seen).reduce((a, b) => a + b, 0);
    const all = Math.max(entry.size, sum);
    onProgress({ model, file, loaded: sum, total: all, percent: Math.min(100, (100 * sum) / all) });
  };
  const mod = await import(new URL(RUNTIMES[entry.runtime], import.meta.url).href);
  const mold = await mod.open(entry, {
    target: chosen.target,
    base: new URL(entry.base, BASE),
    threads: threads ?? t.threads,
    onBytes,
    digest: entry.digest,
    adapter: t.adapter ? describe(t.adapter) : null,
  });
  const handle = { name: model, entry, mold, runtime: entry.runtime, ...chosen, loadMs: performance.now() - started, lastMs: null };
  loaded.set(model, handle);
  onProgress({ model, file: null, loaded: entry.size, total: entry.size, percent: 100 });
  return info(model);
}

function handleOf(model) {
  const handle = loaded.get(model);
  if (!handle) throw new Error(`${model} is not loaded in this page: call load("${model}") first`);
  return handle;
}

/** What runs `model`: runtime, target and why, backend, device/adapter, threads, timings. */
export function info(model) {
  const h = handleOf(model);
  return {
    name: h.name,
    model: h.entry.name,
    runtime: h.runtime,
    target: h.target,
    why: h.why,
    backend: h.mold.backend,
    device: h.mold.device,
    threads: h.mold.threads,
    loadMs: h.loadMs,
    lastMs: h.lastMs,
    task: h.entry.task,
  };
}

/** Every model loaded in this page. */
export function loadedModels() {
  return [...loaded.keys()].map(info);
}

/** Token ids of `texts`, as the server's tokenizer gives them. */
export async function tokenize(model, texts) {
  const h = handleOf(model);
  if (!h.mold.tokenize) throw new Error(`${model} runs on ${h.runtime}, which has no tokenize call`);
  return h.mold.tokenize(texts);
}

/** Sentence embeddings (mean-pooled, L2-normalized) of `texts`: {embeddings, ids, ms}. */
export async function embed(model, texts) {
  const h = handleOf(model);
  if (!h.mold.embed) throw new Error(`${model} is a ${h.entry.task} model; it cannot embed`);
  const started = performance.now();
  const result = await h.mold.embed(texts);
  h.lastMs = performance.now() - started;
  return { ...result, ms: h.lastMs };
}

/**
 * Generate from `prompt` (a string, or chat messages [{role, content}]), streaming tokens to
 * onToken(text). Options: maxTokens, temperature, signal (AbortSignal).
 * Returns {text, tokens, ms, tokensPerSecond}.
 */
export async function generate(model, prompt, { onToken = () => {}, maxTokens = 128, temperature = 0, signal } = {}) {
  const h = handleOf(model);
  if (!h.mold.generate) throw new Error(`${model} is an ${h.entry.task} model; it cannot generate`);
  const messages = typeof prompt === "string" ? [{ role: "user", content: prompt }] : prompt;
  const started = performance.now();
  const result = await h.mold.generate(messages, { onToken, maxTokens, temperature, signal });
  h.lastMs = performance.now() - started;
  const seconds = (result.decodeMs ?? h.lastMs) / 1000;
  return { ...result, ms: h.lastMs, tokensPerSecond: result.tokens / Math.max(seconds, 1e-6) };
}

/** Drop `model` and free what its runtime holds. */
export async function unload(model) {
  const h = loaded.get(model);
  if (!h) return;
  loaded.delete(model);
  await h.mold.close?.();
}

/** The engine this page came from (same origin): for comparing browser and server results. */
export const server = {
  url: new URL("..", BASE).href,
  async embed(model, texts) {
    const started = performance.now();
    const r = await post("api/embed", { model, input: texts });
    return { embeddings: r.embeddings, ms: performance.now() - started };
  },
  async chat(model, messages, { maxTokens = 128, temperature = 0 } = {}) {
    const started = performance.now();
    const r = await post("api/chat", { model, messages, stream: false, options: { num_predict: maxTokens, temperature } });
    return { text: r.message.content, ms: performance.now() - started, tokens: r.eval_count };
  },
};

/** Jupyter's XSRF header, when this module comes through its proxy (<base_url>forge/web/):
 *  Jupyter refuses a POST authenticated by its cookie without it. */
function xsrf() {
  if (!BASE.pathname.endsWith("/forge/web/")) return {};
  const token = globalThis.document?.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/)?.[1];
  return token ? { "x-xsrftoken": token } : {};
}

async function post(path, body) {
  const response = await fetch(new URL(path, server.url), {
    method: "POST",
    headers: { ...headers, ...xsrf(), "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error ?? data.message ?? `the server answered HTTP ${response.status}`);
  return data;
}
