"""The OpenAI API responses and stream chunks, built from danlu's pieces and replies (server/calls.py).

Thinking goes out under both names clients read: `reasoning_content` (llama-server, LM Studio, DeepSeek's
API) and `reasoning` (Ollama's OpenAI API, newer vLLM), in messages and in stream deltas. Tool calls stream as
OpenAI does: a delta with the call's index, id and name first, then its argument fragments, and the last
chunk says `finish_reason: "tool_calls"`; the official SDK's stream helpers assemble them.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field, model_serializer

from danlu.server.calls import Piece, Reply, ToolCall, ToolCallDelta, Usage

FinishReason = Literal["stop", "length", "tool_calls"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- shapes


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageOut(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @classmethod
    def of(cls, usage: Usage) -> "UsageOut":
        return cls(completion_tokens=usage.completion_tokens, prompt_tokens=usage.prompt_tokens,
                   total_tokens=usage.total_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
                   completion_tokens_details=CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens))


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None


class FunctionOut(BaseModel):
    name: str | None = None
    arguments: str = ""


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class DroppingNones(BaseModel):
    """Serialised with only the fields it has, as OpenAI's stream fragments are."""

    @model_serializer(mode="wrap")
    def _only_what_it_has(self, handler):
        return {key: value for key, value in handler(self).items() if value is not None}


class FunctionDelta(DroppingNones):
    name: str | None = None
    arguments: str = ""


class ToolCallChunk(DroppingNones):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    usage: UsageOut


class Delta(DroppingNones):
    """A stream delta carries only what it has (OpenAI sends `{"content": "…"}`, not a row of nulls)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: UsageOut | None = None


class CompletionLogprobs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    finish_reason: Literal["stop", "length"] | None = None
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    text: str


class CompletionResponse(BaseModel):
    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str | None = None
    usage: UsageOut | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "danlu"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


# ---------------------------------------------------------------- building them


def _entry(lp) -> TokenLogprobEntry:
    top = [TopLogprob(token=t, logprob=p, bytes=list(b)) for t, b, p in lp.top]
    return TokenLogprobEntry(token=lp.token, logprob=lp.logprob, bytes=list(lp.token_bytes), top_logprobs=top)


def _call_chunk(delta: ToolCallDelta) -> ToolCallChunk:
    return ToolCallChunk(index=delta.index, id=delta.id, type="function" if delta.id else None,
                         function=FunctionDelta(name=delta.name, arguments=delta.arguments))


def _call_out(call: ToolCall) -> ToolCallOut:
    return ToolCallOut(id=call.id, function=FunctionOut(name=call.name, arguments=call.arguments))


class ChatView:
    """Chat completion objects and `chat.completion.chunk`s from a generation's pieces."""

    def __init__(self, id: str, model: str, stream_options, logprobs: bool):
        self.id, self.model, self.created, self.logprobs = id, model, now(), logprobs
        self.include_usage = bool(stream_options and stream_options.include_usage)

    def _chunk(self, choices: list[ChunkChoice], usage: UsageOut | None = None) -> str:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices,
                                   usage=usage).model_dump_json(exclude_none=False)

    def _lp(self, logprobs) -> ChoiceLogprobs | None:
        return ChoiceLogprobs(content=[_entry(lp) for lp in logprobs]) if self.logprobs else None

    def stream_start(self) -> list[str]:
        return [self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])]

    def stream_piece(self, piece: Piece) -> list[str]:
        out = []
        if piece.reasoning:
            out.append(self._chunk([ChunkChoice(delta=Delta(reasoning_content=piece.reasoning,
                                                            reasoning=piece.reasoning))]))
        if piece.content or piece.logprobs:
            out.append(self._chunk([ChunkChoice(delta=Delta(content=piece.content), logprobs=self._lp(piece.logprobs))]))
        if piece.tool_calls:
            out.append(self._chunk([ChunkChoice(delta=Delta(tool_calls=[_call_chunk(d) for d in piece.tool_calls]))]))
        if piece.finish_reason:
            out.append(self._chunk([ChunkChoice(delta=Delta(), finish_reason=piece.finish_reason)]))
            if self.include_usage and piece.usage:
                out.append(self._chunk([], UsageOut.of(piece.usage)))
        return out

    def response(self, reply: Reply) -> ChatCompletionResponse:
        message = ResponseMessage(content=reply.content if reply.content or not reply.tool_calls else None,
                                  reasoning_content=reply.reasoning or None, reasoning=reply.reasoning or None,
                                  tool_calls=[_call_out(c) for c in reply.tool_calls] or None)
        choice = ChatChoice(message=message, logprobs=self._lp(reply.logprobs), finish_reason=reply.finish_reason)
        return ChatCompletionResponse(id=self.id, choices=[choice], created=self.created, model=self.model,
                                      usage=UsageOut.of(reply.usage))


