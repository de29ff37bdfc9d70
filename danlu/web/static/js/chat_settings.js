// The chat's settings panel: persona and system prompt, sampling, the context length (bounded by the model
// and by the server's context, the one fit was checked at), thinking on/off for hybrid models, and optional
// tool definitions (OpenAI function JSON) whose calls are shown as cards.
import { ApiError } from "./api.js";
import { t } from "./i18n.js";
import { contextLimit, findModel } from "./models.js";

const $ = (id) => document.getElementById(id);
export const PERSONAS = {
  none: "",
  assistant: "你是一个乐于助人的中文助手，回答简洁、准确。",
  teacher: "你是一位耐心的语文老师，用浅显的中文解释问题，并举例说明。",
  coder: "你是一位资深程序员，回答时给出可以运行的代码和简短的说明。",
  translator: "你是中英翻译：把中文译成英文、英文译成中文，只输出译文。",
};

export const model = () => $("chat-model").value;
export const systemPrompt = () => $("chat-system").value.trim();

export function params() {
  return { temperature: parseFloat($("chat-temperature").value), top_p: parseFloat($("chat-top-p").value),
           max_tokens: parseInt($("chat-max-tokens").value, 10) || 512 };
}

function tools() {
  const text = $("chat-tools").value.trim();
  if (!text) return null;
  let parsed;
  try { parsed = JSON.parse(text); } catch (_) { parsed = null; }
  const list = Array.isArray(parsed) ? parsed : parsed ? [parsed] : null;
  if (!list || !list.every((tool) => tool && typeof tool === "object")) throw new ApiError(400, t("tools.invalid"));
  return list.map((tool) => (tool.type ? tool : { type: "function", function: tool }));
}

// The extras of a chat request: a smaller context, the thinking switch, tools.
export function requestExtras() {
  const extras = {};
  const limit = contextLimit(findModel(model()));
  const asked = parseInt($("chat-context").value, 10);
  if (asked && asked < limit) extras.num_ctx = Math.max(asked, 256);
  if (!$("chat-think-field").hidden) extras.think = $("chat-think").checked;
  const defined = tools();
  if (defined) extras.tools = defined;
  return extras;
}

// Called when the model changes: bound the context by it, show the thinking switch for hybrid models.
export function fitSettingsToModel() {
  const chosen = findModel(model());
  const limit = contextLimit(chosen);
  const input = $("chat-context");
  input.max = limit;
  input.placeholder = String(limit);
  if (parseInt(input.value, 10) > limit) input.value = String(limit);
  const server = chosen && chosen.context_length ? chosen.context_length : limit;
  $("chat-context-hint").textContent = t("context.hint", { model: server, limit });
  $("chat-think-field").hidden = !(chosen && chosen.thinking === "hybrid");
}

export function fillPersonas() {
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

export function initSettings() {
  $("chat-settings-toggle").addEventListener("click", () => { $("chat-settings").hidden = !$("chat-settings").hidden; });
  $("chat-persona").addEventListener("change", () => { $("chat-system").value = PERSONAS[$("chat-persona").value]; });
  ["chat-temperature", "chat-top-p"].forEach((id) => $(id).addEventListener("input", showParams));
  $("chat-context").addEventListener("change", () => {
    const limit = contextLimit(findModel(model()));
    const value = parseInt($("chat-context").value, 10);
    if (value > limit) $("chat-context").value = String(limit);
    if (value && value < 256) $("chat-context").value = "256";
  });
  showParams();
  fillPersonas();
}
