// The arena view: a battle between two models (anonymous, or side by side with chosen names), the same turn
// streamed to both at once (one SSE stream carrying both sides), several turns, then one vote.
import { request, sendJSON, sseEvents } from "./api.js";
import { t } from "./i18n.js";
import { fillSelect, loadModels, pickLang, rememberPick } from "./models.js";
import { bubble, follow, renderText } from "./render.js";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
const VOTE_KEYS = { a: "vote.a", b: "vote.b", tie: "vote.tie", both_bad: "vote.bothBad" };
const state = { battle: null, busy: false };

const mode = () => document.querySelector('input[name="arena-mode"]:checked').value;
const column = (side) => $(`arena-messages-${side}`);

function showError(message) {
  $("arena-error").textContent = message ? pickLang(message) : "";
  $("arena-error").hidden = !message;
}

// A status line that survives a language switch: its values may themselves be text keys (a vote's name).
function setStatus(key, values = {}) {
  const status = $("arena-status");
  status.dataset.key = key || "";
  status.dataset.values = JSON.stringify(values);
  const shown = Object.fromEntries(Object.entries(values).map(([name, value]) => [name, t(String(value))]));
  status.textContent = key ? t(key, shown) : "";
}

function canVote() {
  const battle = state.battle;
  return Boolean(battle && !battle.vote && battle.n_turns > 0 && !state.busy);
}

function refreshControls() {
  const open = Boolean(state.battle && !state.battle.vote);
  document.querySelectorAll(".vote").forEach((button) => { button.disabled = !canVote(); });
  $("arena-input").disabled = !open || state.busy;
  $("arena-send").disabled = !open || state.busy;
  $("arena-start").disabled = state.busy;
}

function showNames() {
  const battle = state.battle || {};
  SIDES.forEach((side) => {
    $(`arena-name-${side}`).textContent = battle[`model_${side}`] || "";
    $(`arena-col-${side}`).classList.toggle("winner", battle.vote === side);
  });
}

function settings() {
  return { max_tokens: parseInt($("arena-max-tokens").value, 10) || 256,
           temperature: parseFloat($("arena-temperature").value) || 0 };
}

async function startBattle() {
  showError("");
  const body = { mode: mode(), params: settings() };
  if (body.mode === "side_by_side") Object.assign(body, { model_a: $("arena-model-a").value, model_b: $("arena-model-b").value });
  try {
    state.battle = await sendJSON("POST", "/api/battles", body);
  } catch (error) {
    showError(error.message);
    return;
  }
  SIDES.forEach((side) => column(side).replaceChildren());
  showNames();
  setStatus("arena.ready");
  refreshControls();
  $("arena-input").focus();
}

// ---------------------------------------------------------------- one turn, both sides

function onEvent(event, targets, texts) {
  const target = targets[event.side];
  if (event.delta) {
    texts[event.side] += event.delta;
    renderText(target.body, texts[event.side]);
    follow(column(event.side));
  }
  if (event.finish_reason) target.meta.textContent = `${event.completion_tokens} tokens · ${event.finish_reason}`;
  if (event.error) {
    target.bubble.classList.add("failed");
    target.meta.textContent = pickLang(event.error);
  }
}

async function sendTurn(text) {
  if (!state.battle) return showError(t("arena.start.first"));
  if (state.busy || !text.trim()) return;
  showError("");
  const users = SIDES.map((side) => bubble(column(side), "user", text));
  const targets = Object.fromEntries(SIDES.map((side) => [side, bubble(column(side), "assistant")]));
  const texts = { a: "", b: "" };
  let saved = null;
  state.busy = true;
  refreshControls();
  try {
    const response = await request("POST", `/api/battles/${state.battle.id}/turns`, { content: text });
    for await (const event of sseEvents(response)) {
      if (event.side) onEvent(event, targets, texts);
      if ("saved" in event) saved = event;
    }
  } catch (error) {
    showError(error.message);
  } finally {
    state.busy = false;
  }
  if (saved && saved.saved) {
    state.battle.n_turns = saved.n_turns;
    SIDES.forEach((side) => targets[side].bubble.classList.add("saved"));
    setStatus("arena.canVote", { n: saved.n_turns });
  } else {
    users.forEach((u) => u.bubble.remove());
    SIDES.forEach((side) => { if (!targets[side].bubble.classList.contains("failed")) targets[side].bubble.remove(); });
    $("arena-input").value = text;
    if (saved) setStatus("arena.notSaved");
  }
  refreshControls();
}

async function vote(choice) {
  if (!canVote()) return;
  showError("");
  try {
    state.battle = await sendJSON("POST", `/api/battles/${state.battle.id}/vote`, { vote: choice });
  } catch (error) {
    showError(error.message);
    return;
  }
  showNames();
  setStatus("arena.voted", { vote: VOTE_KEYS[choice] });
  refreshControls();
  document.dispatchEvent(new CustomEvent("danlu:voted"));
}

// ---------------------------------------------------------------- wiring

function showMode() {
  const named = mode() === "side_by_side";
  document.querySelectorAll(".named-only").forEach((el) => { el.hidden = !named; });
  $("arena-hint").dataset.i18n = named ? "arena.hintNamed" : "arena.hint";
  $("arena-hint").textContent = t($("arena-hint").dataset.i18n);
}

export async function refreshArenaModels() {
  await loadModels();
  fillSelect($("arena-model-a"), { runnableOnly: true, fallbackIndex: 0 });
  fillSelect($("arena-model-b"), { runnableOnly: true, fallbackIndex: 1 });
}

export function retranslateArena() {
  const status = $("arena-status");
  if (status.dataset.key) setStatus(status.dataset.key, JSON.parse(status.dataset.values || "{}"));
  showMode();
}

export function initArena() {
  $("arena-start").addEventListener("click", startBattle);
  $("arena-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("arena-input").value;
    $("arena-input").value = "";
    sendTurn(text);
  });
  $("arena-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("arena-form").requestSubmit();
    }
  });
  document.querySelectorAll(".vote").forEach((button) => button.addEventListener("click", () => vote(button.dataset.vote)));
  document.querySelectorAll('input[name="arena-mode"]').forEach((radio) => radio.addEventListener("change", showMode));
  ["arena-model-a", "arena-model-b"].forEach((id) => $(id).addEventListener("change", () => rememberPick($(id))));
  showMode();
  refreshControls();
}
