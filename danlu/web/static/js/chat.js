// The chat view: streams replies from /v1/chat/completions (like any OpenAI client) and saves every finished
// turn in the CLI's sessions database through /api/sessions. Regenerate rewrites the session's history.
import { ApiError, getJSON, request, sendJSON, sseEvents } from "./api.js";
import { t } from "./i18n.js";
import { describeModel, fillSelect, findModel, loadModels, pickLang, rememberPick, statusText } from "./models.js";
import { bubble, follow, renderText } from "./render.js";

const $ = (id) => document.getElementById(id);
const PERSONAS = {
  none: "",
  assistant: "你是一个乐于助人的中文助手，回答简洁、准确。",
  teacher: "你是一位耐心的语文老师，用浅显的中文解释问题，并举例说明。",
  coder: "你是一位资深程序员，回答时给出可以运行的代码和简短的说明。",
  translator: "你是中英翻译：把中文译成英文、英文译成中文，只输出译文。",
};
const state = { sessionId: null, messages: [], savedSystem: "", controller: null, busy: false };

const box = () => $("chat-messages");
const model = () => $("chat-model").value;
const systemPrompt = () => $("chat-system").value.trim();

function params() {
  return { temperature: parseFloat($("chat-temperature").value), top_p: parseFloat($("chat-top-p").value),
           max_tokens: parseInt($("chat-max-tokens").value, 10) || 512 };
}

function withSystem(history) {
  return systemPrompt() ? [{ role: "system", content: systemPrompt() }, ...history] : history;
}

function showError(message) {
  $("chat-error").textContent = message ? pickLang(message) : "";
  $("chat-error").hidden = !message;
}

function setBusy(busy) {
  state.busy = busy;
  $("chat-send").hidden = busy;
  $("chat-stop").hidden = !busy;
  const last = state.messages[state.messages.length - 1];
  $("chat-regenerate").disabled = busy || !last || last.role !== "assistant";
}

// ---------------------------------------------------------------- streaming one reply

