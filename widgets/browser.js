// BrowserMold (browser.py): a browser Mold in this notebook's own tab, through web/forge.js.
// Only the narrow anywidget `model` (get/set/save_changes/on/off/send) is used.
//
// The work belongs to the widget's model, not to a view: `initialize` imports forge.js
// (Jupyter: <baseUrl>forge/web/forge.js, served by the server extension; else `web_url`),
// loads the model, and runs each request Python queues in the `requests` trait, once,
// sending back {type: "result", id, ...} (embeddings as one Float32Array buffer). Views only
// draw what the runner reports. The root carries data-state (loading, ready, running, done,
// error) and, after a load, data-target and data-backend.

const RUNNERS = (globalThis[Symbol.for("ferrousforge.browser")] ??= new Map()); // _key -> Runner

const mib = (v) => `${(v / 2 ** 20).toFixed(1)} MiB`;
const oneLine = (e) => String(e?.message ?? e).replace(/\s+/g, " ").trim() || "unknown error";

/** Where forge.js is: `web_url` (forge.js itself or its folder), else Jupyter's extension. */
function forgeUrl(model) {
  const override = model.get("web_url");
  if (override) {
    const url = override.endsWith(".js") ? override : `${override.replace(/\/?$/, "/")}forge.js`;
    return { url: new URL(url, document.baseURI).href, override: true };
  }
  const config = document.getElementById("jupyter-config-data");
  if (!config) {
    throw new Error("this page is not Jupyter's, so forge.js has no default place: set web_url (e.g. http://127.0.0.1:11434/web/ from forge serve)");
  }
  const base = JSON.parse(config.textContent).baseUrl ?? "/";
  return { url: new URL(`${base.replace(/\/?$/, "/")}forge/web/forge.js`, location.origin).href, override: false };
}

/** import(url), or a one-line reason it failed (asking the server what it answers). */
async function importForge({ url, override }) {
  try {
    return await import(url);
  } catch (e) {
    let status = null;
    try {
      status = (await fetch(url, { credentials: "same-origin" })).status;
    } catch {}
    if (!override && status === 404) {
      throw new Error("forge.js is served by the FerrousForge Jupyter server extension; enable it or set web_url");
    }
    if (status === 403) throw new Error(`the server refused ${url} (HTTP 403): log in to it, or set web_url`);
    const why = status && status !== 200 ? `HTTP ${status}` : oneLine(e);
    throw new Error(`cannot import forge.js from ${url} (${why})${override ? ": web_url should be a FerrousForge /web/ URL" : ""}`);
  }
}

/** Runtimes missing on the server name their fix. */
function explain(e) {
  const text = oneLine(e);
  return /\/vendor\//.test(text) ? `${text}; the browser runtimes are not built on the server: npm ci && npm run build` : text;
}

/** The load info, as Python reads it. */
function pyInfo(i) {
  return { model: i.model, runtime: i.runtime, target: i.target, why: i.why, backend: i.backend, device: i.device, threads: i.threads ?? null, load_ms: i.loadMs, task: i.task };
}

/** The model-level worker: one per widget model, whatever the number of views. */
class Runner extends EventTarget {
  constructor(model) {
    super();
    this.model = model;
    this.seen = new Set(); // request ids taken (a request runs once per page)
    this.queue = Promise.resolve();
    this.generation = 0;
    this.loading = null; // Promise<{forge, name}>
    this.view = { phase: "loading", progress: null, info: null, error: "", current: null };
    this.onRequests = () => this.pump();
    this.onWhat = () => this.reload();
    model.on("change:requests", this.onRequests);
    for (const name of ["model", "target", "runtime", "web_url"]) model.on(`change:${name}`, this.onWhat);
    this.reload();
    this.pump();
  }

  show(changes) {
    Object.assign(this.view, changes);
    this.dispatchEvent(new Event("change"));
  }

  sync(traits) {
    for (const [k, v] of Object.entries(traits)) this.model.set(k, v);
    this.model.save_changes();
  }

