// A model's reply as Markdown: marked turns it into HTML, DOMPurify keeps only the tags Markdown makes, and
// highlight.js colours code. A reply is untrusted: raw HTML in it is shown as text (never parsed), images
// become links (nothing is fetched), links open in a new tab without the page's context, and whatever marked
// emits is sanitised again before it touches the page. Re-rendered whole on each streamed piece (at most once
// a frame), so an unclosed ``` block already shows as code while it streams.
import { Marked } from "/vendor/marked.esm.js";
import DOMPurify from "/vendor/purify.es.mjs";
import hljs from "/vendor/highlight.min.js";
import { t } from "./i18n.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const TAGS = ["a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "input", "li",
              "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul", "span", "sup", "sub"];
const ATTRS = ["href", "title", "class", "align", "start", "type", "checked", "disabled"];
const SAFE_URL = /^(?:https?:|mailto:|#)/i;

const marked = new Marked({
  gfm: true,
  breaks: true,  // a model's single newlines are line breaks, as in every chat UI
  renderer: {
    html: ({ text }) => escape(text),  // raw HTML in a reply is text, never markup
    image: ({ href, text }) => `<a href="${escape(href || "")}">${escape(text || href || "")}</a>`,
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_URL.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "INPUT") {  // only GFM task-list boxes, which nobody can tick
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

function sanitize(html) {
  return DOMPurify.sanitize(html, { ALLOWED_TAGS: TAGS, ALLOWED_ATTR: ATTRS, RETURN_DOM_FRAGMENT: true });
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard API (an insecure origin): the old way
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

export function copyButton(getText, labelKey = "code.copy") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.dataset.i18n = labelKey;
  button.textContent = t(labelKey);
  button.addEventListener("click", async () => {
    await copyText(getText());
    button.textContent = t("code.copied");
    setTimeout(() => { button.textContent = t(button.dataset.i18n); }, 1500);
  });
  return button;
}

// Each <pre><code class="language-x"> becomes a block with a header (language, copy) and highlighted code.
function decorateCode(root) {
  root.querySelectorAll("pre > code").forEach((code) => {
    const pre = code.parentElement;
    const lang = ((code.className.match(/language-([\w+#.-]+)/) || [])[1] || "").toLowerCase();
    const source = code.textContent;
    if (lang && hljs.getLanguage(lang)) {
      code.innerHTML = hljs.highlight(source, { language: lang, ignoreIllegals: true }).value;  // hljs escapes
      code.classList.add("hljs");
    }
    const head = document.createElement("div");
    head.className = "code-head";
    const label = document.createElement("span");
    label.className = "code-lang";
    label.textContent = lang || "text";
    head.append(label, copyButton(() => source));
    const block = document.createElement("div");
    block.className = "codeblock";
    pre.replaceWith(block);
    block.append(head, pre);
  });
}

export function renderMarkdown(element, text) {
  const fragment = sanitize(marked.parse(text || ""));
  decorateCode(fragment);
  element.replaceChildren(fragment);
  element.classList.add("markdown");
}

// Streaming: render at most once per animation frame, always the latest text.
const pending = new Map();

export function renderSoon(element, text) {
  const queued = pending.has(element);
  pending.set(element, text);
  if (queued) return;
  requestAnimationFrame(() => {
    if (!pending.has(element)) return;  // renderFinal came first
    const latest = pending.get(element);
    pending.delete(element);
    renderMarkdown(element, latest);
  });
}

// Render now (the stream ended): drops any frame still queued for the element.
export function renderFinal(element, text) {
  pending.delete(element);
  renderMarkdown(element, text);
}
