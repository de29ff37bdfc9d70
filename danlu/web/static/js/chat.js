// The chat view: streams replies from /v1/chat/completions (like any OpenAI client) and keeps the session in
// the CLI's database through /api/sessions: the user's message as it is sent, each reply (with its tokens,
// speed and thinking) when it ends. When the connection breaks the partial reply stays on screen, marked
// interrupted, and the session is written again once the server is back. Regenerate and editing an earlier
// message rewrite the history from there.
import { ApiError, ConnectionLost, getJSON, isOffline, sendJSON } from "./api.js";
import { fillPersonas, fitSettingsToModel, initSettings, model, params, requestExtras, systemPrompt } from "./chat_settings.js";
import { openDownload } from "./download.js";
import { t } from "./i18n.js";
import { defaultModel, describeModel, fillSelect, findModel, loadModels, pickLang, rememberPick, stateOf, statusText } from "./models.js";
import { emptyNote, follow, MessageView } from "./render.js";
import { announceChange, highlightSession, initSessions, lastSession, refreshSessions, rememberSession } from "./sessions.js";
import { replyMeta, streamChat } from "./stream.js";

const $ = (id) => document.getElementById(id);
const UNSAVED = "danlu.unsaved";
const state = { sessionId: null, messages: [], savedSystem: "", controller: null, busy: false, dirty: false,
                acknowledged: new Set() };

const box = () => $("chat-messages");

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
  box().classList.toggle("busy", busy);
}

const plain = (messages) => messages.map((m) => ({ role: m.role, content: m.content }));
const stored = (messages) => messages.map((m) => ({ role: m.role, content: m.content, ...(m.meta && Object.keys(m.meta).length ? { meta: m.meta } : {}) }));
const withSystem = (messages) => (systemPrompt() ? [{ role: "system", content: systemPrompt() }, ...messages] : messages);

// ---------------------------------------------------------------- saving (each step, or all again after a break)

function keepUnsaved() {
  localStorage.setItem(UNSAVED, JSON.stringify({ sessionId: state.sessionId, model: model(), system: systemPrompt(),
                                                 messages: stored(state.messages) }));
}

async function persist(step) {
  if (state.dirty) return syncSession();
  try {
    await step();
    announceChange();
  } catch (error) {
    if (!(error instanceof ConnectionLost)) throw error;
    state.dirty = true;
    keepUnsaved();
  }
}

async function createSession(messages) {
  const row = await sendJSON("POST", "/api/sessions", { model: model(), params: params(), messages: withSystem(stored(messages)) });
  state.sessionId = row.id;
  state.savedSystem = systemPrompt();
  rememberSession(row.id);
}

async function rewriteSession() {
  if (!state.sessionId) return createSession(state.messages);
  await sendJSON("PUT", `/api/sessions/${state.sessionId}/messages`, { messages: withSystem(stored(state.messages)) });
  state.savedSystem = systemPrompt();
}

async function appendMessage(message) {
  if (!state.sessionId) return createSession([message]);
  if (systemPrompt() !== state.savedSystem) return rewriteSession();
  await sendJSON("POST", `/api/sessions/${state.sessionId}/messages`, { messages: stored([message]) });
}

// After a break: write the whole session again (the server may have missed any step of it).
export async function syncSession() {
  if (!state.dirty || isOffline()) return;
  try {
    await rewriteSession();
    state.dirty = false;
    localStorage.removeItem(UNSAVED);
    state.messages.forEach((m) => m.view.markSaved(m.role === "assistant"));
    announceChange();
    refreshSessions();
  } catch (error) {
    if (!(error instanceof ConnectionLost)) showError(error.message);
  }
}

// ---------------------------------------------------------------- one reply

function requestBody(history) {
  return { model: model(), messages: withSystem(plain(history)), stream: true, stream_options: { include_usage: true },
           ...params(), ...requestExtras() };
}

function showProgress(view, reply) {
  if (view.waiting) view.wait(null);
  if (reply.reasoning) view.showReasoning(reply.reasoning, { started: reply.reasoningAt });
  if (reply.toolCalls.length) view.showToolCalls(reply.toolCalls);
  if (reply.text || !reply.reasoning) view.showText(reply.text);
  follow(box());
}

// Streams a reply for `history` into a new assistant view; returns the message, or throws (nothing shown).
async function answer(history) {
  const view = new MessageView(box(), "assistant");
  view.wait("chat.loading");
  state.controller = new AbortController();
  let reply;
  let interrupted = false;
  try {
    reply = await streamChat(requestBody(history), state.controller.signal, (r) => showProgress(view, r));
  } catch (error) {
    if (!(error instanceof ConnectionLost) || !error.reply) { view.remove(); throw error; }
    reply = error.reply;
    interrupted = true;
  }
  const meta = replyMeta(reply, model());
  if (interrupted) meta.interrupted = true;
  if (!interrupted && reply.finish === "cancelled" && !reply.text && !reply.reasoning) {
    view.remove();
    throw Object.assign(new Error(""), { name: "Empty" });
  }
  view.wait(null);
  view.showText(reply.text, { final: true });
  view.showReasoning(reply.reasoning, { final: true });
  view.setMeta(meta);
  return { role: "assistant", content: reply.text, meta, view };
}

