// The model picker: catalog models and remotes from /api/models, each with its fit verdict; runnable first.
import { getJSON } from "./api.js";
import { currentLang, t } from "./i18n.js";

let models = null;

export async function loadModels(force = false) {
  if (!models || force) models = await getJSON("/api/models");
  return models;
}

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

function group(model) {
  if (model.kind === "remote") return "group.remote";
  if (model.runnable) return "group.ready";
  return model.status_code === "not_downloaded" && fitsHere(model) ? "group.download" : "group.other";
}

function option(model) {
  const el = document.createElement("option");
  el.value = model.id;
  const size = model.size_bytes ? ` · ${formatBytes(model.size_bytes)}` : "";
  el.textContent = `${model.id} — ${pickLang(model.verdict_text)}${size}`;
  return el;
}

// Fill a <select> with optgroups; keep the current (or remembered) choice, else the first runnable model.
export function fillSelect(select, { runnableOnly = false, fallbackIndex = 0 } = {}) {
  const remembered = select.value || localStorage.getItem(`danlu.pick.${select.id}`);
  select.replaceChildren();
  for (const key of ["group.ready", "group.remote", "group.download", "group.other"]) {
    const members = models.models.filter((m) => group(m) === key && (!runnableOnly || m.runnable));
    if (!members.length) continue;
    const optgroup = document.createElement("optgroup");
    optgroup.label = t(key);
    members.forEach((m) => optgroup.append(option(m)));
    select.append(optgroup);
  }
  const runnable = models.models.filter((m) => m.runnable);
  const fallback = runnable[Math.min(fallbackIndex, runnable.length - 1)];
  if (remembered && findModel(remembered)) select.value = remembered;
  else if (fallback) select.value = fallback.id;
}

export function rememberPick(select) {
  localStorage.setItem(`danlu.pick.${select.id}`, select.value);
}

export function fitsHere(model) {
  return ["gpu", "partial", "cpu", "remote"].includes(model.verdict);
}

// Why a model can or cannot run: ready; does not fit (fit's reason); not downloaded (the pull command); other.
export function statusText(model) {
  if (model.status_code === "ready" && fitsHere(model)) return t("info.ready");
  if (!fitsHere(model)) return pickLang(model.reason) || pickLang(model.status);
  if (model.status_code === "not_downloaded") return `${t("info.pull")}danlu pull ${model.id}`;
  return pickLang(model.status);
}

// One line under the picker: verdict, predicted memory, speed, and how to get it when it is not downloaded.
export function describeModel(container, id) {
  const model = findModel(id);
  container.replaceChildren();
  if (!model) return;
  const badge = document.createElement("span");
  badge.className = `badge verdict-${model.verdict}`;
  badge.textContent = pickLang(model.verdict_text) || model.verdict;
  const facts = document.createElement("span");
  const loaded = models.loaded.includes(model.id) ? ` · ${t("info.loaded")}` : "";
  const memory = model.predicted_bytes ? `${t("info.memory")} ${formatBytes(model.predicted_bytes)} · ` : "";
  facts.textContent = ` ${memory}${t("info.speed")} ${t(`speed.${model.speed}`)}${loaded} · ${statusText(model)}`;
  container.append(badge, facts);
  container.title = pickLang(model.reason);
  container.classList.toggle("blocked", !model.runnable);
}
