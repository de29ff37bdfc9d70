// Start-up: tabs, the language toggle (everything on screen re-rendered in the new language), the API key
// dialog, the connection notice (the page reconnects by itself, and retries on request), and the first load of
// models and sessions, reopening the last session.
import { apiKey, probeNow, setApiKey, whenUnauthorized } from "./api.js";
import { initArena, refreshArenaModels, retranslateArena } from "./arena.js";
import { initChat, refreshChatModels, reopenLast, retryInterrupted, syncSession } from "./chat.js";
import { initDownload, retranslateDownload } from "./download.js";
import { applyText, currentLang, t, toggleLang } from "./i18n.js";
import { refreshBoard, retranslateBoard } from "./leaderboard.js";
import { pickLang } from "./models.js";
import { retranslateMessages } from "./render.js";
import { refreshSessions, retranslateSessions } from "./sessions.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["chat", "arena", "board"];

function showView(name) {
  const view = VIEWS.includes(name) ? name : "chat";
  document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.view === view));
  document.querySelectorAll(".view").forEach((el) => el.classList.toggle("active", el.id === `view-${view}`));
  history.replaceState(null, "", `${location.pathname}${location.search}#${view}`);
  if (view === "board") refreshBoard();
}

function reportError(error) {
  const box = $("chat-error");
  box.textContent = pickLang(error.message);
  box.hidden = false;
}

async function loadModels(force) {
  await refreshChatModels(force);
  await refreshArenaModels(force);
}

async function loadAll({ force = false } = {}) {
  try {
    await loadModels(force);
    await refreshSessions();
    $("chat-error").hidden = true;
  } catch (error) {
    reportError(error);
  }
}

// ---------------------------------------------------------------- connection

function showOffline() {
  $("connection").hidden = false;
  $("connection").classList.remove("back");
  $("connection-text").dataset.i18n = "connection.lost";
  $("connection-text").textContent = t("connection.lost");
  $("connection-retry").hidden = false;
}

async function showOnline() {
  $("connection-text").dataset.i18n = "connection.back";
  $("connection-text").textContent = t("connection.back");
  $("connection").classList.add("back");
  $("connection-retry").hidden = true;
  await syncSession();
  await loadAll({ force: true });
  await reopenLast();  // the page may have opened while the server was down
  if ($("view-board").classList.contains("active")) refreshBoard();
  setTimeout(() => { if ($("connection").classList.contains("back")) $("connection").hidden = true; }, 3000);
}

function initConnection() {
  document.addEventListener("danlu:offline", showOffline);
  document.addEventListener("danlu:online", showOnline);
  $("connection-retry").addEventListener("click", () => { probeNow(); retryInterrupted(); });
}

// ---------------------------------------------------------------- key, language

function openKeyDialog(reasonKey) {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  $("key-reason").textContent = t(reasonKey);
  $("key-input").value = apiKey();
  dialog.showModal();
}

function initKeyDialog() {
  $("key-button").addEventListener("click", () => openKeyDialog("key.explain"));
  whenUnauthorized(() => openKeyDialog("key.needed"));
  $("key-dialog").addEventListener("close", () => {
    const action = $("key-dialog").returnValue;
    if (action === "save") setApiKey($("key-input").value.trim());
    if (action === "clear") setApiKey("");
    if (action === "save" || action === "clear") {
      $("chat-error").hidden = true;
      loadAll({ force: true }).then(reopenLast);
    }
  });
}

function showLangButton() {
  $("lang-button").textContent = currentLang() === "en" ? "中文" : "English";
  $("lang-button").dataset.short = currentLang() === "en" ? "中" : "EN";
  $("key-button").dataset.short = t("key.short");
}

function initLang() {
  $("lang-button").addEventListener("click", () => {
    toggleLang();
    showLangButton();
    retranslateArena();
    retranslateMessages();
    retranslateSessions();
    retranslateDownload();
    retranslateBoard();
    loadAll();
  });
  applyText();
  showLangButton();
}

initLang();
initChat();
initArena();
initDownload();
initKeyDialog();
initConnection();
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showView(tab.dataset.view)));
document.addEventListener("danlu:voted", () => refreshBoard());
document.addEventListener("danlu:models", () => refreshArenaModels(false));
showView(location.hash.slice(1));
loadAll().then(reopenLast);
