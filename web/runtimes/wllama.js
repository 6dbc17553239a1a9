// The wllama Mold: llama.cpp in WASM (@wllama/wllama 3.13) running a GGUF chat model on the CPU.
// The GGUF comes through fetchBytes (progress, Cache API) and reaches wllama as a Blob, so its
// own downloader and cache are never used. wllama runs llama-server's server-context in a
// worker; with one slot, a turn whose messages extend the last turn's reuses the KV cache of
// their common prefix (cache_prompt), and its timings say how many prompt tokens were reused.
import { fetchBytes } from "../fetch.js";

const VENDOR = new URL("../vendor/wllama/", import.meta.url);
const N_CTX = 2048; // smollm2 was trained on 8192; a chat in a page stays well below this
// The engine's sampling defaults (DEFAULTS in kernel/backends/llama_runtime.py, Ollama's), so
// the page answers as the server does; llama-server's (no repeat penalty) loop on small models.
const SAMPLING = { top_k: 40, top_p: 0.9, min_p: 0, repeat_penalty: 1.1, repeat_last_n: 64 };

export async function open(entry, { target, base, threads, onBytes, digest }) {
  if (target !== "wasm") throw new Error(`the wllama Mold runs on wasm only, not ${target}`);
  const { Wllama, LoggerWithoutDebug } = await import(new URL("index.js", VENDOR).href);
  // 3.13 ships one build (SIMD, pthreads, memory64, JSPI); compat would fetch another from a CDN
  const wllama = new Wllama({ default: new URL("wllama.wasm", VENDOR).href }, { logger: LoggerWithoutDebug, suppressNativeLog: true });
  wllama.setCompat(null);
  const bytes = await fetchBytes(new URL("model.gguf", base), { onBytes: (n, t) => onBytes("model.gguf", n, t), digest });
  try {
    await wllama.loadModel([new Blob([bytes])], {
      n_threads: threads,
      n_gpu_layers: 0, // the CPU: wllama then opens no WebGPU device either
      n_ctx: N_CTX,
      n_parallel: 1, // one slot, so each turn lands where the last one's KV cache is
      flash_attn: true, // about 15% more tokens/s here on the CPU path
    });
  } catch (e) {
    await wllama.exit().catch(() => {});
    throw new Error(`wllama cannot load ${entry.name}: ${e.message}`, { cause: e });
  }
  // wllama's own report: it runs 1 thread, silently, unless the page is cross-origin isolated
  const used = wllama.getNumThreads();
  const multithread = wllama.isMultithread();
  let queue = Promise.resolve(); // one request at a time: the slot serves turns in order

  async function chat(messages, { onToken, maxTokens, temperature, signal }) {
    const pieces = [];
    let last = null;
    await wllama.createChatCompletion({
      messages,
      ...SAMPLING,
      temperature, // 0 is greedy after the repeat penalty, as in the engine
      max_tokens: maxTokens,
      cache_prompt: true,
      stream: true,
      abortSignal: signal,
      onData: (chunk) => {
        last = chunk;
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          pieces.push(piece);
          onToken(piece);
        }
      },
    });
    const t = last?.timings; // llama-server's: the final chunk carries them
    if (!t) throw new Error("wllama gave no timings with its last chunk");
    return {
      text: pieces.join(""),
      tokens: t.predicted_n,
      promptTokens: t.prompt_n + t.cache_n,
      promptEvaluated: t.prompt_n, // the rest came from the KV cache of the turn before
      promptCached: t.cache_n,
      promptMs: t.prompt_ms,
      decodeMs: t.predicted_ms,
      finishReason: last.choices?.[0]?.finish_reason ?? null,
    };
  }

  return {
    backend: `wllama 3.13 (llama.cpp ${Wllama.getLibllamaVersion()}, wasm)`,
    device: `WASM SIMD, ${used} thread(s)${multithread ? ", multi-thread" : ""}`,
    threads: used,
    multithread,
    generate(messages, { onToken = () => {}, maxTokens = 128, temperature = 0, signal } = {}) {
      const turn = queue.then(() => chat(messages, { onToken, maxTokens, temperature, signal }));
      queue = turn.catch(() => {});
      return turn;
    },
    async close() {
      await queue;
      await wllama.exit();
    },
  };
}
