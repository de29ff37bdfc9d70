// The model picker: catalog models, remotes and models served by path, from /api/models. Each shows one state
// (已下载 / 需下载 / 放不下 / 暂不支持, or 远程) and one memory figure, fit's prediction. Base models say so.
// A fresh browser starts on the server's default chat model (Settings.default_model, as the CLI).
import { getJSON } from "./api.js";
import { currentLang, t } from "./i18n.js";

let models = null;

export async function loadModels(force = false) {
  if (!models || force) models = await getJSON("/api/models");
  return models;
}

export function modelList() { return models ? models.models : []; }

export function defaultModel() { return models ? models.default_model : null; }

export function serverContext() { return models ? models.n_ctx : null; }

export function findModel(id) {
  return models && models.models.find((m) => m.id === id);
}

// "中文 / English" server text: the half for the current language (the whole text when it is not such a pair).
export function pickLang(text) {
  if (!text) return "";
  const cut = text.indexOf(" / ");
  const cjk = /[\u3400-\u9fff]/;
  if (cut > 0 && cjk.test(text.slice(0, cut)) && !cjk.test(text.slice(cut + 3))) {
    return currentLang() === "en" ? text.slice(cut + 3) : text.slice(0, cut);
  }
  return text;
}

export function formatBytes(n) {
  if (!n) return "-";
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`;
}

export function fitsHere(model) {
  return ["gpu", "partial", "cpu", "remote"].includes(model.verdict);
}

// One state per model: ready (downloaded, fits), download (fits once pulled), nofit, unsupported, remote.
export function stateOf(model) {
  if (model.kind === "remote" || model.kind === "served") return "remote";
  if (model.verdict === "no-fit") return "nofit";
  if (model.runnable) return "ready";
  if (model.status_code === "not_downloaded" && fitsHere(model)) return "download";
  return "unsupported";
}

const GROUPS = { ready: "group.ready", remote: "group.remote", download: "group.download", nofit: "group.other",
                 unsupported: "group.other" };

function optionText(model) {
  const state = stateOf(model);
  const memory = ["ready", "download"].includes(state) && model.predicted_bytes ? ` · ${formatBytes(model.predicted_bytes)}` : "";
  const base = model.chat === false ? ` · ${t("model.base")}` : "";
  return `${model.id} — ${t(`state.${state}`)}${memory}${base}`;
}

function option(model) {
  const el = document.createElement("option");
  el.value = model.id;
  el.textContent = optionText(model);
  el.dataset.state = stateOf(model);
  return el;
}

function chatModels() {
  return models.models.filter((m) => !m.task || m.task === "chat");
}

// Fill a <select> with optgroups; keep the current (or remembered) choice, else the server's default chat
// model, else the first runnable chat model (skipping `avoid`, the other side of a duel).
export function fillSelect(select, { runnableOnly = false, avoid = null } = {}) {
  const remembered = select.value || localStorage.getItem(`danlu.pick.${select.id}`);
  const shown = chatModels().filter((m) => !runnableOnly || m.runnable);
  select.replaceChildren();
  for (const key of ["group.ready", "group.remote", "group.download", "group.other"]) {
    const members = shown.filter((m) => GROUPS[stateOf(m)] === key);
    if (!members.length) continue;
    const optgroup = document.createElement("optgroup");
    optgroup.label = t(key);
    members.forEach((m) => optgroup.append(option(m)));
    select.append(optgroup);
  }
  const has = (id) => id && shown.some((m) => m.id === id) && id !== avoid;
  const firstChat = shown.find((m) => m.runnable && m.chat !== false && m.id !== avoid) || shown.find((m) => m.id !== avoid);
  if (has(remembered)) select.value = remembered;
  else if (has(models.default_model) && !runnableOnly) select.value = models.default_model;
  else if (firstChat) select.value = firstChat.id;
}

export function rememberPick(select) {
  localStorage.setItem(`danlu.pick.${select.id}`, select.value);
}

// The largest context a request to `model` may ask for: the model's own, at most the server's (fit's figure).
export function contextLimit(model) {
  const server = serverContext() || 4096;
  return model && model.context_length ? Math.min(model.context_length, server) : server;
}

// The line under the picker: state badge, predicted memory, how it runs, speed; why not, when it cannot run.
export function describeModel(container, id) {
  const model = findModel(id);
  container.replaceChildren();
  if (!model) return;
  const state = stateOf(model);
  const badge = document.createElement("span");
  badge.className = `badge state-${state}`;
  badge.textContent = t(`state.${state}`);
  container.append(badge);
  if (model.chat === false) {
    const base = document.createElement("span");
    base.className = "badge base-model";
    base.textContent = t("model.base");
    container.append(" ", base);
  }
  const facts = document.createElement("span");
  facts.className = "facts";
  facts.textContent = ` ${factsText(model, state)}`;
  container.append(facts);
  container.title = pickLang(model.reason);
  container.classList.toggle("blocked", !model.runnable);
}

function factsText(model, state) {
  const loaded = models.loaded.includes(model.id) ? ` · ${t("info.loaded")}` : "";
  if (state === "nofit" || state === "unsupported") return pickLang(model.reason) || pickLang(model.status);
  if (state === "remote") return `${pickLang(model.verdict_text)}${loaded}`;
  const memory = model.predicted_bytes ? `${t("info.memory")} ${formatBytes(model.predicted_bytes)} · ` : "";
  return `${memory}${pickLang(model.verdict_text)} · ${t("info.speed")} ${t(`speed.${model.speed}`)}${loaded}`;
}

// Why a model cannot run now, for an error message.
export function statusText(model) {
  const state = stateOf(model);
  if (state === "download") return t("info.needsDownload");
  if (state === "ready" || state === "remote") return t("state.ready");
  return pickLang(model.reason) || pickLang(model.status);
}
