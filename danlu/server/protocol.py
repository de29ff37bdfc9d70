"""The OpenAI API shapes, modelled once: requests, responses, stream chunks, errors.

Fields follow the order of the OpenAI API reference; what danlu adds is fenced under "danlu extras" and
described. Unknown fields are ignored (clients such as LangChain send more than a server needs), but a
field danlu cannot honour (tools, images, n > 1, a JSON response format) is refused with a message rather
than silently dropped. Sampling defaults are resolved in one place, `SamplingRequest.generation_params`:
the user's value, else the server's default, else the model's (catalog) default.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from danlu.backends.base import GenerationParams

Temperature = Annotated[float, Field(ge=0, le=2, description="0 is greedy")]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[StrictInt, Field(ge=1, description="most new tokens; prompt + max_tokens must fit the context")]
Stop = Annotated[str | list[str] | None, Field(description="up to 16 strings; generation ends before any of them")]


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


class ApiError(Exception):
    """A request the server answers with an error status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)

    def body(self) -> dict:
        return ErrorResponse(error=self.detail).model_dump()


# ---------------------------------------------------------------- requests


class StreamOptions(OpenAIModel):
    include_usage: StrictBool = False


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`developer` is read as `system`; tool messages are not supported")
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_dict(self) -> dict:
        """The {role, content} a prompt format renders; `developer` is the newer name for `system`."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class SamplingRequest(OpenAIModel):
    """What chat and text completions share: the user > server > model resolution of sampling settings."""

    def generation_params(self, model: GenerationParams, server: dict,
                          extra_stops: tuple[str, ...] = ()) -> GenerationParams:
        """Each setting from the request if given, else the server's default, else the model's."""
        given = self.model_fields_set
        pick = {name: getattr(self, name) if name in given else server.get(name, getattr(model, name))
                for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "top_k",
                             "min_p", "repetition_penalty")}
        max_tokens = self.explicit_max_tokens() or server.get("max_tokens") or self.requested_max_tokens() \
            or model.max_tokens  # the last two: the spec's default (16 for completions), then the model's
        stops = list(dict.fromkeys([*extra_stops, *model.stop, *self.stop_list()]))  # added, never substituted
        return replace(model, **pick, max_tokens=max_tokens, stop=stops)

    def explicit_max_tokens(self) -> int | None:
        """max_tokens only when the caller set it (a schema default is not a request to check)."""
        given = self.model_fields_set & {"max_tokens", "max_completion_tokens"}
        return self.requested_max_tokens() if given else None

    def stop_list(self) -> list[str]:
        stop = getattr(self, "stop", None)
        return [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]

    def requested_max_tokens(self) -> int | None:
        return getattr(self, "max_tokens", None)

    @field_validator("stop", check_fields=False)
    @classmethod
    def _few_stops(cls, stop):
        if isinstance(stop, list) and len(stop) > 16:
            raise ValueError("at most 16 stop strings")
        return stop


class ChatCompletionRequest(SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1, description="at least one message")
    model: str = Field(min_length=1, max_length=200)
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: StrictBool = False
    max_completion_tokens: MaxTokens | None = None
    max_tokens: MaxTokens | None = Field(None, description="deprecated by OpenAI for max_completion_tokens; both work")
    n: StrictInt = Field(1, ge=1, le=1, description="only 1 choice per request")
    presence_penalty: Penalty = 0.0
    response_format: dict | None = Field(None, description="only {'type': 'text'}")
    seed: StrictInt | None = None
    stop: Stop = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature = 1.0
    tools: list[dict] | None = Field(None, description="not supported: omit or send an empty list")
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20, description="needs logprobs: true")
    top_p: TopP = 1.0
    user: str | None = None
    # --- danlu extras (not in the OpenAI API; llama.cpp / vLLM names) ---
    top_k: StrictInt = Field(40, ge=0, description="danlu extra: keep the k most likely tokens (0: off)")
    min_p: float = Field(0.0, ge=0, le=1, description="danlu extra: drop tokens below min_p × the top probability")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="danlu extra: llama.cpp's repeat penalty")
    ignore_eos: StrictBool = Field(False, description="danlu extra (vLLM's name): generate max_tokens, for benchmarks")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a field danlu cannot honour."""
        if self.tools:
            return "tools", "不支持工具调用 / tools (function calling) are not supported: omit `tools`"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format", "只支持 {'type': 'text'} / only response_format {'type': 'text'} is supported"
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs 需要 logprobs: true / top_logprobs needs logprobs: true"
        return None


