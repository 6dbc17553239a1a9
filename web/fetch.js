// Model bytes with progress, kept in the Cache API between visits (keyed by URL and digest),
// so a reload does not download a model again.
const CACHE = "ferrousforge-models-v1";
/** Headers for every request to the engine (forge.configure({apiKey}) sets Authorization). */
export const headers = {};

async function cached(url) {
  if (typeof caches === "undefined") return null;
  try {
    const cache = await caches.open(CACHE);
    return { cache, hit: await cache.match(url) };
  } catch {
    return null; // opaque origins and some private modes refuse the Cache API
  }
}

/**
 * Fetch `url` as bytes. `onBytes(loaded, total)` is called as bytes arrive (total may be 0
 * when the server does not say). With `digest`, the bytes are cached under url#digest.
 */
export async function fetchBytes(url, { onBytes = () => {}, digest = null } = {}) {
  const key = digest ? `${url}#${digest}` : null;
  const store = key ? await cached(key) : null;
  if (store?.hit) {
    const bytes = new Uint8Array(await store.hit.arrayBuffer());
    onBytes(bytes.length, bytes.length);
    return bytes;
  }
  const response = await fetch(url, { headers });
  if (!response.ok) {
    let detail = "";
    try {
      detail = (await response.json()).error ?? "";
    } catch {}
    throw new Error(`cannot fetch ${url}: HTTP ${response.status}${detail ? `: ${detail}` : ""}`);
  }
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const parts = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    onBytes(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  if (store) {
    try {
      await store.cache.put(key, new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
    } catch {} // a full quota only costs the next visit a download
  }
  return bytes;
}

/** Fetch `url` as JSON, with a readable error. */
export async function fetchJson(url) {
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return response.json();
}
