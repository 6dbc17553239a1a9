// panel.js: the "Running on" panel (where the loaded model runs, and why) and the header's
// chips (what this browser offers before any load).
import { $, count, ms } from "./dom.js";
import { RUNTIME_NAMES, TARGET_NAME, loadedInfo, state, ui } from "./page.js";

export function renderInfo(info) {
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

/** Show the time of the model's latest call in the panel. */
export const noteCall = (name) => ($("info-call").textContent = ms(loadedInfo(name)?.lastMs));

export function renderEnv(env, error) {
  const chip = (id, kind, text, title = "") => Object.assign($(id), { className: `chip ${kind}`, textContent: text, title });
  if (!env) return chip("env-webgpu", "off", "WebGPU: unknown", error?.message ?? "");
  chip("env-isolation", env.crossOriginIsolated ? "ok" : "warn", env.crossOriginIsolated ? "cross-origin isolated" : "not isolated",
    env.crossOriginIsolated ? "COOP/COEP are set: WASM threads work" : "no COOP/COEP headers: WASM runs on one thread");
  chip("env-threads", env.threads > 1 ? "ok" : "warn", count(env.threads, "WASM thread"));
  const gpu = env.adapter ? [env.adapter.vendor, env.adapter.architecture, env.adapter.description].filter(Boolean).join(" ") : "";
  if (!env.webgpu) chip("env-webgpu", "off", "WebGPU off", env.reason ?? "");
  else chip("env-webgpu", env.software ? "warn" : "ok", env.software ? `WebGPU: software (${gpu})` : `WebGPU: ${gpu || "on"}`, env.software ? "a software adapter: WASM is faster, so auto picks WASM" : "");
}
