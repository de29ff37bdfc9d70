// Start-up: tabs, the language toggle, the API key dialog, and the first load of models and sessions.
import { apiKey, setApiKey, whenUnauthorized } from "./api.js";
import { initArena, refreshArenaModels, retranslateArena } from "./arena.js";
import { initChat, refreshChatModels, refreshSessions } from "./chat.js";
import { applyText, currentLang, t, toggleLang } from "./i18n.js";
import { refreshBoard } from "./leaderboard.js";
import { pickLang } from "./models.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["chat", "arena", "board"];

function showView(name) {
  const view = VIEWS.includes(name) ? name : "chat";
  document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.view === view));
  document.querySelectorAll(".view").forEach((el) => el.classList.toggle("active", el.id === `view-${view}`));
  history.replaceState(null, "", `${location.pathname}${location.search}#${view}`);
  if (view === "board") refreshBoard().catch(reportError);
}

function reportError(error) {
  const box = $("chat-error");
  box.textContent = pickLang(error.message);
  box.hidden = false;
}

async function loadAll() {
  try {
    await refreshChatModels();
    await refreshArenaModels();
    await refreshSessions();
    $("chat-error").hidden = true;
  } catch (error) {
    reportError(error);
  }
}

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
      loadAll();
    }
  });
}

function showLangButton() {
  $("lang-button").textContent = currentLang() === "en" ? "中文" : "English";
}

function initLang() {
  $("lang-button").addEventListener("click", () => {
    toggleLang();
    showLangButton();
    retranslateArena();
    loadAll();
    if ($("view-board").classList.contains("active")) refreshBoard().catch(reportError);
  });
  applyText();
  showLangButton();
}

initLang();
initChat();
initArena();
initKeyDialog();
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showView(tab.dataset.view)));
document.addEventListener("danlu:voted", () => refreshBoard().catch(reportError));
showView(location.hash.slice(1));
loadAll();
