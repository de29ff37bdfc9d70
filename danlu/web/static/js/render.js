// One message on screen: a user's text (plain, never HTML), or a reply with its folded 「思考过程」 block,
// tool-call cards, the answer as sanitised Markdown and a metadata line (tokens, speed, first-token wait,
// how it ended). The metadata is kept as data on the view, so a language switch re-renders it.
import { t } from "./i18n.js";
import { copyButton, renderFinal, renderSoon } from "./markdown.js";

const FINISH_KEYS = { stop: "finish.stop", length: "finish.length", cancelled: "finish.cancelled",
                      tool_calls: "finish.tool_calls", error: "finish.error" };

export function finishText(reason) {
  return reason ? t(FINISH_KEYS[reason] || "finish.other", { reason }) : "";
}

export function speedOf(meta) {
  return meta.tokens > 1 && meta.seconds > 0 ? (meta.tokens - 1) / meta.seconds : null;
}

// "model · 12 tokens · 8.3 tok/s · 首字 1.2 s · 达到长度上限"; `showStop` also names a normal end (the arena).
export function describeMeta(meta, { showStop = false } = {}) {
  const parts = [];
  if (meta.model) parts.push(meta.model);
  if (meta.tokens) parts.push(`${meta.tokens} tokens`);
  const speed = speedOf(meta);
  if (speed) parts.push(`${speed.toFixed(1)} tok/s`);
  if (meta.first_token_s != null) parts.push(`${t("chat.firstToken")} ${meta.first_token_s.toFixed(1)} s`);
  if (meta.finish_reason && (showStop || meta.finish_reason !== "stop")) parts.push(finishText(meta.finish_reason));
  if (meta.interrupted) parts.push(t("chat.interrupted"));
  return parts.join(" · ");
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function prettyArguments(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text || ""; }
}

function toolCard(call) {
  const card = element("div", "tool-card");
  const head = element("div", "tool-head");
  head.append(element("span", "tool-label", t("tool.call")), element("b", "tool-name", call.name || "?"));
  card.append(head, element("pre", "tool-args", prettyArguments(call.arguments)));
  return card;
}

export class MessageView {
  constructor(container, role, { text = "", meta = {}, options = {} } = {}) {
    this.role = role;
    this.text = text;
    this.meta = { ...meta };
    this.options = options;  // {showStop}
    this.saved = false;
    this.waiting = false;
    this.el = element("div", `msg ${role}`);
    this.el.view = this;
    this.thinking = element("details", "thinking");
    this.thinking.hidden = true;
    this.summary = element("summary");
    this.thinkingText = element("div", "thinking-text");
    this.thinking.append(this.summary, this.thinkingText);
    this.summary.addEventListener("click", () => { this.userToggled = true; });
    this.tools = element("div", "tool-calls");
    this.body = element("div", "body");
    this.metaLine = element("div", "meta");
    this.actions = element("div", "actions");
    this.el.append(this.thinking, this.tools, this.body, this.metaLine, this.actions);
    if (role === "assistant") this.actions.append(copyButton(() => this.text, "msg.copy"));
    container.querySelector(".empty")?.remove();
    container.append(this.el);
    this.showText(text, { final: true });
    this.showReasoning(meta.reasoning || "", { final: true });
    this.showToolCalls(meta.tool_calls || []);
    this.refresh();
    container.scrollTop = container.scrollHeight;
  }

  showText(text, { final = false } = {}) {
    this.text = text;
    if (this.role !== "assistant") {
      this.body.textContent = text;
      return;
    }
    if (final) renderFinal(this.body, text); else renderSoon(this.body, text);
    if (text && !this.userToggled && this.thinking.open && !final) this.thinking.open = false;  // answer began: fold
    this.waiting = false;
    this.body.classList.toggle("waiting", false);
  }

  showReasoning(reasoning, { final = false, started = null } = {}) {
    this.meta.reasoning = reasoning || undefined;
    this.thinking.hidden = !reasoning;
    this.thinkingText.textContent = reasoning || "";
    if (reasoning && !final && !this.text && !this.userToggled) this.thinking.open = true;  // watch it think
    if (started) this.thinkingStarted = started;
    this.refreshSummary();
  }

  showToolCalls(calls) {
    this.meta.tool_calls = calls.length ? calls : undefined;
    this.tools.replaceChildren(...calls.map(toolCard));
  }

  // While nothing has come yet: a line that says what is happening.
  wait(key) {
    if (!key && this.waiting) this.body.textContent = "";
    this.waiting = Boolean(key);
    this.waitKey = key;
    this.body.classList.toggle("waiting", this.waiting);
    if (key) this.body.textContent = t(key);
  }

  setMeta(meta) {
    Object.assign(this.meta, meta);
    this.refresh();
  }

  markSaved(saved = true) {
    this.saved = saved;
    this.el.classList.toggle("saved", saved);
    this.refresh();
  }

  refreshSummary() {
    if (this.thinking.hidden) return;
    const m = this.meta;
    const seconds = m.reasoning_s != null ? ` · ${m.reasoning_s.toFixed(1)} s` : "";
    const tokens = m.reasoning_tokens ? ` · ${m.reasoning_tokens} tokens` : "";
    const thinkingNow = this.thinkingStarted && m.reasoning_s == null;
    this.summary.textContent = thinkingNow ? t("thinking.now") : `${t("thinking.title")}${tokens}${seconds}`;
  }

  // Re-render every translated piece (after a language switch, or new metadata).
  refresh() {
    const text = describeMeta(this.meta, this.options);
    this.metaLine.textContent = this.saved && this.role === "assistant" ? `${text}${text ? " · " : ""}${t("chat.saved")} ✓` : text;
    this.el.classList.toggle("interrupted", Boolean(this.meta.interrupted));
    this.refreshSummary();
    if (this.waiting) this.body.textContent = t(this.waitKey);
    this.tools.querySelectorAll(".tool-label").forEach((label) => { label.textContent = t("tool.call"); });
    this.el.querySelectorAll("button[data-i18n]").forEach((b) => { b.textContent = t(b.dataset.i18n); });
  }

  remove() { this.el.remove(); }
}

export function retranslateMessages() {
  document.querySelectorAll(".msg").forEach((el) => el.view?.refresh());
}

export function follow(container) {
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 160;
  if (nearBottom) container.scrollTop = container.scrollHeight;
}

export function emptyNote(container, key) {
  const empty = element("div", "empty", t(key));
  empty.dataset.i18n = key;
  container.replaceChildren(empty);
}
