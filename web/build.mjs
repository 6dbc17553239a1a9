// Gathers everything the browser build needs into web/vendor/, so the page makes no request
// beyond its own origin: onnxruntime-web, the Pyodide core, micropip (a wheel from PyPI),
// @wllama/wllama, the tokenizer code, and the wasm/ wheel. Run it with `npm run build`.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const root = resolve(web, "..");
const vendor = join(web, "vendor");
const modules = join(root, "node_modules");
const python =
  process.env.PYTHON ?? (existsSync(join(root, ".venv/bin/python")) ? join(root, ".venv/bin/python") : "python3");

function copy(from, names, to) {
  mkdirSync(to, { recursive: true });
  for (const name of names) {
    const source = join(modules, from, name);
    if (!existsSync(source)) throw new Error(`${source} is missing: run npm install first`);
    copyFileSync(source, join(to, name.split("/").pop()));
  }
}

function step(label, fn) {
  const start = Date.now();
  fn();
  console.log(`  ${label.padEnd(18)} ${((Date.now() - start) / 1000).toFixed(1)} s`);
}

rmSync(vendor, { recursive: true, force: true });
console.log(`gathering the browser runtimes into ${vendor}`);
step("onnxruntime-web", () => {
  const dist = "onnxruntime-web/dist";
  const wasm = readdirSync(join(modules, dist)).filter((n) => /^ort-wasm-simd-threaded(\.jsep|\.asyncify)?\.(mjs|wasm)$/.test(n));
  copy(dist, ["ort.wasm.min.mjs", "ort.webgpu.min.mjs", ...wasm], join(vendor, "ort"));
});
step("pyodide", () =>
  copy("pyodide", ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"], join(vendor, "pyodide")),
);
step("wllama", () => {
  copy("@wllama/wllama/esm", ["index.js"], join(vendor, "wllama"));
  copy("@wllama/wllama/esm/wasm", ["wllama.wasm"], join(vendor, "wllama"));
});
step("tokenizers", () => copy("@huggingface/tokenizers/dist", ["tokenizers.min.mjs"], join(vendor, "tokenizers")));
step("micropip (PyPI)", () =>
  execFileSync(python, ["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.14", "-d", join(vendor, "wheels"), "micropip==0.11.1"], { stdio: "inherit" }),
);
step("wasm/ wheel", () =>
  execFileSync(python, ["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", join(vendor, "wheels"), join(root, "wasm")], { stdio: "inherit" }),
);
console.log("done: serve it with `forge web`");
