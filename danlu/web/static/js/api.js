// Talking to the server: JSON, Server-Sent Events and NDJSON, with the API key (if any) as a Bearer token.
// The key lives in this browser only (localStorage); a 401 asks for it. When the server cannot be reached the
// page goes "offline": every view shows it, and /health is polled until the server answers again.
import { t } from "./i18n.js";

const KEY_STORAGE = "danlu.apiKey";
const RETRY_MS = [1000, 2000, 3000, 5000];  // then every 5 s
let onUnauthorized = () => {};
let offline = false;
let retryTimer = null;

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// The server went away (refused, reset, or a stream cut before its end).
export class ConnectionLost extends ApiError {
  constructor() { super(0, t("error.offline")); this.name = "ConnectionLost"; }
}

export function apiKey() { return localStorage.getItem(KEY_STORAGE) || ""; }

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
}

export function whenUnauthorized(callback) { onUnauthorized = callback; }

export function isOffline() { return offline; }

function announce(name) { document.dispatchEvent(new CustomEvent(name)); }

export function wentOffline() {
  if (!offline) {
    offline = true;
    announce("danlu:offline");
  }
  if (!retryTimer) scheduleProbe(0);
}

function scheduleProbe(attempt) {
  retryTimer = setTimeout(() => probe(attempt), RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
}

async function probe(attempt) {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    if (response.ok) {
      retryTimer = null;
      offline = false;
      announce("danlu:online");
      return;
    }
  } catch (_) { /* still down */ }
  scheduleProbe(attempt + 1);
}

// Try now (the notice's retry button), without waiting for the next probe.
export function probeNow() {
  clearTimeout(retryTimer);
  probe(0);
}

function headers(withBody) {
  const result = withBody ? { "Content-Type": "application/json" } : {};
  if (apiKey()) result.Authorization = `Bearer ${apiKey()}`;
  return result;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = (body.error && (body.error.message || body.error)) || body.detail || message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) onUnauthorized();
  return new ApiError(response.status, typeof message === "string" ? message : JSON.stringify(message));
}

export async function request(method, path, body, signal, options = {}) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(body !== undefined), signal, ...options,
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    wentOffline();
    throw new ConnectionLost();
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path) { return (await request("GET", path)).json(); }

export async function sendJSON(method, path, body) {
  const response = await request(method, path, body);
  return response.status === 204 ? null : response.json();
}

// The body's text lines as they arrive; a connection cut before the end is ConnectionLost.
async function* lines(response, separator) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      wentOffline();
      throw new ConnectionLost();
    }
    if (chunk.done) {
      if (buffer.trim()) yield buffer;
      return;
    }
    buffer += decoder.decode(chunk.value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf(separator)) >= 0) {
      yield buffer.slice(0, cut);
      buffer = buffer.slice(cut + separator.length);
    }
  }
}

// Yields each `data:` payload of an SSE response, parsed as JSON, until `[DONE]` (a stream that ends without
// it was cut: ConnectionLost).
export async function* sseEvents(response) {
  for await (const block of lines(response, "\n\n")) {
    const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
    if (data === "[DONE]") return;
    if (data) yield JSON.parse(data);
  }
  wentOffline();
  throw new ConnectionLost();
}

// Yields each line of an NDJSON response (Ollama's /api/pull), parsed.
export async function* ndjson(response) {
  for await (const line of lines(response, "\n")) {
    if (line.trim()) yield JSON.parse(line);
  }
}
