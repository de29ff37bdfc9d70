"""The OpenAI API requests, modelled once in pydantic, each turned into danlu's own call (server/calls.py).

Fields follow the order of the OpenAI API reference; what danlu adds is fenced under "danlu extras" and
described. Unknown fields are ignored (clients such as LangChain send more than a server needs), but a field
danlu cannot honour (images, n > 1, a tool_choice naming no given tool) is refused with a message rather
than silently dropped. Thinking is switched by `reasoning_effort: "none"`, `chat_template_kwargs.
enable_thinking`, or the Ollama-style `think`; strings holding a lone UTF-16 surrogate are a 400 naming
the field, before anything else reads them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from danlu.server.calls import SAMPLING_FIELDS, ChatCall, CompletionCall, EmbedCall, RerankCall, ResponseFormat
from danlu.server.errors import reject_lone_surrogates, unsupported
from danlu.streaming import MAX_STOP_CHARS, MAX_STOPS_TOTAL_CHARS

Temperature = Annotated[float, Field(ge=0, le=2, description="0 is greedy")]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[StrictInt, Field(ge=1, description="most new tokens; prompt + max_tokens must fit the context")]
Stop = Annotated[str | list[str] | None, Field(description=(
    f"up to 16 strings of at most {MAX_STOP_CHARS} characters; generation ends before any of them"))]
MAX_STOPS = 16
FUNCTION_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Request(OpenAIModel):
    """A request body: lone surrogates are refused up front (they cannot be encoded for a tokenizer)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        reject_lone_surrogates(data)
        return data


# ---------------------------------------------------------------- messages and tools


class StreamOptions(OpenAIModel):
    include_usage: StrictBool = False


class ContentPart(OpenAIModel):
    type: str
    text: str | None = None


