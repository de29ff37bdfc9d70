"""Ollama's endpoints, thin: a request model becomes a call (protocol.py), the shared service runs it, views.py
and models.py shape the answer. Errors on these paths leave as `{"error": "…"}` (app.py checks OLLAMA_PATHS).

Chat and generate stream NDJSON by default (`"stream": false` for one JSON object), as Ollama does. An
/api/generate with an empty prompt only loads the model (`done_reason: "load"`), as Ollama's clients expect
for warm-up.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from danlu import __version__
from danlu.server.errors import ApiError
from danlu.server.generation import Generation, Job, respond
from danlu.server.ollama import models as model_info
from danlu.server.calls import EmbedCall
from danlu.server.ollama.protocol import (ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ModelRequest,
                                          keep_alive_seconds)
from danlu.server.ollama.views import OllamaView, created_at
from danlu.server.security import require_api_key

#: The version Ollama's clients are told: new enough for every field used here (think, tools, format schemas).
OLLAMA_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"
OLLAMA_PATHS = {"/api/version", "/api/tags", "/api/show", "/api/ps", "/api/chat", "/api/generate", "/api/embed",
                "/api/embeddings", "/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push"}

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/api/version")
async def version() -> dict:
    return {"version": OLLAMA_VERSION, "danlu": __version__}


@router.get("/api/tags")
async def tags(request: Request) -> dict:
    def rows() -> list[dict]:
        scheduler = request.app.state.scheduler
        found = []
        for name in scheduler.served_names():
            try:
                key, resolved = scheduler.resolve(name)
            except ApiError:
                continue
            found.append(model_info.tag_row(key if resolved.spec else name, resolved))
        return found

    return {"models": await asyncio.to_thread(rows)}


@router.post("/api/show")
async def show(body: ModelRequest, request: Request) -> dict:
    name = body.model_name()
    key, resolved = request.app.state.scheduler.resolve(name)
    return await asyncio.to_thread(model_info.show, name, resolved)


@router.get("/api/ps")
async def ps(request: Request) -> dict:
    """Loaded models (Ollama's shape), with danlu's memory budget and per-model load."""
    scheduler = request.app.state.scheduler
    return {"models": [model_info.ps_row(scheduler, m) for m in scheduler.loaded.values()],
            "memory_budget_bytes": scheduler.budget_bytes, "memory_used_bytes": scheduler.used_bytes()}


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request):
    call = body.to_call()
    if not call.messages:
        return await _load_only(request, body.model, call.keep_alive_s, chat=True)
    generation = await request.app.state.service.chat(call, request)
    view = OllamaView(body.model, chat=True, load_s=generation.job.load_s)
    return await answer(request, generation, view, body.stream)


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request):
    body.check()
    if not body.prompt:
        return await _load_only(request, body.model, keep_alive_seconds(body.keep_alive), chat=False)
    service = request.app.state.service
    if body.raw:
        generation = await service.complete(body.to_completion(), request)
    else:
        generation = await service.chat(body.to_chat(), request)
    view = OllamaView(body.model, chat=False, load_s=generation.job.load_s)
    return await answer(request, generation, view, body.stream)


async def _load_only(request: Request, model: str, keep_alive_s: float | None, chat: bool) -> dict:
    """Ollama's warm-up call: load the model (or, with keep_alive 0, unload it) and generate nothing."""
    scheduler = request.app.state.scheduler
    job = await Job.open(scheduler, model)
    job.keep_alive_s = keep_alive_s
    job.close()
    reason = "unload" if keep_alive_s == 0 else "load"
    body = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    return {"model": model, "created_at": created_at(), **body, "done": True, "done_reason": reason}


async def answer(request: Request, generation: Generation, view: OllamaView, stream: bool):
    return await respond(request, generation, _lines(generation, view) if stream else None, view.whole, NDJSON)


async def _lines(generation: Generation, view: OllamaView) -> AsyncIterator[str]:
    try:
        async for piece in generation.pieces():
            if piece.finish_reason:
                for line in view.last_lines(piece, generation.parsing.calls()):
                    yield line + "\n"
                return
            line = view.line(piece)
            if line:
                yield line + "\n"
    except ApiError as error:  # mid-stream: Ollama sends the error as a line
        import json

        yield json.dumps(error.ollama_body(), ensure_ascii=False) + "\n"
    finally:
        generation.close()


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> dict:
    call = EmbedCall(body.model, body.texts(), body.truncate, body.dimensions,
                     keep_alive_s=keep_alive_seconds(body.keep_alive))
    result, usage = await request.app.state.service.embed(call)
    return {"model": body.model, "embeddings": result.as_lists(), "total_duration": int(usage.total_s * 1e9),
            "load_duration": int(usage.load_s * 1e9), "prompt_eval_count": usage.prompt_tokens}


@router.post("/api/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request) -> dict:
    """Ollama's older route: one `prompt`, one `embedding` (an empty prompt gives an empty vector, as Ollama does)."""
    if not body.prompt:
        return {"embedding": []}
    call = EmbedCall(body.model, [body.prompt], keep_alive_s=keep_alive_seconds(body.keep_alive))
    result, _ = await request.app.state.service.embed(call)
    return {"embedding": result.as_lists()[0]}


@router.delete("/api/delete")
async def delete(body: ModelRequest, request: Request) -> Response:
    from danlu.server.ollama.store_routes import delete_model

    await delete_model(request, body.model_name())
    return Response(status_code=200)


@router.post("/api/pull")
async def pull(body: ModelRequest, request: Request):
    from danlu.server.ollama.store_routes import pull_lines, pull_whole

    name = body.model_name()
    if body.stream:
        return StreamingResponse(pull_lines(request, name, body.source), media_type=NDJSON)
    return JSONResponse(await pull_whole(request, name, body.source))


@router.post("/api/copy")
@router.post("/api/create")
@router.post("/api/push")
async def not_here(request: Request):
    raise ApiError(400, f"danlu 不支持 {request.url.path}：模型来自 danlu 的目录（danlu pull / danlu finetune）/ {request.url.path} "
                   "is not supported: danlu's models come from its catalog (danlu pull, danlu finetune)",
                   code="not_implemented")
