"""One request's generation, from admission to the last piece: the room every protocol shares after its own.

- `Job`: a request's hold on a served model. Admission (and loading on first use) when it opens; each engine
  submission streams into an `AsyncEvents`; closing cancels the work and gives the model back only once the
  engine has stopped working for it, so eviction never closes an engine mid-generation and the memory budget
  never forgets memory still in use.
- `OutputParsing`: the parsers a reply goes through, thinking first (danlu/outputs/reasoning.py), then tool
  calls in what remains (danlu/outputs/tool_calls.py).
- `Generation`: the parsed pieces of one reply. It is answered only once its first event arrives (the first
  token, or an error), so a prompt the model rejects still gets a 4xx rather than a broken stream. A client
  that leaves while waiting, or mid-stream, cancels the request and frees its slot at once. A thinking budget
  is kept here for every engine alike: once spent, the request is cancelled and continued from the same tokens
  plus the text that closes the think block (the prefix cache makes that continuation nearly free).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Awaitable, TypeVar

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

from danlu.backends.base import Chunk, GenerationParams
from danlu.backends.requests import Event, SubmitOptions
from danlu.server.calls import Piece, Reply, ToolCall, Usage
from danlu.server.errors import api_error
from danlu.server.runners import AsyncEvents

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class Job:
    """A request's hold on one served model; `close()` exactly once, however the request ends."""

    def __init__(self, scheduler: Any, served: Any):
        self.scheduler, self.served = scheduler, served
        self.started = time.monotonic()
        self.handle = None
        self.keep_alive_s: float | None = None  # how long the model stays loaded after this request
        self.load_s = 0.0
        self._closed = False

    @classmethod
    async def open(cls, scheduler: Any, model: str, purpose: str = "generate") -> "Job":
        """Admission and, on first use, loading; not cancelled by a disconnect (the next caller wants the model)."""
        began = time.perf_counter()
        job = cls(scheduler, await scheduler.acquire(model, purpose))
        job.load_s = time.perf_counter() - began  # loading on first use, else the admission's few microseconds
        return job

    def submit(self, ids: list[int], params: GenerationParams, options: SubmitOptions) -> AsyncEvents:
        """Start (or, for a continuation, restart) the engine's work; its events arrive on the returned queue."""
        if self.handle is not None:
            self.handle.cancel()
        events = AsyncEvents()
        self.handle = self.served.runner.submit(ids, params, events, options)
        return events

    def close(self) -> None:
        """Cancel the work (a no-op once it has finished) and release the model when the engine lets go of it."""
        if self._closed:
            return
        self._closed = True
        duration = time.monotonic() - self.started
        release = (self.scheduler.release, self.served, duration, self.keep_alive_s)
        if self.handle is None:
            release[0](*release[1:])
            return
        self.handle.cancel()
        loop = asyncio.get_running_loop()
        self.handle.when_done(lambda: loop.call_soon_threadsafe(*release))


async def until_disconnect(awaitable: Awaitable[T], request: Request | None) -> T:
    """Await `awaitable` unless the client disconnects first (then cancel it and raise ClientGone)."""
    if request is None:
        return await awaitable
    work, watcher = asyncio.ensure_future(awaitable), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        return work.result()
    raise ClientGone()


async def respond(request: Request, generation: "Generation", lines: AsyncIterator[str] | None, shape: Any,
                  media_type: str, headers: dict | None = None):
    """A protocol's answer: its streamed `lines`, or `shape(reply)` of the whole reply; closed either way."""
    if lines is not None:
        return StreamingResponse(lines, media_type=media_type, headers=headers, background=BackgroundTask(generation.close))
    try:
        return shape(await until_disconnect(generation.reply(), request))
    finally:
        generation.close()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class OutputParsing:
    """Thinking, then tool calls: each text piece of the reply is split into reasoning, content and calls."""

    def __init__(self, reasoning: Any = None, tools: Any = None):
        self.reasoning, self.tools = reasoning, tools

    @property
    def in_reasoning(self) -> bool:
        return bool(self.reasoning is not None and self.reasoning.in_reasoning)

    def feed(self, text: str) -> Piece:
        if self.reasoning is None:
            return self._content(text)
        split = self.reasoning.feed(text)
        piece = self._content(split.content)
        piece.reasoning = split.reasoning
        return piece

    def flush(self) -> Piece:
        reasoning = ""
        content = ""
        if self.reasoning is not None:
            split = self.reasoning.flush()
            reasoning, content = split.reasoning, split.content
        piece = self._content(content)
        if self.tools is not None:
            tail = self.tools.flush()
            piece.content += tail.content
            piece.tool_calls += tail.calls
        piece.reasoning = reasoning
        return piece

    def _content(self, text: str) -> Piece:
        if self.tools is None or not text:
            return Piece(content=text)
        parsed = self.tools.feed(text)
        return Piece(content=parsed.content, tool_calls=list(parsed.calls))

    def calls(self) -> list[ToolCall]:
        return list(self.tools.calls) if self.tools is not None else []

    def closing_text(self) -> str:
        return getattr(self.reasoning, "closing_text", "")