class FunctionCall(OpenAIModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str | dict = Field("{}", description="a JSON object, as a string (OpenAI) or an object")


class ToolCallIn(OpenAIModel):
    id: str | None = Field(None, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="`developer` is read as `system`")
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=200)
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(None, max_length=200)
    reasoning_content: str | None = Field(None, description="a past reply's thinking, as sent back by clients")
    reasoning: str | None = Field(None, description="the same, under Ollama's and vLLM's newer name")

    def as_dict(self) -> dict:
        """The OpenAI-shaped dict a prompt format renders (`developer` is the newer name for `system`)."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                     for c in self.tool_calls]
        for key in ("name", "tool_call_id"):
            if getattr(self, key):
                message[key] = getattr(self, key)
        if self.reasoning_content or self.reasoning:
            message["reasoning_content"] = self.reasoning_content or self.reasoning
        return message

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text":
                raise unsupported("messages", f"不支持 {part.type} 类型的内容（图片、音频）/ content parts of type {part.type!r} "
                                  "(images, audio) are not supported: send text")
        return "".join(part.text or "" for part in self.content)


class FunctionDef(OpenAIModel):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict | None = None
    strict: StrictBool | None = None


class ToolDef(OpenAIModel):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: dict = Field(description="{'name': one of the tools}")


class JsonSchemaFormat(OpenAIModel):
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: dict | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormatIn(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def to_format(self) -> ResponseFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return ResponseFormat("json_object")
        if self.json_schema is None:
            raise unsupported("response_format", "json_schema 需要 json_schema 字段 / type json_schema needs a `json_schema` "
                              "object with a `schema`")
        return ResponseFormat("json_schema", self.json_schema.schema_ or {}, self.json_schema.name,
                              bool(self.json_schema.strict))


# ---------------------------------------------------------------- requests


class SamplingRequest(Request):
    """What chat and text completions share."""

    def sampling(self) -> dict:
        """Only the settings the client gave (the service fills in the server's, then the model's)."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS if name in self.model_fields_set}

    def stop_list(self) -> list[str]:
        stop = getattr(self, "stop", None)
        return [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]

    @field_validator("stop", check_fields=False)
    @classmethod
    def _bounded_stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string may have at most {MAX_STOP_CHARS} characters")
        if sum(len(s) for s in stops) > MAX_STOPS_TOTAL_CHARS:
            raise ValueError(f"the stop strings may have at most {MAX_STOPS_TOTAL_CHARS} characters in all")
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
    parallel_tool_calls: StrictBool = True
    presence_penalty: Penalty = 0.0
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="'none' turns a hybrid model's thinking off; any other value turns it on")
    response_format: ResponseFormatIn | None = None
    seed: StrictInt | None = None
    stop: Stop = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature = 1.0
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[ToolDef] | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20, description="needs logprobs: true")
    top_p: TopP = 1.0
    user: str | None = None
    # --- danlu extras (not in the OpenAI API; llama.cpp / vLLM / Ollama names) ---
    top_k: StrictInt = Field(40, ge=0, description="danlu extra: keep the k most likely tokens (0: off)")
    min_p: float = Field(0.0, ge=0, le=1, description="danlu extra: drop tokens below min_p × the top probability")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="danlu extra: llama.cpp's repeat penalty")
    ignore_eos: StrictBool = Field(False, description="danlu extra (vLLM's name): generate max_tokens, for benchmarks")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description=(
        "danlu extra (vLLM's name): variables for the model's chat template, e.g. {'enable_thinking': false}"))
    think: StrictBool | None = Field(None, description="danlu extra (Ollama's name): thinking on or off")
    max_reasoning_tokens: StrictInt | None = Field(None, ge=0, description=(
        "danlu extra: most thinking tokens; then the think block is closed and the model answers"))
    num_ctx: StrictInt | None = Field(None, ge=1, description=(
        "danlu extra (Ollama's name): a smaller context for this request (prompt + reply), at most the server's"))

    def to_call(self) -> ChatCall:
        self._check()
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        kwargs = dict(self.chat_template_kwargs or {})
        switch = kwargs.pop("enable_thinking", None)
        return ChatCall(
            model=self.model, messages=[m.as_dict() for m in self.messages], sampling=self.sampling(),
            max_tokens=self.max_completion_tokens or self.max_tokens, stop=self.stop_list(),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None, logit_bias=self.logit_bias,
            ignore_eos=self.ignore_eos, tools=[t.model_dump(exclude_none=True) for t in self.tools or []] or None,
            tool_choice=choice, parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.response_format.to_format() if self.response_format else None,
            thinking=self._thinking(switch), reasoning_budget=self.max_reasoning_tokens, template_kwargs=kwargs,
            passthrough=self.model_dump(include={"tools", "tool_choice", "parallel_tool_calls", "response_format",
                                                 "reasoning_effort", "chat_template_kwargs"}, exclude_none=True,
                                        by_alias=True),
            num_ctx=self.num_ctx)

    def _thinking(self, switch: Any) -> bool | None:
        if self.think is not None:
            return self.think
        if isinstance(switch, bool):
            return switch
        if self.reasoning_effort is not None:
            return self.reasoning_effort != "none"
        return None

    def _check(self) -> None:
        if self.top_logprobs and not self.logprobs:
            raise unsupported("top_logprobs", "top_logprobs 需要 logprobs: true / top_logprobs needs logprobs: true")
        named = self.tool_choice.function.get("name") if isinstance(self.tool_choice, NamedToolChoice) else None
        known = {t.function.name for t in self.tools or []}
        if (named or self.tool_choice == "required") and not known:
            raise unsupported("tool_choice", "tool_choice 需要 tools / tool_choice needs `tools`")
        if named and named not in known:
            raise unsupported("tool_choice", f"tool_choice 指定的函数 {named!r} 不在 tools 里 / tool_choice names "
                              f"{named!r}, which is not among `tools` ({', '.join(sorted(known))})")


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
    response_format: ResponseFormatIn | None = Field(None, description="danlu extra: JSON output, as for chat")

    def to_call(self) -> CompletionCall:
        self._check()
        return CompletionCall(
            model=self.model, prompt=self._prompt(), sampling=self.sampling(),
            max_tokens=self.max_tokens if "max_tokens" in self.model_fields_set else None, default_max_tokens=16,
            stop=self.stop_list(), logprobs=self.logprobs, logit_bias=self.logit_bias, ignore_eos=self.ignore_eos,
            echo=self.echo, response_format=self.response_format.to_format() if self.response_format else None)

    def _check(self) -> None:
        if self.suffix:
            raise unsupported("suffix", "不支持 suffix（插入补全）/ suffix (insertion) is not supported")
        if self.echo and self.logprobs is not None:
            raise unsupported("echo", "echo 与 logprobs 不能同时使用 / echo with logprobs is not supported")
        if isinstance(self.prompt, list) and self.prompt and not isinstance(self.prompt[0], int) and len(self.prompt) > 1:
            raise unsupported("prompt", "一次只支持一个提示 / send one prompt per request")

    def _prompt(self) -> str | list[int]:
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return prompt[0]
        return prompt


# ---------------------------------------------------------------- embeddings and rerank


class EmbeddingRequest(Request):
    """POST /v1/embeddings."""

    input: str | list[str] | list[StrictInt] | list[list[StrictInt]] = Field(description="a text or a list of texts")
    model: str = Field(min_length=1, max_length=200)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1, description="keep the first N values (Matryoshka models)")
    user: str | None = None
    # --- danlu extras ---
    input_type: Literal["query", "document"] | None = Field(None, description=(
        "danlu extra (Jina/Cohere's name): 'query' adds the model's query instruction (bge-zh, Qwen3-Embedding)"))
    truncate: StrictBool = Field(False, description="danlu extra: cut texts over the model's length instead of a 400")

    def to_call(self) -> EmbedCall:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise unsupported("input", "input 要是文本或文本列表（不支持 token id）/ `input` must be a text or a list of "
                              "texts (token ids are not supported)")
        return EmbedCall(self.model, list(texts), self.truncate, self.dimensions, self.input_type)


class RerankDocument(OpenAIModel):
    text: str


class RerankRequest(Request):
    """POST /v1/rerank: the Jina/Cohere shape that llama-server's `--rerank` and Dify use."""

    model: str = Field(min_length=1, max_length=200)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=1000)
    top_n: StrictInt | None = Field(None, ge=1)
    return_documents: StrictBool = False
    truncate: StrictBool = True

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]

    def to_call(self) -> RerankCall:
        return RerankCall(self.model, self.query, self.texts(), self.truncate)