async function streamReply(history, target) {
  state.controller = new AbortController();
  const started = performance.now();
  const body = { model: model(), messages: withSystem(history), stream: true, stream_options: { include_usage: true },
                 ...params() };
  const reply = { text: "", finish: null, usage: null };
  try {
    const response = await request("POST", "/v1/chat/completions", body, state.controller.signal);
    for await (const event of sseEvents(response)) {
      if (event.error) throw new ApiError(500, event.error.message);
      if (event.usage) reply.usage = event.usage;
      const choice = event.choices && event.choices[0];
      if (choice && choice.delta && choice.delta.content) {
        reply.firstAt = reply.firstAt || performance.now();
        reply.text += choice.delta.content;
        renderText(target.body, reply.text);
        follow(box());
      }
      if (choice && choice.finish_reason) reply.finish = choice.finish_reason;
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
    reply.finish = "cancelled";
  }
  reply.waited = ((reply.firstAt || performance.now()) - started) / 1000;  // loading + reading the prompt
  reply.seconds = (performance.now() - (reply.firstAt || started)) / 1000;  // decoding
  return reply;
}

function describeReply(target, reply) {
  const tokens = reply.usage ? reply.usage.completion_tokens : null;
  const speed = tokens > 1 && reply.seconds ? ` · ${((tokens - 1) / reply.seconds).toFixed(1)} tok/s` : "";
  const first = ` · ${t("chat.firstToken")} ${reply.waited.toFixed(1)} s`;
  const stopped = reply.finish === "cancelled" ? ` ${t("chat.stopped")}` : "";
  target.meta.textContent = `${model()}${tokens ? ` · ${tokens} tokens` : ""}${speed}${first}${stopped}`;
}

function markSaved(target) {
  target.bubble.classList.add("saved");
  target.meta.textContent += ` · ${t("chat.saved")} ✓`;
}

// ---------------------------------------------------------------- saving

async function saveTurn(turn) {
  const system = systemPrompt();
  if (!state.sessionId) {
    const first = system ? [{ role: "system", content: system }, ...turn] : turn;
    const row = await sendJSON("POST", "/api/sessions", { model: model(), params: params(), messages: first });
    state.sessionId = row.id;
  } else if (system !== state.savedSystem) {
    await sendJSON("PUT", `/api/sessions/${state.sessionId}/messages`, { messages: withSystem(state.messages) });
  } else {
    await sendJSON("POST", `/api/sessions/${state.sessionId}/messages`, { messages: turn });
  }
  state.savedSystem = system;
}

async function rewriteSession() {
  if (!state.sessionId) return saveTurn(state.messages);
  await sendJSON("PUT", `/api/sessions/${state.sessionId}/messages`, { messages: withSystem(state.messages) });
  state.savedSystem = systemPrompt();
}

// ---------------------------------------------------------------- actions

function checkModel() {
  const chosen = findModel(model());
  if (chosen && !chosen.runnable) throw new ApiError(400, t("chat.notRunnable") + statusText(chosen));
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  showError("");
  const user = { role: "user", content: text };
  const userBubble = bubble(box(), "user", text);
  const target = bubble(box(), "assistant");
  target.meta.textContent = t("chat.loading");
  state.messages.push(user);
  setBusy(true);
  try {
    checkModel();
    const reply = await streamReply(state.messages, target);
    if (!reply.text && reply.finish === "cancelled") throw Object.assign(new Error(""), { name: "Empty" });
    state.messages.push({ role: "assistant", content: reply.text });
    describeReply(target, reply);
    await saveTurn([user, { role: "assistant", content: reply.text }]);
    markSaved(target);
    refreshSessions();
  } catch (error) {
    if (state.messages[state.messages.length - 1] === user) {  // nothing answered: take the turn back
      state.messages.pop();
      userBubble.bubble.remove();
      target.bubble.remove();
      $("chat-input").value = text;
    }
    if (error.name !== "Empty") showError(error.message);
  } finally {
    setBusy(false);
  }
}

async function regenerate() {
  const last = state.messages[state.messages.length - 1];
  if (state.busy || !last || last.role !== "assistant") return;
  showError("");
  state.messages.pop();
  const replies = box().querySelectorAll(".msg.assistant");
  replies[replies.length - 1]?.remove();
  const target = bubble(box(), "assistant");
  setBusy(true);
  try {
    checkModel();
    const reply = await streamReply(state.messages, target);
    state.messages.push({ role: "assistant", content: reply.text || last.content });
    describeReply(target, reply);
    await rewriteSession();
    markSaved(target);
  } catch (error) {
    state.messages.push(last);
    renderText(target.body, last.content);
    showError(error.message);
  } finally {
    setBusy(false);
  }
}

function newChat() {
  if (state.busy) state.controller?.abort();
  Object.assign(state, { sessionId: null, messages: [], savedSystem: "" });
  box().replaceChildren();
  const empty = document.createElement("div");
  empty.className = "empty";
  empty.dataset.i18n = "chat.empty";
  empty.textContent = t("chat.empty");
  box().append(empty);
  showError("");
  setBusy(false);
  highlightSession();
}

async function openSession(id) {
  if (state.busy) return;
  const session = await getJSON(`/api/sessions/${encodeURIComponent(id)}`);
  const systems = session.messages.filter((m) => m.role === "system");
  $("chat-system").value = systems.length ? systems[systems.length - 1].content : "";
  Object.assign(state, { sessionId: session.id, savedSystem: systemPrompt(),
                         messages: session.messages.filter((m) => m.role !== "system") });
  box().replaceChildren();
  state.messages.forEach((m) => bubble(box(), m.role, m.content).bubble.classList.add("saved"));
  if (findModel(session.model)) $("chat-model").value = session.model;
  describeModel($("chat-model-info"), model());
  showError("");
  setBusy(false);
  highlightSession();
}

// ---------------------------------------------------------------- sessions sidebar

function highlightSession() {
  document.querySelectorAll("#session-list li").forEach((li) => li.classList.toggle("active", li.dataset.id === state.sessionId));
}

function sessionItem(session) {
  const li = document.createElement("li");
  li.dataset.id = session.id;
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = session.title || session.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const when = new Date(session.updated * 1000).toLocaleString();
  meta.textContent = `${session.model} · ${session.n_messages} ${t("chat.messages")} · ${when}`;
  li.append(title, meta);
  li.addEventListener("click", () => openSession(session.id).catch((e) => showError(e.message)));
  return li;
}

export async function refreshSessions() {
  const { sessions } = await getJSON("/api/sessions");
  const list = $("session-list");
  list.replaceChildren(...sessions.map(sessionItem));
  if (!sessions.length) list.innerHTML = `<li class="none">${t("chat.noSessions")}</li>`;
  highlightSession();
}

// ---------------------------------------------------------------- wiring

function fillPersonas() {
  const select = $("chat-persona");
  const current = select.value;
  select.replaceChildren(...Object.keys(PERSONAS).map((key) => {
    const option = document.createElement("option");
    option.value = key;
    option.textContent = t(`persona.${key}`);
    return option;
  }));
  select.value = current || "none";
}

function showParams() {
  $("chat-temperature-value").textContent = $("chat-temperature").value;
  $("chat-top-p-value").textContent = $("chat-top-p").value;
}

export async function refreshChatModels() {
  await loadModels();
  fillSelect($("chat-model"));
  describeModel($("chat-model-info"), model());
  fillPersonas();
}

export function initChat() {
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("chat-input").value;
    $("chat-input").value = "";
    send(text);
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {  // not while an IME is composing
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("chat-stop").addEventListener("click", () => state.controller?.abort());
  $("chat-regenerate").addEventListener("click", regenerate);
  $("chat-new").addEventListener("click", newChat);
  $("chat-model").addEventListener("change", () => { rememberPick($("chat-model")); describeModel($("chat-model-info"), model()); });
  $("chat-settings-toggle").addEventListener("click", () => { $("chat-settings").hidden = !$("chat-settings").hidden; });
  $("chat-persona").addEventListener("change", () => { $("chat-system").value = PERSONAS[$("chat-persona").value]; });
  ["chat-temperature", "chat-top-p"].forEach((id) => $(id).addEventListener("input", showParams));
  showParams();
  fillPersonas();
}
