// One streamed chat completion, read into a reply: answer text, thinking (`reasoning_content`, or `reasoning`
// from servers that only send that name; danlu sends both with the same text), tool calls assembled from their
// pieces, usage, how it ended and when each part arrived. A connection that breaks before the end throws
// ConnectionLost with the reply so far, so the page can keep it.
import { ApiError, ConnectionLost, request, sseEvents } from "./api.js";

export function newReply() {
  return { text: "", reasoning: "", toolCalls: [], usage: null, finish: null, started: performance.now(),
           firstAt: null, reasoningAt: null, reasoningEnd: null, endedAt: null };
}

function addToolPieces(reply, pieces) {
  for (const piece of pieces) {
    const index = piece.index ?? reply.toolCalls.length;
    const call = reply.toolCalls[index] || (reply.toolCalls[index] = { id: null, name: "", arguments: "" });
    if (piece.id) call.id = piece.id;
    if (piece.function?.name) call.name += piece.function.name;
    if (piece.function?.arguments) call.arguments += piece.function.arguments;
  }
}

function apply(reply, event) {
  if (event.error) throw new ApiError(500, event.error.message || String(event.error));
  if (event.usage) reply.usage = event.usage;
  const choice = event.choices && event.choices[0];
  if (!choice) return false;
  const delta = choice.delta || {};
  const now = performance.now();
  const thought = delta.reasoning_content ?? delta.reasoning;
  if (thought) {
    reply.reasoningAt = reply.reasoningAt || now;
    reply.firstAt = reply.firstAt || now;
    reply.reasoning += thought;
  }
  if (delta.content) {
    reply.firstAt = reply.firstAt || now;
    if (reply.reasoningAt && !reply.reasoningEnd) reply.reasoningEnd = now;
    reply.text += delta.content;
  }
  if (delta.tool_calls) addToolPieces(reply, delta.tool_calls);
  if (choice.finish_reason) reply.finish = choice.finish_reason;
  return Boolean(thought || delta.content || delta.tool_calls);
}

// Streams `body` to /v1/chat/completions; `onUpdate(reply)` after each piece. Stop (abort) ends it as "cancelled".
export async function streamChat(body, signal, onUpdate) {
  const reply = newReply();
  try {
    const response = await request("POST", "/v1/chat/completions", body, signal);
    for await (const event of sseEvents(response)) {
      if (apply(reply, event)) onUpdate(reply);
    }
  } catch (error) {
    if (error.name === "AbortError") reply.finish = "cancelled";
    else if (error instanceof ConnectionLost) throw Object.assign(error, { reply: finish(reply) });
    else throw error;
  }
  return finish(reply);
}

function finish(reply) {
  reply.endedAt = performance.now();
  if (reply.reasoningAt && !reply.reasoningEnd) reply.reasoningEnd = reply.endedAt;
  return reply;
}

// What is stored with the reply (and shown under it).
export function replyMeta(reply, model) {
  const first = reply.firstAt || reply.endedAt;
  const meta = { model, first_token_s: round((first - reply.started) / 1000),
                 seconds: round((reply.endedAt - first) / 1000), finish_reason: reply.finish || undefined };
  const usage = reply.usage;
  if (usage) meta.tokens = usage.completion_tokens;
  if (reply.reasoning) {
    meta.reasoning = reply.reasoning;
    meta.reasoning_s = round((reply.reasoningEnd - reply.reasoningAt) / 1000);
    const details = usage && usage.completion_tokens_details;
    if (details && details.reasoning_tokens) meta.reasoning_tokens = details.reasoning_tokens;
  }
  if (reply.toolCalls.length) meta.tool_calls = reply.toolCalls.map((c) => ({ id: c.id, name: c.name, arguments: c.arguments }));
  return meta;
}

const round = (x) => Math.max(0, Math.round(x * 1000) / 1000);