  reload() {
    const generation = ++this.generation;
    const name = this.model.get("model");
    this.show({ phase: "loading", progress: null, info: null, error: "" });
    this.sync({ status: "loading", info: {} });
    let last = 0;
    const onProgress = (p) => {
      if (generation !== this.generation || performance.now() - last < 100) return;
      last = performance.now();
      this.show({ progress: p });
    };
    this.loading = (async () => {
      const forge = await importForge(forgeUrl(this.model));
      const options = { target: this.model.get("target"), onProgress };
      if (this.model.get("runtime")) options.runtime = this.model.get("runtime");
      const info = pyInfo(await forge.load(name, options));
      return { forge, name, info };
    })();
    this.loading.then(
      ({ info }) => {
        if (generation !== this.generation) return;
        this.show({ phase: "ready", info, progress: null });
        this.sync({ status: "ready", info, error: "" });
      },
      (e) => {
        if (generation !== this.generation) return;
        this.show({ phase: "error", error: explain(e) });
        this.sync({ status: "error", error: explain(e) });
      },
    );
  }

  pump() {
    for (const request of this.model.get("requests")) {
      if (this.seen.has(request.id)) continue;
      this.seen.add(request.id);
      this.queue = this.queue.then(() => this.run(request));
    }
  }

  async run(request) {
    let loaded;
    try {
      loaded = await this.loading;
    } catch (e) {
      this.model.send({ type: "result", id: request.id, kind: request.kind, error: explain(e) });
      return;
    }
    const { forge, name } = loaded;
    const current = { ...request, text: "", result: null };
    this.show({ phase: "running", current, error: "" });
    this.sync({ status: "running" });
    try {
      if (request.kind === "embed") {
        const r = await forge.embed(name, request.texts);
        const dims = r.embeddings[0]?.length ?? 0;
        const flat = new Float32Array(r.embeddings.length * dims);
        r.embeddings.forEach((row, i) => flat.set(row, i * dims));
        const info = pyInfo(forge.info(name));
        const message = { type: "result", id: request.id, kind: "embed", rows: r.embeddings.length, dims, ids: r.ids, ms: r.ms, info };
        this.model.send(message, undefined, [flat.buffer]);
        current.result = { ...message, embeddings: r.embeddings };
      } else if (request.kind === "generate") {
        const onToken = (text) => {
          current.text += text;
          this.dispatchEvent(new Event("token"));
        };
        const options = { onToken, maxTokens: request.max_tokens, temperature: request.temperature };
        const r = await forge.generate(name, request.prompt, options);
        const info = pyInfo(forge.info(name));
        const message = { type: "result", id: request.id, kind: "generate", text: r.text, tokens: r.tokens, tokens_per_s: r.tokensPerSecond, ms: r.ms, info };
        this.model.send(message);
        current.text = r.text;
        current.result = message;
      } else {
        throw new Error(`unknown request kind ${request.kind}`);
      }
      this.show({ phase: "done", info: current.result.info });
    } catch (e) {
      this.model.send({ type: "result", id: request.id, kind: request.kind, error: explain(e) });
      this.show({ phase: "error", error: explain(e) });
    } finally {
      this.sync({ status: this.view.phase === "error" ? "error" : "ready" });
    }
  }

  close() {
    this.generation++;
    this.model.off("change:requests", this.onRequests);
    for (const name of ["model", "target", "runtime", "web_url"]) this.model.off(`change:${name}`, this.onWhat);
  }
}

function runnerOf(model) {
  const key = model.get("_key");
  let runner = RUNNERS.get(key);
  if (!runner) RUNNERS.set(key, (runner = new Runner(model)));
  return runner;
}

function initialize({ model }) {
  const runner = runnerOf(model); // starts loading now; never awaited here
  return () => {
    runner.close();
    RUNNERS.delete(model.get("_key"));
  };
}

function cosine(a, b) {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return dot; // the rows are L2-normalized
}

