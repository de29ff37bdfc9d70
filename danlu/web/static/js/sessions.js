// The sessions sidebar: the CLI's saved sessions, newest first, searchable by title and content, renamed in
// place, deleted with an undo (the delete is sent once the undo has expired). Sessions made in other tabs
// (told at once over a BroadcastChannel) and by `danlu chat` (seen by polling while the page is visible)
// appear by themselves. The open session is remembered, so a reload reopens it.
import { apiKey, getJSON, isOffline, sendJSON } from "./api.js";
import { t } from "./i18n.js";
import { pickLang } from "./models.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 4000;
const UNDO_MS = 6000;
const LAST = "danlu.lastSession";
const channel = "BroadcastChannel" in window ? new BroadcastChannel("danlu") : null;
const hooks = { open: async () => {}, current: () => null, closed: () => {}, error: () => {} };
const pendingDeletes = new Map();  // id -> timer
let shownSignature = "";
let query = "";
let latest = 0;

export function rememberSession(id) {
  if (id) localStorage.setItem(LAST, id); else localStorage.removeItem(LAST);
}

export function lastSession() { return localStorage.getItem(LAST); }

// Tell the other tabs that the sessions changed.
export function announceChange() { channel?.postMessage({ type: "sessions" }); }

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function iconButton(className, labelKey, text, onClick) {
  const button = element("button", `icon ${className}`, text);
  button.type = "button";
  button.title = t(labelKey);
  button.dataset.i18nTitle = labelKey;
  button.setAttribute("aria-label", t(labelKey));
  button.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
  return button;
}

function sessionItem(session) {
  const li = element("li");
  li.dataset.id = session.id;
  const text = element("div", "text");
  text.append(element("div", "title", session.title || session.id));
  const when = new Date(session.updated * 1000).toLocaleString(document.documentElement.lang);
  text.append(element("div", "meta", `${session.model} · ${session.n_messages} ${t("chat.messages")} · ${when}`));
  const tools = element("div", "item-tools");
  tools.append(iconButton("rename", "session.rename", "✎", () => startRename(li, session)),
               iconButton("delete", "session.delete", "✕", () => deleteLater(session)));
  li.append(text, tools);
  li.addEventListener("click", () => hooks.open(session.id).catch((e) => hooks.error(e)));
  return li;
}

function startRename(li, session) {
  const input = element("input", "rename-input");
  input.value = session.name || session.title || "";
  input.maxLength = 100;
  const title = li.querySelector(".title");
  title.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const name = input.value.trim();
    title.textContent = save && name ? name : session.title || session.id;  // the input leaves before the refresh
    if (save && name && name !== session.name) {
      try {
        await sendJSON("PATCH", `/api/sessions/${session.id}`, { name });
        announceChange();
      } catch (error) { hooks.error(error); }
    }
    shownSignature = "";
    await refreshSessions();
  };
  input.addEventListener("click", (event) => event.stopPropagation());
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) finish(true);
    if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}

function deleteLater(session) {
  if (session.id === hooks.current()) hooks.closed();
  if (lastSession() === session.id) rememberSession(null);
  const timer = setTimeout(() => commitDelete(session.id), UNDO_MS);
  pendingDeletes.set(session.id, timer);
  showUndo(session);
  render(lastList);
}

async function commitDelete(id) {
  if (!pendingDeletes.has(id)) return;
  pendingDeletes.delete(id);
  $("session-undo").hidden = pendingDeletes.size === 0 ? true : $("session-undo").hidden;
  try {
    await sendJSON("DELETE", `/api/sessions/${id}`);
    announceChange();
  } catch (error) { hooks.error(error); }
  await refreshSessions();
}

function showUndo(session) {
  const bar = $("session-undo");
  bar.dataset.id = session.id;
  $("session-undo-text").textContent = t("session.deleted", { title: session.title || session.id });
  bar.hidden = false;
}

function undoDelete() {
  const id = $("session-undo").dataset.id;
  clearTimeout(pendingDeletes.get(id));
  pendingDeletes.delete(id);
  $("session-undo").hidden = true;
  shownSignature = "";
  render(lastList);
}

// Leaving the page sends the deletes still waiting for their undo to expire.
function flushDeletes() {
  for (const id of pendingDeletes.keys()) {
    fetch(`/api/sessions/${id}`, { method: "DELETE", keepalive: true,
                                   headers: apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {} });
  }
  pendingDeletes.clear();
}

let lastList = [];

function render(sessions) {
  lastList = sessions;
  const visible = sessions.filter((s) => !pendingDeletes.has(s.id));
  const signature = JSON.stringify([visible.map((s) => [s.id, s.title, s.n_messages, s.updated, s.model]), hooks.current(),
                                    document.documentElement.lang]);
  const list = $("session-list");
  if (signature === shownSignature || list.querySelector(".rename-input")) return;  // nothing new; or mid-rename
  shownSignature = signature;
  list.replaceChildren(...visible.map(sessionItem));
  if (!visible.length) list.append(element("li", "none", t(query ? "session.noMatch" : "chat.noSessions")));
  highlightSession();
}

export function highlightSession() {
  document.querySelectorAll("#session-list li").forEach((li) => li.classList.toggle("active", li.dataset.id === hooks.current()));
}

export async function refreshSessions() {
  const mine = ++latest;
  const path = query ? `/api/sessions?q=${encodeURIComponent(query)}` : "/api/sessions";
  try {
    const { sessions } = await getJSON(path);
    if (mine !== latest) return;
    $("session-error").hidden = true;
    render(sessions);
  } catch (error) {
    if (mine !== latest) return;
    $("session-error").textContent = pickLang(error.message);
    $("session-error").hidden = false;
  }
}

export function retranslateSessions() {
  shownSignature = "";
  render(lastList);
}

let searchTimer = null;

function poll() {
  if (document.visibilityState === "visible" && !isOffline()) refreshSessions();
}

export function initSessions(callbacks) {
  Object.assign(hooks, callbacks);
  $("session-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { query = $("session-search").value.trim(); refreshSessions(); }, 200);
  });
  $("session-undo-button").addEventListener("click", undoDelete);
  channel?.addEventListener("message", (event) => { if (event.data?.type === "sessions") refreshSessions(); });
  document.addEventListener("visibilitychange", poll);
  window.addEventListener("focus", poll);
  window.addEventListener("pagehide", flushDeletes);
  setInterval(poll, POLL_MS);
}
