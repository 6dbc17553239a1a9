// Compare (compare.py): one prompt, several models streaming side by side.
// Only the narrow anywidget `model` (get/set/save_changes/on/off/send) is used, so any host
// that provides one can run this file. Messages from Python: start, token, done, end.
// For benchmarks, the root and each pane carry data-first-token-ms: performance.now() in
// the frame that first painted a token; the root's data-run-ms is when Run was clicked.

const FIELDS = [
  ["ttft", "first token"],
  ["tps", "speed"],
  ["tokens", "tokens"],
  ["where", "on"],
  ["memory", "memory"],
];

const fmt = {
  ms,
  tps,
  int: (v) => (v == null ? DASH : String(v)),
  bytes,
  where: (a) => (a.backend ? `${a.backend} · ${a.device}` : DASH),
};

function render({ model, el }) {
  const root = h("div", "ff-compare");
  const panesBox = h("div", "ff-compare-panes");
  const prompt = h("textarea", "ff-compare-prompt");
  prompt.rows = 3;
  prompt.placeholder = "Prompt for every model";
  prompt.value = model.get("prompt");
  const runButton = h("button", "ff-compare-run", "Run");
  const status = h("span", "ff-compare-status");
  const bar = h("div", "ff-compare-bar");
  const error = h("div", "ff-compare-error");
  bar.append(runButton, status);
  root.append(panesBox, prompt, bar, error);
  el.appendChild(root);

  let panes = [];
  let run = model.get("run_id");
  let clicked = false; // the next start comes from our own click: keep its data-run-ms

  function buildPanes() {
    const choices = model.get("choices");
    panesBox.replaceChildren();
    panes = model.get("models").map((name, i) => {
      const pane = h("div", "ff-compare-pane");
      pane.dataset.pane = String(i);
      const select = h("select", "ff-compare-model");
      for (const c of new Set([...choices, name])) {
        const option = h("option", null, c);
        option.value = c;
        select.append(option);
      }
      select.value = name;
      select.addEventListener("change", () => {
        const models = [...model.get("models")];
        models[i] = select.value;
        model.set("models", models);
        model.save_changes();
      });
      const vote = h("button", "ff-compare-vote", "Winner");
      vote.disabled = true;
      vote.addEventListener("click", () => model.send({ type: "vote", run, pane: i }));
      const head = h("div", "ff-compare-head");
      head.append(select, vote);
      const stats = h("dl", "ff-compare-stats");
      const fields = {};
      for (const [key, label] of FIELDS) {
        const dd = h("dd", null, DASH);
        dd.dataset.field = key;
        stats.append(h("dt", null, label), dd);
        fields[key] = dd;
      }
      const out = h("pre", "ff-compare-text");
      const text = document.createTextNode("");
      out.append(text);
      const paneError = h("div", "ff-compare-pane-error");
      pane.append(head, stats, out, paneError);
      panesBox.append(pane);
      return { pane, select, vote, fields, text, paneError, seen: false };
    });
    panesBox.style.setProperty("--ff-compare-n", String(Math.max(panes.length, 1)));
  }

  function reset(p) {
    p.text.data = "";
    p.paneError.textContent = "";
    p.seen = false;
    p.vote.disabled = true;
    delete p.pane.dataset.firstTokenMs;
    delete p.pane.dataset.done;
    for (const dd of Object.values(p.fields)) dd.textContent = DASH;
  }

  function fill(p, a) {
    p.fields.ttft.textContent = fmt.ms(a.ttft_ms);
    p.fields.tps.textContent = fmt.tps(a.tokens_per_s);
    p.fields.tokens.textContent = fmt.int(a.tokens);
    p.fields.where.textContent = fmt.where(a);
    p.fields.memory.textContent = fmt.bytes(a.memory);
    p.text.data = a.text;
    p.paneError.textContent = a.error || "";
    p.pane.dataset.done = "true";
  }

  function showEnd(similarity) {
    status.textContent = similarity == null ? "" : `similarity ${similarity.toFixed(2)}`;
    status.dataset.similarity = similarity == null ? "" : String(similarity);
    for (const p of panes) p.vote.disabled = Boolean(p.paneError.textContent);
  }

  function showWinner() {
    const winner = model.get("winner");
    root.dataset.winner = String(winner);
    panes.forEach((p, i) => p.pane.classList.toggle("ff-compare-winner", i === winner));
  }

  function firstToken(p) {
    p.seen = true;
    requestAnimationFrame(() => {
      const t = performance.now().toFixed(1);
      p.pane.dataset.firstTokenMs = t;
      if (!root.dataset.firstTokenMs) root.dataset.firstTokenMs = t;
    });
  }

  function onMessage(msg) {
    if (msg.type === "start") {
      run = msg.run;
      if (!clicked) root.dataset.runMs = performance.now().toFixed(1);
      clicked = false;
      delete root.dataset.firstTokenMs;
      if (panes.length !== msg.models.length) buildPanes();
      panes.forEach((p, i) => {
        reset(p);
        p.select.value = msg.models[i];
      });
      showEnd(null);
      status.textContent = "running…";
      return;
    }
    if (msg.run !== run) return; // a message from an older run
    const p = panes[msg.pane];
    if (msg.type === "token" && p) {
      p.text.appendData(msg.text);
      p.fields.tokens.textContent = fmt.int(msg.tokens);
      p.fields.tps.textContent = fmt.tps(msg.tps);
      if ("ttft_ms" in msg) {
        p.fields.ttft.textContent = fmt.ms(msg.ttft_ms);
        p.fields.where.textContent = fmt.where(msg);
        p.fields.memory.textContent = fmt.bytes(msg.memory);
      }
      if (!p.seen) firstToken(p);
    } else if (msg.type === "done" && p) {
      fill(p, msg.answer);
    } else if (msg.type === "end") {
      showEnd(msg.similarity);
    }
  }

  function fromState() {
    const answers = model.get("answers");
    if (answers.length === panes.length) {
      panes.forEach((p, i) => fill(p, answers[i]));
      showEnd(model.get("similarity"));
    }
    showWinner();
  }

  function onModels() {
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    if (!same(model.get("models"), panes.map((p) => p.select.value))) {
      buildPanes();
      fromState();
    }
  }

  function onRunning() {
    const running = model.get("running");
    runButton.disabled = running;
    root.dataset.state = running ? "running" : model.get("answers").length ? "done" : "idle";
  }

  function onError() {
    error.textContent = model.get("error");
    if (model.get("error")) clicked = false;
  }

  runButton.addEventListener("click", () => {
    clicked = true;
    root.dataset.runMs = performance.now().toFixed(1);
    model.send({ type: "run", prompt: prompt.value, models: panes.map((p) => p.select.value) });
  });

  const onPrompt = () => {
    if (prompt.value !== model.get("prompt")) prompt.value = model.get("prompt");
  };
  const handlers = [
    ["msg:custom", onMessage],
    ["change:models", onModels],
    ["change:choices", () => (buildPanes(), fromState())],
    ["change:answers", fromState],
    ["change:winner", showWinner],
    ["change:running", onRunning],
    ["change:error", onError],
    ["change:prompt", onPrompt],
  ];
  for (const [event, fn] of handlers) model.on(event, fn);

  buildPanes();
  fromState();
  onRunning();
  onError();

  return () => {
    for (const [event, fn] of handlers) model.off(event, fn);
    root.remove();
  };
}

export default { render };
