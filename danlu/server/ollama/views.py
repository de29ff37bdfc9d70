"""Ollama's answers to /api/chat and /api/generate, streamed as NDJSON lines or whole, from danlu's pieces.

Each streamed line is `{"model", "created_at", "message": {...}, "done": false}` (generate: `"response"`),
thinking under `thinking`, tool calls whole with their arguments as objects (Ollama sends them parsed), and
the last line says `"done": true` with `done_reason` and the timings in nanoseconds: `total_duration`,
`load_duration`, `prompt_eval_count` (the prompt tokens evaluated, the cached prefix not counted) with
`prompt_eval_duration` (time to the first token), `eval_count` with `eval_duration` (decoding).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from danlu.server.calls import Piece, Reply, ToolCall, Usage

NS = 1_000_000_000


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def timing_fields(usage: Usage, load_s: float) -> dict:
    decode_s = max(usage.total_s - usage.ttft_s, 0.0)
    return {"total_duration": int((usage.total_s + load_s) * NS), "load_duration": int(load_s * NS),
            "prompt_eval_count": max(usage.prompt_tokens - usage.cached_tokens, 0),
            "prompt_eval_duration": int(usage.ttft_s * NS), "eval_count": usage.completion_tokens,
            "eval_duration": int(decode_s * NS)}


def tool_call_out(call: ToolCall) -> dict:
    try:
        arguments = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        arguments = {}
    return {"function": {"name": call.name, "arguments": arguments}}


def done_reason(finish: str) -> str:
    return "length" if finish == "length" else "stop"


class OllamaView:
    """Lines of one answer; `chat` decides between `message` (chat) and `response` (generate)."""

    def __init__(self, model: str, chat: bool, load_s: float = 0.0):
        self.model, self.chat, self.load_s = model, chat, load_s
        self.began = time.perf_counter()

    def _head(self) -> dict:
        return {"model": self.model, "created_at": created_at()}

    def _body(self, content: str, thinking: str, calls: list[ToolCall]) -> dict:
        if not self.chat:
            body: dict = {"response": content}
            if thinking:
                body["thinking"] = thinking
            return body
        message: dict = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = [tool_call_out(c) for c in calls]
        return {"message": message}

    def line(self, piece: Piece) -> str | None:
        """A streamed line for a piece (tool calls go out whole, at the end)."""
        if not (piece.content or piece.reasoning):
            return None
        return json.dumps({**self._head(), **self._body(piece.content, piece.reasoning, []), "done": False},
                          ensure_ascii=False)

    def last_lines(self, piece: Piece, calls: list[ToolCall]) -> list[str]:
        lines = [line for line in [self.line(piece)] if line]
        if calls:
            lines.append(json.dumps({**self._head(), **self._body("", "", calls), "done": False}, ensure_ascii=False))
        final = {**self._head(), **self._body("", "", []), "done": True,
                 "done_reason": done_reason(piece.finish_reason or "stop"),
                 **timing_fields(piece.usage or Usage(), self.load_s)}
        return lines + [json.dumps(final, ensure_ascii=False)]

    def whole(self, reply: Reply) -> dict:
        return {**self._head(), **self._body(reply.content, reply.reasoning, reply.tool_calls), "done": True,
                "done_reason": done_reason(reply.finish_reason), **timing_fields(reply.usage, self.load_s)}
