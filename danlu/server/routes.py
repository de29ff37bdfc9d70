"""The endpoints: /v1/chat/completions, /v1/completions, /v1/models, /health, /api/ps. Thin: validation is
in protocol.py, loading and queues in scheduler.py, the plumbing of one generation in `Job`.

A generation is answered only once its first event arrives (the first token, or an error), so a prompt
the model rejects still gets a 4xx rather than a broken stream; a client that leaves while waiting, or
mid-stream, cancels the request and frees its slot at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Awaitable, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from danlu.backends.base import GenerationParams
from danlu.backends.requests import EngineFault, Event, Overloaded, SubmitOptions
from danlu.errors import DanluError
from danlu.server.protocol import (
    ApiError,
    ChatCompletionRequest,
    ChatView,
    CompletionRequest,
    CompletionView,
    ErrorResponse,
    ModelCard,
    ModelList,
    SamplingRequest,
    View,
    new_id,
)
from danlu.server.runners import AsyncEvents, ThreadRunner
from danlu.server.scheduler import ModelScheduler, ServedModel
from danlu.server.security import require_api_key

T = TypeVar("T")
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 503)}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter(dependencies=[Depends(require_api_key)])


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


def scheduler_of(request: Request) -> ModelScheduler:
    return request.app.state.scheduler


# ---------------------------------------------------------------- endpoints


@router.get("/health")
async def health(request: Request) -> dict:
    return {"status": "ok", "models_loaded": list(scheduler_of(request).loaded)}


@router.get("/api/ps", responses=ERRORS)
async def ps(request: Request) -> dict:
    """Loaded models, their predicted memory, requests in flight and when they unload (as Ollama's /api/ps)."""
    scheduler = scheduler_of(request)
    return {"models": [_ps_row(scheduler, m) for m in scheduler.loaded.values()],
            "memory_budget_bytes": scheduler.budget_bytes, "memory_used_bytes": scheduler.used_bytes()}


def _ps_row(scheduler: ModelScheduler, served: ServedModel) -> dict:
    expires = scheduler.expires_in(served)
    return {"name": served.key, "backend": served.resolved.backend, "size": served.size_bytes, "n_ctx": served.n_ctx,
            "in_flight": served.in_flight, "expires_in_s": None if expires is None else round(expires, 1),
            "expires_at": None if expires is None else _iso(time.time() + expires), **served.runner.load_info()}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    names = await asyncio.to_thread(scheduler_of(request).served_names)
    return ModelList(data=[ModelCard(id=name) for name in names])


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    scheduler_of(request).resolve(model_id)  # 404 when unknown
    return ModelCard(id=model_id)


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    _refuse(body.unsupported())
    job = await Job.open(request, body.model)
    try:
        ids = job.prompt(lambda: job.served.chat_ids([m.as_dict() for m in body.messages]))
        params = fitted_params(body, job, ids, "messages", job.served.model_stops)
        job.start(ids, params, options_for(body, job.served, body.top_logprobs or 0 if body.logprobs else None))
        view = ChatView(job.id, body.model, body.stream_options, body.logprobs)
        return await job.answer(request, view, body.stream)
    except BaseException:
        job.close()
        raise


@router.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, request: Request):
    _refuse(body.unsupported())
    job = await Job.open(request, body.model)
    try:
        prompt = body.prompt_value()
        ids = job.prompt(lambda: job.served.text_ids(prompt) if isinstance(prompt, str) else _token_prompt(prompt, job))
        params = fitted_params(body, job, ids, "prompt")
        job.start(ids, params, options_for(body, job.served, body.logprobs))
        echo = (prompt if isinstance(prompt, str) else job.served.engine.detokenize(ids).decode("utf-8", "replace"))
        view = CompletionView(job.id, body.model, body.stream_options, body.logprobs is not None,
                              echo if body.echo else "")
        return await job.answer(request, view, body.stream)
    except BaseException:
        job.close()
        raise


def _refuse(problem: tuple[str, str] | None) -> None:
    if problem:
        raise ApiError(400, problem[1], param=problem[0], code="unsupported_parameter")


def _token_prompt(prompt: list[int], job: "Job") -> list[int]:
    if isinstance(job.served.runner, ThreadRunner):
        raise DanluError("这个模型只接受文本提示 / this model takes text prompts only, not token ids")
    n_vocab = job.served.engine.n_vocab
    if any(not 0 <= t < n_vocab for t in prompt):
        raise DanluError(f"token id 必须在 [0, {n_vocab}) 内 / token ids in `prompt` must be in [0, {n_vocab})")
    return list(prompt)


# ---------------------------------------------------------------- request settings


def fitted_params(body: SamplingRequest, job: "Job", ids: list[int], param: str,
                  extra_stops: tuple[str, ...] = ()) -> GenerationParams:
    """The sampling settings (user > server > model), max_tokens checked against what the context has left."""
    served = job.served
    n_ctx, asked = served.n_ctx, body.explicit_max_tokens()
    room = n_ctx - len(ids)
    if room <= 0:
        raise ApiError(400, f"提示有 {len(ids)} 个 token，上下文只有 {n_ctx}：请缩短 / the prompt is {len(ids)} tokens but "
                       f"the context is {n_ctx}: shorten the {param}", param=param, code="context_length_exceeded")
    if asked and asked > room:
        raise ApiError(400, f"max_tokens={asked} 加上提示的 {len(ids)} 个 token 超过上下文 {n_ctx} / max_tokens={asked} plus "
                       f"the {len(ids)}-token prompt exceeds the context of {n_ctx}: set max_tokens to at most {room}",
                       param="max_tokens", code="context_length_exceeded")
    params = body.generation_params(served.params, job.scheduler.settings.sampling_defaults, extra_stops)
    params.max_tokens = min(params.max_tokens, room)
    return params


