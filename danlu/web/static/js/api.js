// Talking to the server: JSON and Server-Sent Events, with the API key (if any) as a Bearer token.
// The key lives in this browser only (localStorage); a 401 asks for it.
import { t } from "./i18n.js";

const KEY_STORAGE = "danlu.apiKey";
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function apiKey() { return localStorage.getItem(KEY_STORAGE) || ""; }

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
}

export function whenUnauthorized(callback) { onUnauthorized = callback; }

function headers(withBody) {
  const result = withBody ? { "Content-Type": "application/json" } : {};
  if (apiKey()) result.Authorization = `Bearer ${apiKey()}`;
  return result;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = (body.error && body.error.message) || body.detail || message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) onUnauthorized();
  return new ApiError(response.status, message);
}

export async function request(method, path, body, signal) {
  let response;
  try {
    response = await fetch(path, { method, headers: headers(body !== undefined), signal,
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, t("error.network") + error.message);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path) { return (await request("GET", path)).json(); }

export async function sendJSON(method, path, body) { return (await request(method, path, body)).json(); }

// Yields each `data:` payload of an SSE response, parsed as JSON, until `[DONE]`.
export async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}
