// The arena view: a battle between two models (anonymous, or side by side with chosen names), the same turn
// streamed to both at once (one SSE stream carrying both sides), several turns, then one vote. Each side
// shows its waiting text, its thinking folded above the answer, and its first-token wait, speed and how it
// ended; Stop ends both sides (the turn is then not saved). The side-by-side pickers keep their sides.
import { request, sendJSON, sseEvents } from "./api.js";
import { t } from "./i18n.js";
import { fillSelect, loadModels, pickLang, rememberPick } from "./models.js";
import { follow, MessageView } from "./render.js";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
const VOTE_KEYS = { a: "vote.a", b: "vote.b", tie: "vote.tie", both_bad: "vote.bothBad" };
const state = { battle: null, busy: false, controller: null, unsaved: [] };

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
  $("arena-send").hidden = state.busy;
  $("arena-send").disabled = !open;
  $("arena-stop").hidden = !state.busy;
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
  if (body.mode === "side_by_side") {
    Object.assign(body, { model_a: $("arena-model-a").value, model_b: $("arena-model-b").value });
    ["arena-model-a", "arena-model-b"].forEach((id) => rememberPick($(id)));  // the next battle keeps these sides
  }
  try {
    state.battle = await sendJSON("POST", "/api/battles", body);
  } catch (error) {
    state.battle = null;
    setStatus("");
    showError(error.message);
    refreshControls();
    return;
  }
  SIDES.forEach((side) => column(side).replaceChildren());
  state.unsaved = [];
  showNames();
  setStatus("arena.ready");
  refreshControls();
  $("arena-input").focus();
}

// ---------------------------------------------------------------- one turn, both sides

function sideState() {
  return { text: "", reasoning: "", firstAt: null, reasoningAt: null, reasoningEnd: null, endedAt: null };
}

function onEvent(event, views, sides, started) {
  const view = views[event.side];
  const side = sides[event.side];
  const now = performance.now();
  if (event.reasoning) {
    side.firstAt = side.firstAt || now;
    side.reasoningAt = side.reasoningAt || now;
    side.reasoning += event.reasoning;
    if (view.waiting) view.wait(null);
    view.showReasoning(side.reasoning, { started: side.reasoningAt });
  }
  if (event.delta) {
    side.firstAt = side.firstAt || now;
    if (side.reasoningAt && !side.reasoningEnd) side.reasoningEnd = now;
    side.text += event.delta;
    view.showText(side.text);
    follow(column(event.side));
  }
  if (event.finish_reason) {
    side.endedAt = now;
    view.showText(side.text, { final: true });
    view.setMeta(sideMeta(side, started, event));
  }
  if (event.error) {
    view.el.classList.add("failed");
    view.wait(null);
    view.body.textContent = pickLang(event.error);
  }
}

function sideMeta(side, started, event) {
  const first = side.firstAt || side.endedAt;
  const meta = { tokens: event.completion_tokens, finish_reason: event.finish_reason,
                 first_token_s: (first - started) / 1000, seconds: (side.endedAt - first) / 1000 };
  if (side.reasoning) {
    meta.reasoning_tokens = event.reasoning_tokens || undefined;
    meta.reasoning_s = ((side.reasoningEnd || side.endedAt) - side.reasoningAt) / 1000;
  }
  return meta;
}

function dropUnsaved() {
  state.unsaved.forEach((view) => view.remove());
  state.unsaved = [];
}

async function sendTurn(text) {
  if (!state.battle) return showError(t("arena.start.first"));
  if (state.busy || !text.trim()) return;
  showError("");
  dropUnsaved();
  const users = SIDES.map((side) => new MessageView(column(side), "user", { text }));
  const views = Object.fromEntries(SIDES.map((side) => [side, new MessageView(column(side), "assistant", { options: { showStop: true } })]));
  SIDES.forEach((side) => views[side].wait("arena.waiting"));
  const sides = { a: sideState(), b: sideState() };
  const started = performance.now();
  let saved = null;
  state.busy = true;
  state.controller = new AbortController();
  refreshControls();
  try {
    const response = await request("POST", `/api/battles/${state.battle.id}/turns`, { content: text }, state.controller.signal);
    for await (const event of sseEvents(response)) {
      if (event.side) onEvent(event, views, sides, started);
      if ("saved" in event) saved = event;
    }
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    state.busy = false;
    state.controller = null;
  }
  finishTurn(text, saved, users, views, sides);
}

function finishTurn(text, saved, users, views, sides) {
  if (saved && saved.saved) {
    state.battle.n_turns = saved.n_turns;
    SIDES.forEach((side) => views[side].markSaved());
    setStatus("arena.canVote", { n: saved.n_turns });
  } else {
    // Not saved (stopped, failed or cut): what came stays visible, marked, until the next turn; the text goes back.
    SIDES.forEach((side) => {
      const view = views[side];
      if (view.waiting) view.wait(null);
      if (!view.meta.finish_reason) view.setMeta({ finish_reason: "cancelled" });
      view.showText(sides[side].text, { final: true });
      view.el.classList.add("unsaved");
    });
    state.unsaved = [...users, ...Object.values(views)];
    $("arena-input").value = text;
    setStatus(saved ? "arena.notSaved" : "arena.stopped");
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

export async function refreshArenaModels(force = false) {
  await loadModels(force);
  fillSelect($("arena-model-a"), { runnableOnly: true });
  fillSelect($("arena-model-b"), { runnableOnly: true, avoid: $("arena-model-a").value });
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
  $("arena-stop").addEventListener("click", () => state.controller?.abort());
  document.querySelectorAll(".vote").forEach((button) => button.addEventListener("click", () => vote(button.dataset.vote)));
  document.querySelectorAll('input[name="arena-mode"]').forEach((radio) => radio.addEventListener("change", showMode));
  ["arena-model-a", "arena-model-b"].forEach((id) => $(id).addEventListener("change", () => rememberPick($(id))));
  showMode();
  refreshControls();
}
