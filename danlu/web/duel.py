"""One battle turn: the same messages go to two models at once, and their two streams become one.

Each side is an ordinary chat call through the server's service (admission, loading on first use, batching,
sampling resolution, context checks, thinking split from the answer), started together so both decode at
the same time. The turn is answered only once both sides have their first event, so a model that cannot load
or a prompt that does not fit is a 4xx rather than a broken stream. The merged stream is Server-Sent Events:

    data: {"side": "a", "delta": "…"}                    a piece of the left model's reply
    data: {"side": "a", "delta": "", "reasoning": "…"}   a piece of its thinking (shown folded)
    data: {"side": "b", "finish_reason": "stop", "completion_tokens": 12, "reasoning_tokens": 0}
    data: {"side": "a", "error": "…"}                    that side failed mid-way (the turn is not saved)
    data: {"saved": true, "n_turns": 2}                  both finished; the turn is in the database
    data: [DONE]
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from fastapi import Request

from danlu.server.calls import ChatCall, Piece
from danlu.server.errors import ApiError
from danlu.server.generation import Generation

log = logging.getLogger(__name__)
SETTINGS = ("temperature", "top_p")  # what a battle's settings pass as sampling (max_tokens apart)


@dataclass
class Side:
    """One model's half of a turn: its running generation, and what it has said so far."""

    name: str  # 'a' or 'b'
    generation: Generation
    model_key: str
    parts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_at: float | None = None  # when its first piece (thinking or answer) came
    finished_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def thinking(self) -> str:
        return "".join(self.reasoning)

    def close(self) -> None:
        self.generation.close()

    def meta(self) -> dict:
        """What is stored beside the reply: tokens, thinking and its tokens, first-token wait, decoding seconds."""
        first, end = self.first_at or self.started, self.finished_at or time.monotonic()
        meta = {"tokens": self.tokens, "finish_reason": self.finish_reason, "first_token_s": round(first - self.started, 3),
                "seconds": round(end - first, 3)}
        if self.thinking:
            meta |= {"reasoning": self.thinking, "reasoning_tokens": self.reasoning_tokens}
        return meta


async def open_side(request: Request, name: str, model: str, messages: list[dict], settings: dict) -> Side:
    """Admit, load if needed, render and start one side, as any chat completion; errors raise ApiError."""
    call = ChatCall(model=model, messages=messages, sampling={k: settings[k] for k in SETTINGS if k in settings},
                    max_tokens=settings.get("max_tokens"))
    generation = await request.app.state.service.chat(call, request)
    return Side(name, generation, generation.job.served.key)


async def open_both(request: Request, openers: list[Awaitable[Side]]) -> list[Side]:
    """Start every side together; if one fails, close the others and raise its error."""
    results = await asyncio.gather(*openers, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for side in results:
            if isinstance(side, Side):
                side.close()
        raise failures[0]
    return list(results)


async def merged(sides: list[Side]) -> AsyncIterator[tuple[Side, Piece | Exception]]:
    """Both sides' pieces as they come (or the error that ended a side); one side finishing does not wait."""
    queue: asyncio.Queue[tuple[Side, Piece | Exception | None]] = asyncio.Queue()

    async def pump(side: Side) -> None:
        try:
            async for piece in side.generation.pieces():
                await queue.put((side, piece))
        except Exception as exc:  # noqa: BLE001 — reported on that side only, names hidden by the caller
            await queue.put((side, exc))
        await queue.put((side, None))

    tasks = [asyncio.ensure_future(pump(side)) for side in sides]
    try:
        running = len(sides)
        while running:
            side, item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield side, item
    finally:
        for task in tasks:
            task.cancel()


def _failure(error: Exception, hide: Callable[[str], str]) -> str:
    """What the page may read of a side's failure: an ApiError's message with names masked, nothing else."""
    if isinstance(error, ApiError):
        return hide(error.message)
    log.error("battle side failed: %r", error)
    return "生成失败（服务器日志有详情）/ generation failed (details in the server log)"


def _record(side: Side, item: Piece | Exception, hide: Callable[[str], str]) -> dict:
    """Update the side with one piece; the SSE payload describing it."""
    if isinstance(item, Exception):
        side.error = _failure(item, hide)
        return {"side": side.name, "error": side.error}
    if side.first_at is None and (item.content or item.reasoning):
        side.first_at = time.monotonic()
    side.parts.append(item.content)
    side.reasoning.append(item.reasoning)
    payload = {"side": side.name, "delta": item.content}
    if item.reasoning:
        payload["reasoning"] = item.reasoning
    if item.finish_reason:
        usage = item.usage
        side.finish_reason = item.finish_reason
        side.finished_at = time.monotonic()
        side.tokens = usage.completion_tokens if usage else side.tokens
        side.reasoning_tokens = usage.reasoning_tokens if usage else 0
        payload |= {"finish_reason": side.finish_reason, "completion_tokens": side.tokens,
                    "reasoning_tokens": side.reasoning_tokens}
    return payload


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


async def duel_stream(sides: list[Side], save: Callable[[list[Side]], int], hide: Callable[[str], str],
                      on_close: Callable[[], None]) -> AsyncIterator[str]:
    """The merged SSE stream; `save` stores the turn (returning the turn count) when every side finished;
    `on_close` runs however the stream ends."""
    try:
        async for side, item in merged(sides):
            yield sse(_record(side, item, hide))
        finished = all(s.error is None and s.finish_reason not in (None, "cancelled") for s in sides)
        yield sse({"saved": True, "n_turns": save(sides)} if finished else {"saved": False})
        yield sse("[DONE]")
    finally:
        for side in sides:
            side.close()
        on_close()


def hidden_error(error: ApiError, hide: Callable[[str], str]) -> ApiError:
    """The same error with the model names masked (an anonymous battle must not leak them)."""
    return error.with_message(hide(error.message))
