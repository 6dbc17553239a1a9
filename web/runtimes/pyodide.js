// The Pyodide + WGSL Mold: a BERT sentence encoder (a safetensors model such as minilm:l6) run
// by Python inside Pyodide (the forge_wasm wheel built from wasm/), which drives WebGPU through
// `js` with the server wgpu backend's own WGSL kernels. Tokenizing and pooling are done here,
// as in ort.js. Pyodide, micropip and the wheel all come from vendor/: nothing from a CDN.
import { fetchBytes, fetchJson } from "../fetch.js";
import { EncoderTokenizer, embedSorted } from "../tokenizer.js";

const VENDOR = new URL("../vendor/", import.meta.url);
const WHEELS = ["micropip-0.11.1-py3-none-any.whl", "ferrousforge_wasm-0.1.0-py3-none-any.whl"]; // wasm/pyproject.toml's version
const SLICE_ROWS = 8; // texts per forward pass, sorted by length, as the server's encoders

let python = null; // one Pyodide per page, shared by the models it runs

/** Pyodide with forge_wasm installed, loaded once per page. */
function pyodide() {
  python ??= (async () => {
    const { loadPyodide } = await import(new URL("pyodide/pyodide.mjs", VENDOR).href);
    const py = await loadPyodide({ indexURL: new URL("pyodide/", VENDOR).href, stdout: () => {}, stderr: (m) => console.warn(m) });
    const [micropip, wheel] = WHEELS.map((name) => new URL(`wheels/${name}`, VENDOR).href);
    await py.loadPackage(micropip, { messageCallback: () => {} });
    // a URL with no dependencies: micropip reads neither PyPI nor the lock file's CDN
    const installer = py.pyimport("micropip");
    await installer.install.callKwargs(wheel, { deps: false });
    installer.destroy();
    return py;
  })().catch((e) => {
    python = null;
    throw e;
  });
  return python;
}

/** A Python exception as one readable line (its last), not a traceback. */
function readable(e) {
  if (e?.type === undefined || typeof e.message !== "string") return e;
  const last = e.message.trim().split("\n").at(-1);
  return new Error(last.replace(/^forge_wasm\.errors\.ModelError: /, ""));
}

export async function open(entry, { target, base, onBytes, digest, adapter }) {
  if (target !== "webgpu") throw new Error(`the Pyodide Mold runs on WebGPU only, not ${target}`);
  const [py, bytes, config, tokenizer] = await Promise.all([
    pyodide(),
    fetchBytes(new URL("model.safetensors", base), { onBytes: (n, t) => onBytes("model.safetensors", n, t), digest }),
    fetchJson(new URL("config.json", base)),
    EncoderTokenizer.load(base, entry.max_length),
  ]);
  const bert = py.pyimport("forge_wasm.bert");
  let encoder;
  try {
    encoder = await bert.open_encoder(JSON.stringify(config), bytes);
  } catch (e) {
    throw readable(e);
  } finally {
    bert.destroy();
  }
  const dims = encoder.hidden_size;
  tokenizer.maxLength = Math.min(tokenizer.maxLength, encoder.max_tokens);
  const forward = encoder.hidden; // one proxy for every call

  async function hidden(rows, width) {
    try {
      return await forward(rows, width);
    } catch (e) {
      throw readable(e);
    }
  }

  return {
    backend: `Pyodide ${py.version} + WGSL (webgpu)`,
    device: `WebGPU: ${adapter ?? "adapter"}`,
    threads: null,
    tokenize: (texts) => tokenizer.encode(texts),
    async embed(texts) {
      const ids = tokenizer.encode(texts);
      return { ids, embeddings: await embedSorted(ids, SLICE_ROWS, dims, hidden) };
    },
    async close() {
      encoder.close();
      forward.destroy();
      encoder.destroy();
    },
  };
}
