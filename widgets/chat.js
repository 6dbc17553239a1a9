// Chat (chat.py): a chat box over one model, with streaming, stop and clear.
// Only the narrow anywidget `model` (get/on/off/send) is used. Python sends token and done
// messages; the history itself is the `messages` trait. For benchmarks the root carries
// data-sent-ms (Send clicked) and data-first-token-ms (the frame that painted the first
// token of the turn), both performance.now().

function render({ model, el }) {
  const root = h("div", "ff-chat");
  const head = h("div", "ff-chat-head");
  const name = h("span", "ff-chat-model");
  const stats = h("span", "ff-chat-stats");
  const fields = {};
  for (const [key, label] of [
    ["ttft", "first token"],
    ["tps", "speed"],
    ["tokens", "tokens"],
  ]) {
    const value = h("span", "ff-chat-value", DASH);
    value.dataset.field = key;
    stats.append(h("span", "ff-chat-label", label), value);
    fields[key] = value;
  }
  head.append(name, stats);
  const log = h("div", "ff-chat-log");
  const input = h("textarea", "ff-chat-input");
  input.rows = 2;
  input.placeholder = "Message (Enter to send, Shift+Enter for a new line)";
  const sendButton = h("button", "ff-chat-send", "Send");
  const stopButton = h("button", "ff-chat-stop", "Stop");
  const clearButton = h("button", "ff-chat-clear", "Clear");
  const bar = h("div", "ff-chat-bar");
  bar.append(sendButton, stopButton, clearButton);
  const error = h("div", "ff-chat-error");
  root.append(head, log, input, bar, error);
  el.appendChild(root);

  let pending = null; // the reply streaming in: { bubble, text }

  function bubble(role, content) {
    const b = h("div", "ff-chat-msg");
    b.dataset.role = role;
    b.append(h("div", "ff-chat-role", role), h("div", "ff-chat-content", content));
    log.append(b);
    log.scrollTop = log.scrollHeight;
    return b;
  }

  function showMessages() {
    log.replaceChildren();
    pending = null;
    for (const m of model.get("messages")) bubble(m.role, m.content);
  }

  function showLast() {
    const last = model.get("last");
    fields.ttft.textContent = ms(last.ttft_ms);
    fields.tps.textContent = tps(last.tokens_per_s);
    fields.tokens.textContent = last.tokens == null ? DASH : String(last.tokens);
    root.dataset.doneReason = last.done_reason || "";
  }

  function onMessage(msg) {
    if (msg.turn !== model.get("turn")) return; // from a cleared or older turn
    if (msg.type === "token") {
      if (!pending) {
        const b = bubble("assistant", "");
        b.classList.add("ff-chat-pending");
        pending = { bubble: b, text: document.createTextNode("") };
        b.lastChild.append(pending.text);
        requestAnimationFrame(() => {
          root.dataset.firstTokenMs = performance.now().toFixed(1);
        });
      }
      pending.text.appendData(msg.text);
      log.scrollTop = log.scrollHeight;
      fields.tokens.textContent = String(msg.tokens);
      fields.tps.textContent = tps(msg.tps);
      if ("ttft_ms" in msg) fields.ttft.textContent = ms(msg.ttft_ms);
    }
  }

  function onStreaming() {
    const streaming = model.get("streaming");
    root.dataset.state = streaming ? "streaming" : "idle";
    sendButton.disabled = streaming;
    stopButton.disabled = !streaming;
    if (streaming) delete root.dataset.firstTokenMs;
  }

  function send() {
    const text = input.value;
    if (!text.trim() || model.get("streaming")) return;
    root.dataset.sentMs = performance.now().toFixed(1);
    model.send({ type: "send", text });
    input.value = "";
  }

  sendButton.addEventListener("click", send);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", () => model.send({ type: "stop", turn: model.get("turn") }));
  clearButton.addEventListener("click", () => model.send({ type: "clear" }));

  const onModel = () => (name.textContent = model.get("model"));
  const onError = () => (error.textContent = model.get("error"));
  const handlers = [
    ["msg:custom", onMessage],
    ["change:messages", showMessages],
    ["change:last", showLast],
    ["change:streaming", onStreaming],
    ["change:model", onModel],
    ["change:error", onError],
  ];
  for (const [event, fn] of handlers) model.on(event, fn);
  onModel();
  showMessages();
  showLast();
  onStreaming();
  onError();

  return () => {
    for (const [event, fn] of handlers) model.off(event, fn);
    root.remove();
  };
}

export default { render };