def options_for(body: SamplingRequest, served: ServedModel, logprobs: int | None) -> SubmitOptions:
    batched = not isinstance(served.runner, ThreadRunner)
    if logprobs is not None and not batched:
        raise ApiError(400, "这个模型不提供 logprobs / this model's backend gives no logprobs: omit `logprobs`",
                       param="logprobs", code="unsupported_parameter")
    return SubmitOptions(logprobs=logprobs, logit_bias=_logit_bias(body, served, batched),
                         ignore_eos=getattr(body, "ignore_eos", False))


def _logit_bias(body: SamplingRequest, served: ServedModel, batched: bool) -> dict[int, float] | None:
    bias = getattr(body, "logit_bias", None)
    if not bias:
        return None
    n_vocab = getattr(served.engine, "n_vocab", 0)
    try:
        parsed = {int(k): float(v) for k, v in bias.items()}
    except ValueError:
        parsed = {}
    if not batched or not parsed or any(not 0 <= k < n_vocab for k in parsed):
        raise ApiError(400, f"logit_bias 的键必须是 [0, {n_vocab}) 内的 token id / logit_bias keys must be token ids in "
                       f"[0, {n_vocab}) of a local llama.cpp model", param="logit_bias", code="invalid_value")
    return parsed


# ---------------------------------------------------------------- one generation


class Job:
    """One request's generation: admission, the event stream, disconnect watching, release exactly once."""

    def __init__(self, scheduler: ModelScheduler, served: ServedModel):
        self.scheduler, self.served = scheduler, served
        self.id, self.started = new_id("danlu"), time.monotonic()
        self.events = AsyncEvents()
        self.handle = None
        self._closed = False

    @classmethod
    async def open(cls, request: Request, model: str) -> "Job":
        """Admission and, on first use, loading; not cancelled by a disconnect (the next caller wants the model)."""
        scheduler = scheduler_of(request)
        return cls(scheduler, await scheduler.acquire(model))

    def prompt(self, build) -> list[int]:
        """Render and tokenize; a conversation the format rejects is the caller's to fix (400)."""
        try:
            ids = build()
        except DanluError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_prompt") from None
        if not ids:
            raise ApiError(400, "提示为空 / the prompt is empty: send some text", param="prompt", code="empty_prompt")
        return ids

    def start(self, ids: list[int], params: GenerationParams, options: SubmitOptions) -> None:
        self.handle = self.served.runner.submit(ids, params, self.events, options)

    async def answer(self, request: Request, view: View, stream: bool):
        first = await until_disconnect(self.events.get(), request)
        if first.error:
            raise api_error(first.error)
        if stream:
            return StreamingResponse(self._sse(first, view), media_type="text/event-stream", headers=SSE_HEADERS,
                                     background=BackgroundTask(self.close))
        try:
            return view.response(*await until_disconnect(self._gather(first), request))
        finally:
            self.close()

    async def _events(self, first: Event) -> AsyncIterator[Event]:
        event = first
        while True:
            yield event
            if event.error or event.chunk.finish_reason:
                return
            event = await self.events.get()

    async def _gather(self, first: Event) -> tuple[str, list, Event]:
        parts, logprobs, last = [], [], first
        async for event in self._events(first):
            if event.error:
                raise api_error(event.error)
            parts.append(event.chunk.text)
            logprobs.extend(event.logprobs)
            last = event
        return "".join(parts), logprobs, last

    async def _sse(self, first: Event, view: View) -> AsyncIterator[str]:
        try:
            for data in view.stream_start():
                yield f"data: {data}\n\n"
            async for event in self._events(first):
                if event.error:
                    yield f"data: {json.dumps(api_error(event.error).body(), ensure_ascii=False)}\n\n"
                    break
                for data in view.stream_event(event):
                    yield f"data: {data}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the generation (a no-op once it has finished) and give the model's slot back, once."""
        if self._closed:
            return
        self._closed = True
        if self.handle is not None:
            self.handle.cancel()
        self.scheduler.release(self.served, time.monotonic() - self.started)


async def until_disconnect(awaitable: Awaitable[T], request: Request) -> T:
    """Await `awaitable` unless the client disconnects first (then cancel it and raise ClientGone)."""
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


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def api_error(error: DanluError) -> ApiError:
    """An engine's error as an HTTP error: the caller's (400), capacity (503), a remote's, or a fault (500)."""
    from danlu.backends.remote import RemoteError

    if isinstance(error, Overloaded):
        return ApiError(503, str(error), type="server_error", code="overloaded", headers={"Retry-After": "2"})
    if isinstance(error, EngineFault):
        return ApiError(500, str(error), type="server_error", code="engine_fault")
    if isinstance(error, RemoteError):
        status = {400: 400, 413: 400, 422: 400, 429: 429}.get(error.status or 0, 502)
        return ApiError(status, str(error), type="invalid_request_error" if status < 500 else "server_error",
                        code="remote_error")
    return ApiError(400, str(error), code="invalid_request")
