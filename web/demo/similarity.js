// similarity.js: the embeddings panel: typed sentences become a live cosine-similarity
// heatmap, and "Compare with server" checks the browser's vectors against the engine's.
import * as forge from "../forge.js";
import { count, debounce, h, ms, sci } from "./dom.js";
import { noteCall } from "./panel.js";
import { clearError, loadedInfo, selectedForm, showError, state, ui } from "./page.js";

const MAX_SENTENCES = 12;

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb || 1);
}
const maxAbsDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

function sentences() {
  return ui.sentences.value.split("\n").map((s) => s.trim()).filter(Boolean);
}

/** Embed the sentences with the loaded model and draw the heatmap; a call while one runs
 *  makes that one go again when it returns, so the last text always wins. */
export async function runEmbed() {
  const info = loadedInfo(selectedForm()?.name);
  if (!info || info.task !== "embed") return;
  if (state.embed.running) {
    state.embed.again = true; // the running call's result is stale: go again when it returns
    return;
  }
  state.embed.running = true;
  ui.heatmap.setAttribute("aria-busy", "true");
  try {
    do {
      state.embed.again = false;
      const all = sentences();
      const texts = all.slice(0, MAX_SENTENCES);
      const result = texts.length ? await forge.embed(info.name, texts) : { embeddings: [], ids: [], ms: 0 };
      if (state.embed.again) continue;
      state.embed.last = { model: info.name, texts, embeddings: result.embeddings, ms: result.ms };
      renderHeatmap(texts, result.embeddings);
      const tokens = result.ids.reduce((n, ids) => n + ids.length, 0);
      const shown = all.length > texts.length ? `first ${texts.length} of ${all.length} lines` : count(texts.length, "sentence");
      ui["embed-stats"].textContent = texts.length ? `${shown} · ${count(tokens, "token")} · ${ms(result.ms)}` : "";
      noteCall(info.name);
    } while (state.embed.again);
  } catch (e) {
    showError(e);
  } finally {
    state.embed.running = false;
    ui.heatmap.setAttribute("aria-busy", "false");
  }
}
const embedSoon = debounce(runEmbed, 250);

function renderHeatmap(texts, vectors) {
  const table = ui.heatmap;
  table.dataset.count = String(texts.length);
  table.dataset.texts = JSON.stringify(texts);
  if (!texts.length) {
    table.replaceChildren(h("caption", { class: "hint" }, "Type a sentence per line to compare them."));
    return;
  }
  const head = h("tr", {}, h("th", {}), texts.map((t, j) => h("th", { scope: "col", title: t, "data-col": j }, String(j + 1))));
  const rows = texts.map((t, i) =>
    h("tr", { "data-row": i },
      h("th", { scope: "row", title: t }, h("span", { class: "idx" }, String(i + 1)), t),
      vectors.map((v, j) => {
        const value = cosine(vectors[i], v);
        const heat = Math.max(0, Math.min(1, value));
        return h("td", {
          "data-testid": "heatmap-cell", "data-row": i, "data-col": j, "data-value": String(value),
          class: [i === j ? "diag" : "", heat > 0.55 ? "hot" : ""].join(" ").trim() || null,
          style: `--heat:${(heat * 100).toFixed(1)}%`,
          title: `“${texts[i]}” ↔ “${texts[j]}”: ${value.toFixed(4)}`,
        }, value.toFixed(2));
      }),
    ),
  );
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}

function lightCell(event) {
  for (const node of ui.heatmap.querySelectorAll(".lit")) node.classList.remove("lit");
  const cell = event.target.closest?.("td[data-row]");
  if (!cell) return;
  ui.heatmap.querySelector(`tbody tr[data-row="${cell.dataset.row}"]`)?.classList.add("lit");
  ui.heatmap.querySelector(`thead th[data-col="${cell.dataset.col}"]`)?.classList.add("lit");
}

async function compareEmbed() {
  const info = loadedInfo(selectedForm()?.name);
  if (!info) return;
  clearError();
  const button = ui["embed-compare"];
  button.disabled = true;
  button.textContent = "Comparing…";
  try {
    const texts = sentences().slice(0, MAX_SENTENCES);
    if (!texts.length) throw new Error("type at least one sentence to compare");
    const same = state.embed.last?.model === info.name && JSON.stringify(state.embed.last.texts) === JSON.stringify(texts);
    const browser = same ? state.embed.last : await forge.embed(info.name, texts);
    const server = await forge.server.embed(info.model, texts);
    const rows = texts.map((t, i) => ({ t, cos: cosine(browser.embeddings[i], server.embeddings[i]), diff: maxAbsDiff(browser.embeddings[i], server.embeddings[i]) }));
    const minCos = Math.min(...rows.map((r) => r.cos));
    const maxDiff = Math.max(...rows.map((r) => r.diff));
    const box = ui["embed-compare-result"];
    Object.assign(box.dataset, { minCosine: String(minCos), maxDiff: String(maxDiff), stale: "false" });
    box.replaceChildren(
      h("div", { class: "verdict" },
        h("span", { class: `badge ${minCos >= 0.9999 ? "ok" : "warn"}` }, minCos >= 0.9999 ? "Same vectors" : "Vectors differ"),
        h("span", {}, `min cosine ${minCos.toFixed(6)} · max |Δ| ${sci(maxDiff)} · browser ${ms(browser.ms)} · server ${ms(server.ms)} over HTTP (${info.model} on the engine)`)),
      h("div", { class: "scroll" }, h("table", { class: "compare-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "sentence"), h("th", {}, "cosine browser ↔ server"), h("th", {}, "max |Δ|"))),
        h("tbody", {}, rows.map((r, i) => h("tr", {},
          h("td", { class: "num" }, String(i + 1)), h("td", { class: "text", title: r.t }, r.t),
          h("td", { class: "num", "data-testid": "compare-cosine", "data-value": String(r.cos) }, r.cos.toFixed(6)),
          h("td", { class: "num", "data-testid": "compare-diff", "data-value": String(r.diff) }, sci(r.diff))))))),
    );
    box.hidden = false;
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.textContent = "Compare with server";
  }
}

export function wireSimilarity() {
  ui.sentences.addEventListener("input", () => {
    if (!ui["embed-compare-result"].hidden) ui["embed-compare-result"].dataset.stale = "true";
    embedSoon();
  });
  ui.heatmap.addEventListener("mouseover", lightCell);
  ui.heatmap.addEventListener("mouseleave", lightCell);
  ui["embed-compare"].addEventListener("click", compareEmbed);
}
