"""What a request asks of a model and what comes back, in danlu's own terms: no wire protocol here.

The OpenAI routes (server/openai/) and the Ollama routes (server/ollama/) each turn their request bodies into
these calls and turn the results back into their own shapes; everything in between (server/service.py,
server/generation.py) sees only these.

- `ChatCall` / `CompletionCall`: a chat turn or a text completion. `sampling` holds only the settings the
  client gave, by GenerationParams name; the service fills in the server's and then the model's defaults.
- `Piece`: one streamed step of a reply, already split into thinking, content and tool-call deltas.
- `Reply`: the whole reply of a non-streamed request.
- `Usage`: token counts and timings, measured by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from danlu.outputs.calls import ToolCall, ToolCallDelta

__all__ = ["ChatCall", "CompletionCall", "EmbedCall", "RerankCall", "Piece", "Reply", "ResponseFormat", "ToolCall", "ToolCallDelta", "Usage"]

#: GenerationParams fields a client may set (the names the service resolves user > server > model).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                   "frequency_penalty", "seed")


@dataclass
class ResponseFormat:
    """Constrained output: any JSON object, or JSON matching `schema` (`strict`: every field as declared)."""

    kind: str  # "json_object" | "json_schema"
    schema: dict | None = None
    name: str | None = None
    strict: bool = False


@dataclass
class ChatCall:
    """A chat turn. Messages are OpenAI-shaped dicts (role, content as text, tool_calls, tool_call_id, name,
    reasoning_content); tools are OpenAI function definitions."""

    model: str
    messages: list[dict]
    sampling: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None  # as the client asked; None: the server's, then the model's default
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: off; n: the sampled token and the n most likely
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None  # "auto" | "none" | "required" | {"type": "function", "function": {...}}
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    thinking: bool | None = None  # None: the server's default for the model, else as its template does
    reasoning_budget: int | None = None  # most thinking tokens before the think block is closed
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    num_ctx: int | None = None  # Ollama's per-request context: an upper bound on prompt + reply here
    keep_alive_s: float | None = None  # Ollama's keep_alive: how long the model stays loaded after this
    passthrough: dict[str, Any] = field(default_factory=dict)  # the client's own fields, for a remote model

    @property
    def wants_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def required_tool(self) -> str | None:
        """The function a named tool_choice demands."""
        choice = self.tool_choice
        if isinstance(choice, dict):
            return (choice.get("function") or {}).get("name")
        return None


@dataclass
class CompletionCall:
    """A text (or token-id) completion: the prompt goes to the model as it is, no chat template."""

    model: str
    prompt: str | list[int]
    sampling: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    default_max_tokens: int | None = None  # the protocol's own default (OpenAI completions: 16)
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    echo: bool = False
    response_format: ResponseFormat | None = None
    num_ctx: int | None = None
    keep_alive_s: float | None = None
    raw: bool = True  # False: Ollama's /api/generate without `raw`: the prompt is a user turn of the template
    system: str | None = None
    thinking: bool | None = None


@dataclass
class EmbedCall:
    """Vectors for texts; `input_type` "query" adds the model's query prefix (bge-zh, Qwen3-Embedding)."""

    model: str
    texts: list[str]
    truncate: bool = False
    dimensions: int | None = None
    input_type: str | None = None  # "query" | "document" | None (as documents)
    keep_alive_s: float | None = None


@dataclass
class RerankCall:
    """Relevance of each document to a query (a cross-encoder)."""

    model: str
    query: str
    documents: list[str]
    truncate: bool = True


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    ttft_s: float = 0.0
    prompt_tps: float = 0.0
    decode_tps: float = 0.0
    total_s: float = 0.0
    load_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Piece:
    """One streamed step of a reply."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: tuple = ()
    finish_reason: str | None = None  # "stop" | "length" | "tool_calls" on the last piece
    usage: Usage | None = None  # on the last piece

    @property
    def empty(self) -> bool:
        return not (self.content or self.reasoning or self.tool_calls or self.logprobs or self.finish_reason)


@dataclass
class Reply:
    """A whole reply."""

    content: str
    reasoning: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    logprobs: list = field(default_factory=list)
