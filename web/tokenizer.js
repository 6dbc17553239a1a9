// Text to token ids in the browser, exactly as the server's encoders do it
// (kernel/backends/encoders.py): tokenizer.json through @huggingface/tokenizers, special
// tokens added, then cut to the model's max_length keeping a final [SEP]. The JS tokenizer
// ignores tokenizer.json's own truncation and padding, so both are done here.
import { Tokenizer } from "./vendor/tokenizers/tokenizers.min.mjs";
import { fetchJson } from "./fetch.js";

export class EncoderTokenizer {
  constructor(tokenizer, maxLength) {
    this.tokenizer = tokenizer;
    this.maxLength = maxLength;
    this.sep = tokenizer.token_to_id ? tokenizer.token_to_id("[SEP]") : undefined;
  }

  static async load(base, maxLength) {
    const json = await fetchJson(new URL("tokenizer.json", base));
    let config = {};
    try {
      config = await fetchJson(new URL("tokenizer_config.json", base));
    } catch {} // optional: tokenizer.json carries everything BERT needs
    return new EncoderTokenizer(new Tokenizer(json, config), maxLength ?? 512);
  }

  /** Token ids of each text, [CLS] ... [SEP], cut to maxLength. */
  encode(texts) {
    return texts.map((text) => {
      const ids = Array.from(this.tokenizer.encode(text).ids, Number);
      if (ids.length <= this.maxLength) return ids;
      const cut = ids.slice(0, this.maxLength);
      if (this.sep !== undefined && this.sep !== null) cut[cut.length - 1] = this.sep;
      return cut;
    });
  }
}

/**
 * Rows of `ids` padded to their longest, as flat BigInt64Arrays (ONNX int64 inputs):
 * { inputIds, attentionMask, tokenTypeIds, batch, width }.
 */
export function pad(rows) {
  const width = Math.max(1, ...rows.map((r) => r.length));
  const inputIds = new BigInt64Array(rows.length * width);
  const attentionMask = new BigInt64Array(rows.length * width);
  const tokenTypeIds = new BigInt64Array(rows.length * width);
  rows.forEach((ids, r) => {
    ids.forEach((id, c) => {
      inputIds[r * width + c] = BigInt(id);
      attentionMask[r * width + c] = 1n;
    });
  });
  return { inputIds, attentionMask, tokenTypeIds, batch: rows.length, width };
}

/** Masked mean over tokens, then L2 norm, as the server's mean_pool: hidden is (batch, width, dims). */
export function meanPool(hidden, rows, width, dims) {
  return rows.map((ids, r) => {
    const sum = new Float64Array(dims);
    for (let t = 0; t < ids.length; t++) {
      const at = (r * width + t) * dims;
      for (let d = 0; d < dims; d++) sum[d] += hidden[at + d];
    }
    let norm = 0;
    for (let d = 0; d < dims; d++) {
      sum[d] /= Math.max(ids.length, 1e-9);
      norm += sum[d] * sum[d];
    }
    norm = Math.max(Math.sqrt(norm), 1e-12);
    return Array.from(sum, (v) => v / norm);
  });
}

/** Embed `texts` by slices of similar length (as the server does), calling
 *  `hidden(rows, width) -> Float32Array (rows, width, dims)` once per slice. A slice takes
 *  at most `sliceRows` texts and, when `tokenBudget` is set, at most that many padded tokens
 *  (so short texts go in big slices and long ones in small). */
export async function embedSorted(ids, sliceRows, dims, hidden, { tokenBudget = Infinity } = {}) {
  const order = ids.map((_, i) => i).sort((a, b) => ids[a].length - ids[b].length);
  const out = new Array(ids.length);
  let start = 0;
  while (start < order.length) {
    let end = start + 1; // sorted: the last row of a slice is its widest
    while (end < order.length && end - start < sliceRows && (end - start + 1) * ids[order[end]].length <= tokenBudget) end++;
    const picked = order.slice(start, end);
    const rows = picked.map((i) => ids[i]);
    const width = Math.max(1, ...rows.map((r) => r.length));
    const vectors = meanPool(await hidden(rows, width), rows, width, dims);
    picked.forEach((i, k) => (out[i] = vectors[k]));
    start = end;
  }
  return out;
}