function checkModel() {
  const chosen = findModel(model());
  if (chosen && !chosen.runnable) throw new ApiError(400, t("chat.notRunnable") + statusText(chosen));
}

// A base model continues text rather than answering: say so once per model before its first chat.
function needsBaseWarning() {
  const chosen = findModel(model());
  return chosen && chosen.chat === false && !state.acknowledged.has(chosen.id);
}

function showBaseWarning(text) {
  $("chat-warning-text").textContent = t("chat.baseWarning", { model: model() });
  $("chat-warning").hidden = false;
  $("chat-warning").dataset.pending = text;
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  showError("");
  try { checkModel(); requestExtras(); } catch (error) { $("chat-input").value = text; return showError(error.message); }
  if (needsBaseWarning()) { $("chat-input").value = text; return showBaseWarning(text); }
  $("chat-warning").hidden = true;
  const user = { role: "user", content: text, meta: {} };
  user.view = new MessageView(box(), "user", { text });
  addEditButton(user);
  state.messages.push(user);
  setBusy(true);
  try {
    await persist(() => appendMessage(user));
    const reply = await answer(state.messages);
    state.messages.push(reply);
    await persist(() => appendMessage(reply));
    if (!state.dirty) reply.view.markSaved();
    afterBreak(reply);
  } catch (error) {
    await takeBack(user, text);
    if (error.name !== "Empty") showError(error.message);
  } finally {
    setBusy(false);
    refreshSessions();
  }
}

// Nothing was answered: the user's message leaves the screen and the session, and goes back in the box.
async function takeBack(user, text) {
  state.messages = state.messages.filter((m) => m !== user);
  user.view.remove();
  $("chat-input").value = text;
  if (!state.sessionId || state.dirty) return;
  try {
    if (state.messages.length || systemPrompt()) await rewriteSession();
    else { await sendJSON("DELETE", `/api/sessions/${state.sessionId}`); newChat(); }
    announceChange();
  } catch (_) { state.dirty = true; keepUnsaved(); }
}

function afterBreak(reply) {
  if (!reply.meta.interrupted) return;
  state.dirty = true;
  keepUnsaved();
  document.dispatchEvent(new CustomEvent("danlu:interrupted"));
}

async function regenerate() {
  const last = state.messages[state.messages.length - 1];
  if (state.busy || !last || last.role !== "assistant") return;
  showError("");
  state.messages.pop();
  last.view.el.hidden = true;
  setBusy(true);
  try {
    checkModel();
    const reply = await answer(state.messages);
    last.view.remove();
    state.messages.push(reply);
    await persist(rewriteSession);
    if (!state.dirty) reply.view.markSaved();
    afterBreak(reply);
  } catch (error) {
    state.messages.push(last);
    last.view.el.hidden = false;
    if (error.name !== "Empty") showError(error.message);
  } finally {
    setBusy(false);
  }
}

// The notice's retry: answer the interrupted reply again.
export function retryInterrupted() {
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant" && last.meta.interrupted) regenerate();
}

// ---------------------------------------------------------------- editing an earlier message

function addEditButton(message) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "edit";
  button.dataset.i18n = "msg.edit";
  button.textContent = t("msg.edit");
  button.addEventListener("click", () => startEdit(message));
  message.view.actions.append(button);
}

function startEdit(message) {
  if (state.busy || message.view.el.querySelector(".editor")) return;
  const editor = document.createElement("div");
  editor.className = "editor";
  const area = Object.assign(document.createElement("textarea"), { value: message.content, rows: 3 });
  const save = Object.assign(document.createElement("button"), { type: "button", className: "primary save-edit" });
  save.dataset.i18n = "msg.saveEdit";
  save.textContent = t("msg.saveEdit");
  const cancel = Object.assign(document.createElement("button"), { type: "button", className: "ghost" });
  cancel.dataset.i18n = "msg.cancelEdit";
  cancel.textContent = t("msg.cancelEdit");
  editor.append(area, save, cancel);
  message.view.body.hidden = true;
  message.view.el.insertBefore(editor, message.view.metaLine);
  area.focus();
  cancel.addEventListener("click", () => { editor.remove(); message.view.body.hidden = false; });
  save.addEventListener("click", () => { editor.remove(); message.view.body.hidden = false; resendFrom(message, area.value); });
}