class CompletionRequest(SamplingRequest):
    """POST /v1/completions (legacy text completion)."""

    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="one prompt: a string, or token ids; a list of several prompts is not supported")
    best_of: StrictInt | None = Field(None, ge=1, le=1)
    echo: StrictBool = False
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    max_tokens: MaxTokens = 16
    n: StrictInt = Field(1, ge=1, le=1, description="only 1 choice per request")
    presence_penalty: Penalty = 0.0
    seed: StrictInt | None = None
    stop: Stop = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = Field(None, description="not supported")
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    user: str | None = None
    # --- danlu extras ---
    top_k: StrictInt = Field(40, ge=0, description="danlu extra: keep the k most likely tokens (0: off)")
    min_p: float = Field(0.0, ge=0, le=1, description="danlu extra: min-p sampling")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="danlu extra: llama.cpp's repeat penalty")
    ignore_eos: StrictBool = Field(False, description="danlu extra (vLLM's name): generate max_tokens, for benchmarks")

    def unsupported(self) -> tuple[str, str] | None:
        if self.suffix:
            return "suffix", "不支持 suffix（插入补全）/ suffix (insertion) is not supported"
        if self.echo and self.logprobs is not None:
            return "echo", "echo 与 logprobs 不能同时使用 / echo with logprobs is not supported"
        if isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int) and len(self.prompt) > 1:
            return "prompt", "一次只支持一个提示 / send one prompt per request"
        return None

    def prompt_value(self) -> str | list[int]:
        """The single prompt: text, or token ids."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return prompt[0] if prompt else ""
        return prompt


# ---------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt: int, completion: int, cached: int = 0) -> "Usage":
        return cls(completion_tokens=completion, prompt_tokens=prompt, total_tokens=prompt + completion,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None


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
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "danlu"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- responses built from generation events


def _finish(chunk) -> Literal["stop", "length"]:
    return "length" if chunk.finish_reason == "length" else "stop"


def _usage(chunk) -> Usage:
    t = chunk.timings
    return Usage.of(t.prompt_tokens, t.completion_tokens, t.cached_tokens) if t else Usage.of(0, 0)


def _entry(lp) -> TokenLogprobEntry:
    top = [TopLogprob(token=t, logprob=p, bytes=list(b)) for t, b, p in lp.top]
    return TokenLogprobEntry(token=lp.token, logprob=lp.logprob, bytes=list(lp.token_bytes), top_logprobs=top)


class ChatView:
    """Chat completion objects and `chat.completion.chunk`s from a generation's events."""

    def __init__(self, id: str, model: str, stream_options: StreamOptions | None, logprobs: bool):
        self.id, self.model, self.created, self.logprobs = id, model, now(), logprobs
        self.include_usage = bool(stream_options and stream_options.include_usage)

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices,
                                   usage=usage).model_dump_json()

    def _lp(self, logprobs) -> ChoiceLogprobs | None:
        return ChoiceLogprobs(content=[_entry(lp) for lp in logprobs]) if self.logprobs else None

    def stream_start(self) -> list[str]:
        return [self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])]

    def stream_event(self, event) -> list[str]:
        chunk, out = event.chunk, []
        if chunk.text or event.logprobs:
            out.append(self._chunk([ChunkChoice(delta=Delta(content=chunk.text), logprobs=self._lp(event.logprobs))]))
        if chunk.finish_reason:
            out.append(self._chunk([ChunkChoice(delta=Delta(), finish_reason=_finish(chunk))]))
            if self.include_usage:
                out.append(self._chunk([], _usage(chunk)))
        return out

    def response(self, text: str, logprobs: list, last) -> ChatCompletionResponse:
        choice = ChatChoice(message=ResponseMessage(content=text), logprobs=self._lp(logprobs),
                            finish_reason=_finish(last.chunk))
        return ChatCompletionResponse(id=self.id, choices=[choice], created=self.created, model=self.model,
                                      usage=_usage(last.chunk))


class CompletionView:
    """`text_completion` objects (whole or streamed) from a generation's events; `echo` is the prompt text."""

    def __init__(self, id: str, model: str, stream_options: StreamOptions | None, logprobs: bool, echo: str = ""):
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

    def _object(self, choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
        return CompletionResponse(id=self.id, choices=choices, created=self.created, model=self.model, usage=usage)

    def stream_start(self) -> list[str]:
        return [self._object([CompletionChoice(text=self.echo)]).model_dump_json()] if self.echo else []

    def stream_event(self, event) -> list[str]:
        chunk, out = event.chunk, []
        if chunk.text or event.logprobs:
            out.append(self._object([CompletionChoice(text=chunk.text, logprobs=self._lp(event.logprobs))]))
        if chunk.finish_reason:
            out.append(self._object([CompletionChoice(text="", finish_reason=_finish(chunk))]))
            if self.include_usage:
                out.append(self._object([], _usage(chunk)))
        return [o.model_dump_json() for o in out]

    def response(self, text: str, logprobs: list, last) -> CompletionResponse:
        choice = CompletionChoice(text=self.echo + text, logprobs=self._lp(logprobs), finish_reason=_finish(last.chunk))
        return self._object([choice], _usage(last.chunk))


View = ChatView | CompletionView