@dataclass
class Budget:
    """Thinking tokens allowed before the think block is closed for the model (llama-server's reasoning budget)."""

    tokens: int
    used: int = 0
    spent: bool = False


class Generation:
    """The pieces of one reply; `start()` first (it raises the request's error as an ApiError)."""

    def __init__(self, job: Job, ids: list[int], params: GenerationParams, options: SubmitOptions,
                 parsing: OutputParsing, budget: int | None = None, request: Request | None = None):
        self.job, self.ids, self.params, self.options = job, ids, params, options
        self.parsing, self.request = parsing, request
        self.budget = Budget(budget) if budget is not None else None
        self.out_ids: list[int] = []
        self.usage = Usage()
        self._events: AsyncEvents | None = None
        self._first: Event | None = None
        self._began = time.perf_counter()
        self._carried = 0  # tokens of earlier submissions (a continuation after the thinking budget)

    async def start(self) -> "Generation":
        self._events = self.job.submit(self.ids, self.params, self.options)
        self._first = await until_disconnect(self._events.get(), self.request)
        self.usage.ttft_s = time.perf_counter() - self._began
        if self._first.error:
            raise api_error(self._first.error)
        return self

    async def pieces(self) -> AsyncIterator[Piece]:
        """Parsed pieces until the reply ends; the last one carries the finish reason and usage."""
        async for event in self._events_until_end():
            if event.error:
                raise api_error(event.error)
            piece = self._parse(event)
            if event.chunk.finish_reason:
                yield self._last(piece, event.chunk)
                return
            if not piece.empty:
                yield piece

    async def reply(self) -> Reply:
        """The whole reply (non-streamed requests)."""
        content, reasoning, logprobs, last = [], [], [], Piece()
        async for piece in self.pieces():
            content.append(piece.content)
            reasoning.append(piece.reasoning)
            logprobs.extend(piece.logprobs)
            last = piece
        return Reply("".join(content), "".join(reasoning), self.parsing.calls(), last.finish_reason or "stop",
                     last.usage or self.usage, logprobs)

    def close(self) -> None:
        self.job.close()

    # --- internals --------------------------------------------------------------------------
    async def _events_until_end(self) -> AsyncIterator[Event]:
        event = self._first
        while True:
            yield event
            if event.error or event.chunk.finish_reason:
                return
            if self._over_budget():
                await self._close_thinking()
            event = await self._events.get()  # a streaming response watches the client itself; reply()'s caller too

    def _parse(self, event: Event) -> Piece:
        chunk = event.chunk
        self.out_ids.extend(chunk.token_ids)
        was_thinking = self.parsing.in_reasoning
        piece = self.parsing.feed(chunk.text)
        if self.budget is not None and (was_thinking or piece.reasoning):
            self.budget.used += len(chunk.token_ids)
        if piece.reasoning:
            self.usage.reasoning_tokens += len(chunk.token_ids)
        piece.logprobs = event.logprobs
        return piece

    def _over_budget(self) -> bool:
        budget = self.budget
        return budget is not None and not budget.spent and budget.used >= budget.tokens and self.parsing.in_reasoning

    async def _close_thinking(self) -> None:
        """Cancel, then continue from the same tokens plus the text that ends the think block."""
        self.budget.spent = True
        closing = self.parsing.closing_text()
        closing_ids = self.job.served.engine.tokenize(closing, special=True)
        ids = self.ids + self.out_ids + closing_ids
        room = self.params.max_tokens - len(self.out_ids) - len(closing_ids)
        if room <= 0 or len(ids) >= self.job.served.n_ctx:
            return  # no room to answer: the reply ends where the budget did (finish_reason "length")
        self._carried = len(self.out_ids) + len(closing_ids)
        self._events = self.job.submit(ids, replace(self.params, max_tokens=room), self.options)
        self.parsing.feed(closing)  # the model now answers outside its thinking

    def _last(self, piece: Piece, chunk: Chunk) -> Piece:
        """The final piece: what the parsers still held, the finish reason, the usage."""
        tail = self.parsing.flush()
        piece.content += tail.content
        piece.reasoning += tail.reasoning
        piece.tool_calls += tail.tool_calls
        calls = self.parsing.calls()
        piece.finish_reason = "tool_calls" if calls else ("length" if chunk.finish_reason == "length" else "stop")
        piece.usage = self._final(chunk)
        return piece

    def _final(self, chunk: Chunk) -> Usage:
        usage, timings = self.usage, chunk.timings
        usage.prompt_tokens = len(self.ids)
        if timings is not None:
            usage.cached_tokens = min(timings.cached_tokens, len(self.ids))
            usage.completion_tokens = self._carried + timings.completion_tokens
            usage.prompt_tps, usage.decode_tps = timings.prompt_tps, timings.decode_tps
        else:
            usage.completion_tokens = self._carried + len(self.out_ids)
        usage.total_s = time.perf_counter() - self._began
        return usage
