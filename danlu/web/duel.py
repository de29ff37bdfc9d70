"""One battle turn: the same messages go to two models at once, and their two streams become one.

Each side is an ordinary chat completion inside the server (the scheduler's admission, loading on first use,
batching, sampling resolution and context checks of routes.py), started together so both decode at the same
time. The turn is answered only once both sides have their first event, so a model that cannot load or a
prompt that does not fit is a 4xx rather than a broken stream. The merged stream is Server-Sent Events:

    data: {"side": "a", "delta": "…"}                    a piece of the left model's reply
    data: {"side": "b", "finish_reason": "stop", "completion_tokens": 12}
    data: {"side": "a", "error": "…"}                    that side failed mid-way (the turn is not saved)
    data: {"saved": true, "n_turns": 2}                  both finished; the turn is in the database
    data: [DONE]
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from fastapi import Request

from danlu.backends.requests import Event
from danlu.server.protocol import ApiError, ChatCompletionRequest
from danlu.server.routes import Job, api_error, fitted_params, options_for, until_disconnect


@dataclass
class Side:
    """One model's half of a turn: its running job, the first event, and what it has said so far."""

    name: str  # 'a' or 'b'
    job: Job
    first: Event
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def open_side(request: Request, name: str, model: str, messages: list[dict], settings: dict) -> Side:
    """Admit, load if needed, tokenize and start one side; wait for its first event (errors raise ApiError)."""
    body = ChatCompletionRequest.model_validate({"model": model, "messages": messages, "stream": True, **settings})
    job = await Job.open(request, model)
    try:
        ids = job.prompt(lambda: job.served.chat_ids([m.as_dict() for m in body.messages]))
        params = fitted_params(body, job, ids, "messages", job.served.model_stops)
        job.start(ids, params, options_for(body, job.served, None))
        first = await until_disconnect(job.events.get(), request)
        if first.error:
            raise api_error(first.error)
        return Side(name, job, first)
    except BaseException:
        job.close()
        raise


async def open_both(request: Request, openers: list[Awaitable[Side]]) -> list[Side]:
    """Start every side together; if one fails, close the others and raise its error."""
    results = await asyncio.gather(*openers, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for side in results:
            if isinstance(side, Side):
                side.job.close()
        raise failures[0]
    return list(results)


async def _side_events(side: Side) -> AsyncIterator[Event]:
    event = side.first
    while True:
        yield event
        if event.error or event.chunk.finish_reason:
            return
        event = await side.job.events.get()


async def merged(sides: list[Side]) -> AsyncIterator[tuple[Side, Event]]:
    """Both sides' events as they come; one side finishing does not wait for the other."""
    queue: asyncio.Queue[tuple[Side, Event | None]] = asyncio.Queue()

    async def pump(side: Side) -> None:
        async for event in _side_events(side):
            await queue.put((side, event))
        await queue.put((side, None))

    tasks = [asyncio.ensure_future(pump(side)) for side in sides]
    try:
        running = len(sides)
        while running:
            side, event = await queue.get()
            if event is None:
                running -= 1
            else:
                yield side, event
    finally:
        for task in tasks:
            task.cancel()


def _record(side: Side, event: Event, hide: Callable[[str], str]) -> dict:
    """Update the side with one event; the SSE payload describing it."""
    if event.error:
        side.error = hide(api_error(event.error).detail.message)
        return {"side": side.name, "error": side.error}
    side.parts.append(event.chunk.text)
    side.tokens += len(event.chunk.token_ids)
    if event.chunk.finish_reason:
        side.finish_reason = event.chunk.finish_reason
        return {"side": side.name, "delta": event.chunk.text, "finish_reason": side.finish_reason,
                "completion_tokens": side.tokens}
    return {"side": side.name, "delta": event.chunk.text}


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


async def duel_stream(sides: list[Side], save: Callable[[list[Side]], int], hide: Callable[[str], str],
                      on_close: Callable[[], None]) -> AsyncIterator[str]:
    """The merged SSE stream; `save` stores the turn (returning the turn count) when every side finished;
    `on_close` runs however the stream ends."""
    try:
        async for side, event in merged(sides):
            yield sse(_record(side, event, hide))
        finished = all(s.error is None and s.finish_reason not in (None, "cancelled") for s in sides)
        yield sse({"saved": True, "n_turns": save(sides)} if finished else {"saved": False})
        yield sse("[DONE]")
    finally:
        for side in sides:
            side.job.close()
        on_close()


def hidden_error(error: ApiError, hide: Callable[[str], str]) -> ApiError:
    """The same error with the model names masked (an anonymous battle must not leak them)."""
    detail = error.detail
    return ApiError(error.status, hide(detail.message), type=detail.type, param=detail.param, code=detail.code,
                    headers=error.headers)