class CompletionView:
    """`text_completion` objects (whole or streamed) from a generation's pieces; `echo` is the prompt text."""

    def __init__(self, id: str, model: str, stream_options, logprobs: bool, echo: str = ""):
        self.id, self.model, self.created, self.logprobs, self.echo = id, model, now(), logprobs, echo
        self.include_usage = bool(stream_options and stream_options.include_usage)
        self._offset = len(echo)

    def _lp(self, logprobs) -> CompletionLogprobs | None:
        if not self.logprobs:
            return None
        out = CompletionLogprobs()
        for lp in logprobs:
            out.tokens.append(lp.token)
            out.token_logprobs.append(lp.logprob)
            out.top_logprobs.append({t: p for t, _, p in lp.top})
            out.text_offset.append(self._offset)
            self._offset += len(lp.token)
        return out

    def _object(self, choices: list[CompletionChoice], usage: UsageOut | None = None) -> CompletionResponse:
        return CompletionResponse(id=self.id, choices=choices, created=self.created, model=self.model, usage=usage)

    def stream_start(self) -> list[str]:
        return [self._object([CompletionChoice(text=self.echo)]).model_dump_json()] if self.echo else []

    def stream_piece(self, piece: Piece) -> list[str]:
        out = []
        if piece.content or piece.logprobs:
            out.append(self._object([CompletionChoice(text=piece.content, logprobs=self._lp(piece.logprobs))]))
        if piece.finish_reason:
            out.append(self._object([CompletionChoice(text="", finish_reason=_text_finish(piece.finish_reason))]))
            if self.include_usage and piece.usage:
                out.append(self._object([], UsageOut.of(piece.usage)))
        return [o.model_dump_json() for o in out]

    def response(self, reply: Reply) -> CompletionResponse:
        choice = CompletionChoice(text=self.echo + reply.content, logprobs=self._lp(reply.logprobs),
                                  finish_reason=_text_finish(reply.finish_reason))
        return self._object([choice], UsageOut.of(reply.usage))


def _text_finish(reason: str) -> Literal["stop", "length"]:
    return "length" if reason == "length" else "stop"


View = ChatView | CompletionView


# ---------------------------------------------------------------- embeddings and rerank


def embedding_response(result, model: str, encoding: str, usage: Usage) -> dict:
    """OpenAI's embeddings list; base64 is the little-endian float32 bytes, as OpenAI sends them."""
    import base64

    vectors = result.vectors.astype("<f4")
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(row.tobytes()).decode() if encoding == "base64" else row.tolist()}
            for i, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}}


def rerank_response(scores: list[float], documents: list[str], model: str, top_n: int | None, with_text: bool,
                    usage: Usage) -> dict:
    """Jina/Cohere's results, most relevant first (`index` into the request's documents)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: top_n or len(scores)]
    results = [{"index": i, "relevance_score": scores[i], **({"document": {"text": documents[i]}} if with_text else {})}
               for i in order]
    return {"id": new_id("rerank"), "model": model, "results": results,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}}
