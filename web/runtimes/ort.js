// The onnxruntime-web Mold: an ONNX sentence encoder (the `forge convert --to onnx` export,
// output last_hidden_state) on the `wasm` or `webgpu` execution provider. Pooling is done here.
import { fetchBytes } from "../fetch.js";
import { EncoderTokenizer, embedSorted, pad } from "../tokenizer.js";

const VENDOR = new URL("../vendor/ort/", import.meta.url);
// Texts run sorted by length, in slices of at most 32 texts and 96 padded tokens: ORT-web's
// wasm kernels cost about the same per token at any batch size here, so less padding wins
// (bench/browser.py measured these against fixed slices of 8 and a whole padded batch).
const SLICE_ROWS = 32;
const TOKEN_BUDGET = 96;

async function runtime(target, threads) {
  const ort = await import(new URL(target === "webgpu" ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs", VENDOR).href);
  ort.env.wasm.wasmPaths = VENDOR.href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  return ort;
}

export async function open(entry, { target, base, threads, onBytes, digest, adapter }) {
  const ort = await runtime(target, threads);
  const [bytes, tokenizer] = await Promise.all([
    fetchBytes(new URL("model.onnx", base), { onBytes: (n, t) => onBytes("model.onnx", n, t), digest }),
    EncoderTokenizer.load(base, entry.max_length),
  ]);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: [target === "webgpu" ? "webgpu" : "wasm"],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
  });
  const dims = session.outputMetadata?.[0]?.shape?.at(-1) ?? entry.dims ?? 384;
  const names = new Set(session.inputNames);

  async function hidden(rows, width) {
    const p = pad(rows);
    const shape = [p.batch, width];
    const feeds = { input_ids: new ort.Tensor("int64", p.inputIds, shape) };
    if (names.has("attention_mask")) feeds.attention_mask = new ort.Tensor("int64", p.attentionMask, shape);
    if (names.has("token_type_ids")) feeds.token_type_ids = new ort.Tensor("int64", p.tokenTypeIds, shape);
    const result = await session.run(feeds);
    const out = result[session.outputNames[0]];
    const data = out.location === "cpu" || !out.getData ? out.data : await out.getData();
    for (const tensor of Object.values(feeds)) tensor.dispose?.();
    out.dispose?.();
    return data;
  }

  return {
    backend: `onnxruntime-web ${ort.env.versions?.web ?? ""} (${target})`.replace("  ", " "),
    device: target === "webgpu" ? `WebGPU: ${adapter ?? "adapter"}` : `WASM SIMD, ${ort.env.wasm.numThreads} thread(s)`,
    // the runtime's own report: ORT drops to 1 thread when the page is not cross-origin isolated
    threads: target === "webgpu" ? null : ort.env.wasm.numThreads,
    tokenize: (texts) => tokenizer.encode(texts),
    async embed(texts) {
      const ids = tokenizer.encode(texts);
      return { ids, embeddings: await embedSorted(ids, SLICE_ROWS, dims, hidden, { tokenBudget: TOKEN_BUDGET }) };
    },
    async close() {
      await session.release();
    },
  };
}