function render({ model, el }) {
  const runner = runnerOf(model); // a host without initialize starts it here
  const root = h("div", "ff-browser");
  const head = h("div", "ff-browser-head");
  const name = h("span", "ff-browser-model");
  const badge = h("span", "ff-browser-badge");
  head.append(name, badge);
  const bar = h("progress", "ff-browser-progress");
  bar.max = 100;
  const progressText = h("span", "ff-browser-progress-text");
  const where = h("dl", "ff-browser-where");
  const fields = {};
  for (const [key, label] of [
    ["backend", "backend"],
    ["device", "device"],
    ["why", "why"],
    ["load", "load"],
  ]) {
    const dd = h("dd", null, DASH);
    dd.dataset.field = key;
    where.append(h("dt", null, label), dd);
    fields[key] = dd;
  }
  const request = h("div", "ff-browser-request");
  const summary = h("div", "ff-browser-summary");
  const out = h("pre", "ff-browser-text");
  const table = h("table", "ff-browser-matrix");
  const error = h("div", "ff-browser-error");
  root.append(head, bar, progressText, where, request, summary, out, table, error);
  el.appendChild(root);

  function drawEmbed(result, texts) {
    summary.textContent = `${result.rows} × ${result.dims} embeddings in ${ms(result.ms)}`;
    table.replaceChildren();
    if (result.rows < 2 || result.rows > 6) return;
    const top = h("tr");
    top.append(h("th"), ...texts.map((_, j) => h("th", null, String(j + 1))));
    table.append(top);
    result.embeddings.forEach((a, i) => {
      const tr = h("tr");
      tr.append(h("th", null, `${i + 1} ${texts[i].length > 32 ? `${texts[i].slice(0, 31)}…` : texts[i]}`));
      for (const b of result.embeddings) {
        const c = cosine(a, b);
        const td = h("td", null, c.toFixed(2));
        td.style.setProperty("--ff-cos", String(Math.max(0, c)));
        tr.append(td);
      }
      table.append(tr);
    });
  }

  function draw() {
    const v = runner.view;
    name.textContent = model.get("model");
    root.dataset.state = v.phase;
    badge.textContent = v.phase === "loading" && v.progress ? `loading ${Math.round(v.progress.percent)}%` : v.phase;
    const loading = v.phase === "loading";
    bar.hidden = progressText.hidden = !loading;
    if (loading && v.progress) {
      bar.value = v.progress.percent;
      progressText.textContent = `${v.progress.file ?? ""} ${mib(v.progress.loaded)} / ${mib(v.progress.total)}`.trim();
    } else if (loading) {
      bar.removeAttribute("value"); // indeterminate until bytes flow
      progressText.textContent = "importing forge.js…";
    }
    const info = v.info;
    fields.backend.textContent = info?.backend ?? DASH;
    fields.device.textContent = info?.device ?? DASH;
    fields.why.textContent = info?.why ?? DASH;
    fields.load.textContent = info ? ms(info.load_ms) : DASH;
    if (info) {
      root.dataset.target = info.target;
      root.dataset.backend = info.backend;
    }
    const c = v.current;
    request.textContent = !c ? "" : c.kind === "embed" ? `embed ${c.texts.length} text(s)` : `generate: ${typeof c.prompt === "string" ? c.prompt : c.prompt.at(-1)?.content ?? ""}`;
    out.hidden = !c || c.kind !== "generate";
    out.textContent = c?.text ?? "";
    summary.textContent = "";
    table.replaceChildren();
    if (c?.result?.kind === "embed") drawEmbed(c.result, c.texts);
    if (c?.result?.kind === "generate") {
      const r = c.result;
      summary.textContent = `${r.tokens} tokens in ${ms(r.ms)}, ${r.tokens_per_s.toFixed(1)} tok/s`;
    }
    error.textContent = v.error || model.get("error") || "";
  }

  const onToken = () => (out.textContent = runner.view.current?.text ?? "");
  runner.addEventListener("change", draw);
  runner.addEventListener("token", onToken);
  model.on("change:error", draw);
  draw();

  return () => {
    runner.removeEventListener("change", draw);
    runner.removeEventListener("token", onToken);
    model.off("change:error", draw);
    root.remove();
  };
}

export default { initialize, render };