async function resendFrom(message, text) {
  if (state.busy || !text.trim()) return;
  const index = state.messages.indexOf(message);
  state.messages.slice(index + 1).forEach((m) => m.view.remove());
  state.messages = state.messages.slice(0, index + 1);
  message.content = text;
  message.view.showText(text);
  setBusy(true);
  try {
    checkModel();
    await persist(rewriteSession);
    const reply = await answer(state.messages);
    state.messages.push(reply);
    await persist(rewriteSession);
    if (!state.dirty) reply.view.markSaved();
    afterBreak(reply);
  } catch (error) {
    if (error.name !== "Empty") showError(error.message);
  } finally {
    setBusy(false);
    refreshSessions();
  }
}

// ---------------------------------------------------------------- sessions

function showMessages(messages) {
  box().replaceChildren();
  state.messages = messages.map((m) => {
    const message = { role: m.role, content: m.content, meta: m.meta || {} };
    message.view = new MessageView(box(), m.role, { text: m.content, meta: message.meta });
    if (m.role === "user") addEditButton(message);
    else message.view.markSaved(!state.dirty);
    return message;
  });
  if (!messages.length) emptyNote(box(), "chat.empty");
}

export function newChat() {
  if (state.busy) state.controller?.abort();
  Object.assign(state, { sessionId: null, messages: [], savedSystem: "", dirty: false });
  localStorage.removeItem(UNSAVED);
  rememberSession(null);
  emptyNote(box(), "chat.empty");
  showError("");
  setBusy(false);
  highlightSession();
  closeSidebarOnPhone();
}

async function openSession(id) {
  if (state.busy) return;
  const session = await getJSON(`/api/sessions/${encodeURIComponent(id)}`);
  const systems = session.messages.filter((m) => m.role === "system");
  $("chat-system").value = systems.length ? systems[systems.length - 1].content : "";
  Object.assign(state, { sessionId: session.id, savedSystem: systemPrompt(), dirty: false });
  localStorage.removeItem(UNSAVED);
  showMessages(session.messages.filter((m) => m.role !== "system"));
  if (findModel(session.model)) $("chat-model").value = session.model;
  modelChanged(false);
  rememberSession(session.id);
  showError("");
  setBusy(false);
  highlightSession();
  closeSidebarOnPhone();
}

// On load: a session left unsaved by a break comes back from this browser; else the last one opened.
export async function reopenLast() {
  const unsaved = JSON.parse(localStorage.getItem(UNSAVED) || "null");
  if (unsaved && unsaved.messages && unsaved.messages.length) {
    $("chat-system").value = unsaved.system || "";
    Object.assign(state, { sessionId: unsaved.sessionId, dirty: true });
    showMessages(unsaved.messages);
    if (findModel(unsaved.model)) $("chat-model").value = unsaved.model;
    modelChanged(false);
    await syncSession();
    return;
  }
  const id = lastSession();
  if (!id || state.sessionId || state.messages.length) return;
  try {
    await openSession(id);
  } catch (error) {
    if (error.status === 404) rememberSession(null);  // deleted meanwhile; a 401 or a break keeps it for later
  }
}

function closeSidebarOnPhone() { document.body.classList.remove("sidebar-open"); }

// ---------------------------------------------------------------- the model line

function modelChanged(remember = true) {
  if (remember) rememberPick($("chat-model"));
  describeModel($("chat-model-info"), model());
  const chosen = findModel(model());
  if (chosen && stateOf(chosen) === "download") {
    const button = Object.assign(document.createElement("button"), { type: "button", className: "primary small download" });
    button.id = "chat-download";
    button.dataset.i18n = "download.button";
    button.textContent = t("download.button");
    button.addEventListener("click", () => openDownload(chosen.id, downloaded));
    $("chat-model-info").append(" ", button);
  }
  fitSettingsToModel();
  $("chat-warning").hidden = true;
}

async function downloaded(id) {
  await loadModels(true);
  fillSelect($("chat-model"));
  $("chat-model").value = id;
  modelChanged();
  document.dispatchEvent(new CustomEvent("danlu:models"));
}

export async function refreshChatModels(force = false) {
  await loadModels(force);
  fillSelect($("chat-model"));
  modelChanged(false);
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
  $("chat-model").addEventListener("change", () => modelChanged());
  $("chat-warning-send").addEventListener("click", () => {
    state.acknowledged.add(model());
    $("chat-warning").hidden = true;
    $("chat-input").value = "";
    send($("chat-warning").dataset.pending || "");
  });
  $("chat-warning-switch").addEventListener("click", () => {
    const fallback = findModel(defaultModel());
    if (fallback) $("chat-model").value = fallback.id;
    modelChanged();
  });
  $("sidebar-toggle").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  $("sidebar-backdrop").addEventListener("click", closeSidebarOnPhone);
  initSettings();
  initSessions({ open: openSession, current: () => state.sessionId, closed: newChat, error: (e) => showError(e.message) });
}
