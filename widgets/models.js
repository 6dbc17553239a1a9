// Models (models.py): a live table of the store and the loaded models.
// Only the narrow anywidget `model` (get/on/off/send) is used. Every action message names
// the model or spec it acts on. Keep-alive countdowns tick here, from each row's expires_at.

const COLUMNS = ["model", "format", "size", "loaded on", "memory", "keep-alive", ""];

function keepAlive(row) {
  if (!row.loaded) return DASH;
  if (row.in_use) return "in use";
  if (row.expires_at == null) return "forever";
  const left = Math.max(0, Math.round(row.expires_at - Date.now() / 1000));
  return `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
}

function render({ model, el }) {
  const root = h("div", "ff-models");
  const table = h("table", "ff-models-table");
  const headRow = h("tr");
  for (const c of COLUMNS) headRow.append(h("th", null, c));
  table.append(h("thead"), h("tbody"));
  table.tHead.append(headRow);
  const body = table.tBodies[0];
  const total = h("div", "ff-models-total");
  const pullBox = h("div", "ff-models-pull");
  const spec = h("input", "ff-models-spec");
  spec.placeholder = "model name, file or URL";
  const pullButton = h("button", "ff-models-pull-button", "Pull");
  pullBox.append(spec, pullButton);
  const progress = h("div", "ff-models-progress");
  const error = h("div", "ff-models-error");
  root.append(table, total, pullBox, progress, error);
  el.appendChild(root);

  const countdowns = [];

  function showRows() {
    const busy = new Set(model.get("busy"));
    body.replaceChildren();
    countdowns.length = 0;
    let memory = 0;
    for (const row of model.get("rows")) {
      const tr = h("tr");
      tr.dataset.model = row.name;
      tr.dataset.loaded = String(row.loaded);
      const where = row.loaded ? `${row.backend} · ${row.device}` : DASH;
      const keep = h("td", null, keepAlive(row));
      keep.dataset.field = "keep-alive";
      countdowns.push([keep, row]);
      const action = row.loaded ? "unload" : "load";
      const button = h("button", "ff-models-action", busy.has(row.name) ? "…" : action);
      button.dataset.action = action;
      button.disabled = busy.has(row.name);
      button.addEventListener("click", () => model.send({ type: action, model: row.name }));
      const cells = [row.name, row.format || DASH, bytes(row.size), where, bytes(row.memory)];
      const tds = cells.map((text) => h("td", null, text));
      tds[3].dataset.field = "where";
      tds[4].dataset.field = "memory";
      const last = h("td");
      last.append(button);
      tr.append(...tds, keep, last);
      body.append(tr);
      if (row.loaded) memory += row.memory || 0;
    }
    total.textContent = `loaded: ${bytes(memory)}`;
    total.dataset.memory = String(memory);
  }

  function showPulls() {
    progress.replaceChildren();
    for (const [name, p] of Object.entries(model.get("pulls"))) {
      const line = h("div", "ff-models-pulling");
      line.dataset.spec = name;
      const bar = h("progress");
      if (p.total) {
        bar.max = p.total;
        bar.value = p.completed || 0;
      }
      line.append(h("span", null, name), bar, h("span", null, p.status));
      progress.append(line);
    }
  }

  const tick = setInterval(() => {
    for (const [cell, row] of countdowns) cell.textContent = keepAlive(row);
  }, 1000);

  pullButton.addEventListener("click", () => {
    model.send({ type: "pull", spec: spec.value });
    spec.value = "";
  });

  const onError = () => (error.textContent = model.get("error"));
  const handlers = [
    ["change:rows", showRows],
    ["change:busy", showRows],
    ["change:pulls", showPulls],
    ["change:error", onError],
  ];
  for (const [event, fn] of handlers) model.on(event, fn);
  showRows();
  showPulls();
  onError();
  model.send({ type: "watch" }); // keep the table live while shown

  return () => {
    clearInterval(tick);
    for (const [event, fn] of handlers) model.off(event, fn);
    root.remove();
  };
}

export default { render };
