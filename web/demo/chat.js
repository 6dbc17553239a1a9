// chat.js: the chat panel: a streaming answer with tokens/s, Stop and Clear, the system
// prompt, and "Compare with server" beside the engine's answer to the same turn.
import * as forge from "../forge.js";
import { count, h, ms } from "./dom.js";
import { noteCall } from "./panel.js";
import { clearError, loadedInfo, selectedForm, showError, state, ui } from "./page.js";

function message(role, text, { answer = false } = {}) {
  if (answer) for (const old of ui.history.querySelectorAll('[data-testid="chat-answer"]')) old.dataset.testid = "chat-message";
  const node = h("li", { class: `msg ${role}`, "data-role": role, "data-testid": answer ? "chat-answer" : "chat-message" },
    h("div", { class: "bubble" }, text), h("div", { class: "meta" }));
  ui.history.append(node);
  ui.suggest.hidden = true;
  node.scrollIntoView({ block: "nearest" });
  ui.history.scrollTop = ui.history.scrollHeight;
  return node;
}

function setRate(tps, live) {
  ui["chat-tps"].dataset.value = String(tps);
  ui["chat-tps"].textContent = `${tps.toFixed(1)} tok/s`;
  ui["chat-tps"].classList.toggle("live", live);
}

function setStreaming(on) {
  ui["chat-send"].hidden = on;
  ui["chat-stop"].hidden = !on;
  ui["chat-compare"].disabled = on || !state.chat.turn;
}

async function send(text) {
  const info = loadedInfo(selectedForm()?.name);
  text = text.trim();
  if (!info || !text || state.chat.controller) return;
  clearError();
  ui["chat-input"].value = "";
  const history = state.chat.history; // Clear starts a new array: a late answer lands in the old one
  history.push({ role: "user", content: text });
  const system = ui.system.value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...history];
  message("user", text);
  const node = message("assistant", "", { answer: true });
  const bubble = node.querySelector(".bubble");
  node.dataset.state = "streaming";
  const controller = (state.chat.controller = new AbortController());
  setStreaming(true);
  let streamed = "", pieces = 0, first = null;
  const maxTokens = Math.max(1, Math.min(1024, Number(ui["max-tokens"].value) || 128));
  try {
    const result = await forge.generate(info.name, messages, {
      maxTokens,
      temperature: 0,
      signal: controller.signal,
      onToken: (piece) => {
        first ??= performance.now();
        streamed += piece;
        pieces += 1;
        bubble.textContent = streamed;
        if (pieces > 1) setRate((pieces - 1) / ((performance.now() - first) / 1000 || 1), true);
        ui.history.scrollTop = ui.history.scrollHeight;
      },
    });
    const answer = result.text || streamed;
    const stopped = controller.signal.aborted;
    if (stopped && !answer) throw new DOMException("stopped before the first token", "AbortError");
    bubble.textContent = answer;
    node.dataset.state = stopped ? "stopped" : "done";
    setRate(result.tokensPerSecond, false);
    node.querySelector(".meta").textContent = `${count(result.tokens, "token")} · ${result.tokensPerSecond.toFixed(1)} tok/s · ${ms(result.ms)}${stopped ? " · stopped" : ""}`;
    history.push({ role: "assistant", content: answer });
    if (!stopped && history === state.chat.history) state.chat.turn = { question: text, messages, answer, ms: result.ms, tokens: result.tokens, tps: result.tokensPerSecond, maxTokens };
  } catch (e) {
    if (controller.signal.aborted) {
      node.dataset.state = "stopped";
      if (streamed) {
        node.querySelector(".meta").textContent = `stopped after ${count(pieces, "token")}`;
        history.push({ role: "assistant", content: streamed });
      } else {
        // nothing answered: the question leaves the conversation too, and looks it
        node.querySelector(".meta").textContent = "stopped before the first token · not kept in the conversation";
        node.previousElementSibling?.classList.add("dropped");
        history.pop();
      }
    } else {
      node.dataset.state = "error";
      bubble.textContent = streamed;
      node.querySelector(".meta").textContent = "failed · not kept in the conversation";
      node.previousElementSibling?.classList.add("dropped");
      history.pop();
      showError(e);
    }
  } finally {
    state.chat.controller = null;
    setStreaming(false);
    ui["chat-tps"].classList.remove("live");
    noteCall(info.name);
    ui["chat-input"].focus();
  }
}

function clearChat() {
  state.chat.controller?.abort();
  state.chat.history = [];
  state.chat.turn = null;
  ui.history.replaceChildren();
  ui.suggest.hidden = false;
  ui["chat-compare-result"].hidden = true;
  ui["chat-compare"].disabled = true;
  ui["chat-tps"].textContent = "— tok/s";
  ui["chat-tps"].dataset.value = "0";
}

async function compareChat() {
  const info = loadedInfo(selectedForm()?.name);
  const turn = state.chat.turn;
  if (!info || !turn) return;
  clearError();
  const button = ui["chat-compare"];
  button.disabled = true;
  button.textContent = "Asking the server…";
  try {
    const server = await forge.server.chat(info.model, turn.messages, { maxTokens: turn.maxTokens, temperature: 0 });
    const serverTps = server.tokens ? server.tokens / (server.ms / 1000) : null;
    const same = server.text.trim() === turn.answer.trim();
    const side = (title, stat, text, ids) =>
      h("article", { "data-testid": ids[0] },
        h("h3", {}, title, h("span", { "data-testid": ids[1] }, stat)),
        h("p", { "data-testid": ids[2] }, text));
    ui["chat-compare-result"].replaceChildren(
      h("div", { class: "verdict" },
        h("span", { class: `badge ${same ? "ok" : "warn"}` }, same ? "Same answer" : "Different answers"),
        h("span", { class: "hint" }, `“${turn.question}” to ${info.model}, greedy, up to ${turn.maxTokens} tokens`)),
      h("div", { class: "sbs" },
        side("In this tab", `${ms(turn.ms)} · ${turn.tps.toFixed(1)} tok/s`, turn.answer, ["browser-side", "browser-ms", "browser-answer"]),
        side("On the server", `${ms(server.ms)}${serverTps ? ` · ${serverTps.toFixed(1)} tok/s incl. HTTP` : ""}`, server.text, ["server-side", "server-ms", "server-answer"])),
    );
    ui["chat-compare-result"].hidden = false;
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.textContent = "Compare with server";
  }
}

export function wireChat() {
  ui["chat-form"].addEventListener("submit", (e) => {
    e.preventDefault();
    send(ui["chat-input"].value);
  });
  ui["chat-input"].addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send(ui["chat-input"].value);
    }
  });
  ui["chat-stop"].addEventListener("click", () => state.chat.controller?.abort());
  ui["chat-clear"].addEventListener("click", clearChat);
  ui["chat-compare"].addEventListener("click", compareChat);
  for (const chip of ui.suggest.querySelectorAll("button")) chip.addEventListener("click", () => send(chip.textContent));
  const preview = () => (ui["system-preview"].textContent = ui.system.value.trim() || "none");
  ui.system.addEventListener("input", preview);
  preview();
}
