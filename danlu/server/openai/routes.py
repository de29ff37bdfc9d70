"""The OpenAI endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank (Jina/Cohere's shape),
/v1/models. Thin: a request model becomes a
call (protocol.py), the service runs it, a view shapes what comes back (views.py)."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request

from danlu.server.errors import ApiError
from danlu.server.generation import Generation, respond
from danlu.server.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, RerankRequest
from danlu.server.openai.views import (ChatView, CompletionView, ErrorResponse, ModelCard, ModelList, View,
                                       embedding_response, new_id, rerank_response)
from danlu.server.security import require_api_key

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 429, 503)}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter(dependencies=[Depends(require_api_key)])


def service_of(request: Request):
    return request.app.state.service


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    names = await asyncio.to_thread(request.app.state.scheduler.served_names)
    return ModelList(data=[ModelCard(id=name) for name in names])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    request.app.state.scheduler.resolve(model_id)  # 404 when unknown
    return ModelCard(id=model_id)


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    call = body.to_call()
    generation = await service_of(request).chat(call, request)
    view = ChatView(new_id("chatcmpl"), body.model, body.stream_options, body.logprobs)
    return await answer(request, generation, view, body.stream)


@router.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, request: Request):
    call = body.to_call()
    generation = await service_of(request).complete(call, request)
    echo = ""
    if body.echo:
        prompt = call.prompt
        echo = prompt if isinstance(prompt, str) else generation.job.served.engine.detokenize(prompt).decode("utf-8",
                                                                                                         "replace")
    view = CompletionView(new_id("cmpl"), body.model, body.stream_options, body.logprobs is not None, echo)
    return await answer(request, generation, view, body.stream)


@router.post("/v1/embeddings", responses=ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> dict:
    result, usage = await service_of(request).embed(body.to_call())
    return embedding_response(result, body.model, body.encoding_format, usage)


@router.post("/v1/rerank", responses=ERRORS)
@router.post("/rerank", responses=ERRORS, include_in_schema=False)
async def rerank(body: RerankRequest, request: Request) -> dict:
    scores, usage = await service_of(request).rerank(body.to_call())
    return rerank_response(scores, body.texts(), body.model, body.top_n, body.return_documents, usage)


async def answer(request: Request, generation: Generation, view: View, stream: bool):
    """A streamed (SSE, ending in `data: [DONE]`) or whole answer; the generation is closed either way."""
    return await respond(request, generation, sse(generation, view) if stream else None, view.response,
                         "text/event-stream", SSE_HEADERS)


async def sse(generation: Generation, view: View) -> AsyncIterator[str]:
    try:
        for data in view.stream_start():
            yield f"data: {data}\n\n"
        try:
            async for piece in generation.pieces():
                for data in view.stream_piece(piece):
                    yield f"data: {data}\n\n"
        except ApiError as error:  # mid-stream: the status line is sent already; the error goes as an event
            yield f"data: {json.dumps(error.openai_body(), ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        generation.close()
