"""The contract every runtime fulfils; chat, server, arena, eval and bench talk only to this.

A backend module exposes `load(spec, variant, plan) -> Engine` (see backends/__init__.py). Streaming is the primitive: `generate`
yields typed `Chunk`s, and a non-streaming call is a loop over it (`complete`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from danlu.catalog.schema import ModelSpec, Variant

if TYPE_CHECKING:  # base stays import-light: grammar pulls in llguidance only when a constraint is built
    from danlu.outputs.grammar import Constraint


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; callers check these instead of catching NotImplementedError."""

    chat_template: bool = False
    logits: bool = False
    state: bool = False
    lora: bool = False
    gpu: bool = False
    streaming: bool = True
    embeddings: bool = False  # `embed(texts)` returns vectors
    rerank: bool = False  # `rerank(query, documents)` returns relevance scores


@dataclass
class GenerationParams:
    """Sampling and stopping settings for one generation; user stops are added to the model's own."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    num_beams: int = 1  # > 1: beam search, where an engine has it (EVA2.0); the reply then comes at the end
    length_penalty: float = 1.0  # beam search: a finished beam scores sum_logprob / length ** length_penalty
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    constraint: "Constraint | None" = None  # what the output must match (danlu/outputs/grammar.py)
    passthrough: dict[str, Any] | None = None  # a remote endpoint's own request fields (messages, tools, …)


@dataclass(frozen=True)
class Timings:
    """Measured once per generation and carried on the final chunk."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float
    prompt_tps: float
    decode_tps: float
    drafted_tokens: int = 0  # speculative decoding (backends/speculative.py): tokens the drafter proposed
    accepted_tokens: int = 0  # ... and how many of them the target kept

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / drafted tokens; None when nothing was drafted."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output: whole UTF-8 characters only, the token ids that produced them."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | None while streaming
    timings: Timings | None = None


@dataclass(frozen=True)
class EmbeddingResult:
    """Vectors for a list of texts, in order, with the tokens each text took (special tokens included).
    `vectors` is a float32 numpy array of shape (texts, dimensions); `as_lists()` gives JSON-ready lists."""

    vectors: Any
    token_counts: list[int]
    normalized: bool = False  # L2-normalised: cosine similarity is the dot product
    truncated: list[bool] = field(default_factory=list)  # which texts were cut to the model's length

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1]) if len(self.vectors) else 0

    def as_lists(self) -> list[list[float]]:
        return self.vectors.tolist()

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class LoadPlan:
    """How to load: where the weights are and how to place them (fit fills this in)."""

    path: Path
    n_ctx: int = 4096
    n_threads: int = 2
    gpu_layers: int = 0
    use_mmap: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """A loaded model. Token ids are plain ints; text in and out is str."""

    spec: ModelSpec | None
    capabilities: Capabilities
    n_ctx: int

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> bytes: ...

    def token_to_piece(self, token_id: int) -> bytes: ...

    def eos_token_ids(self) -> set[int]: ...

    def bos_token_id(self) -> int | None: ...

    def chat_template(self) -> str | None: ...

    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]: ...

    def next_token_logits(self, ids: Sequence[int]) -> Any: ...

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float: ...

    def save_state(self) -> Any: ...

    def restore_state(self, state: Any) -> None: ...

    def close(self) -> None: ...


class Embedder(Protocol):
    """An engine for vectors or relevance scores (backends/llamacpp_embed.py); it has `capabilities.embeddings`
    or `capabilities.rerank`, and its chat calls (generate, logits, state) raise. Inputs longer than
    `max_tokens` are refused unless `truncate`; `on_progress(done, total)` counts texts."""

    spec: ModelSpec | None
    capabilities: Capabilities
    max_tokens: int
    dimensions: int
    pooling: str  # mean | cls | last | rank
    query_prefix: str  # what the catalog says a search query starts with ("" if nothing)

    def embed(self, texts: Sequence[str], *, normalize: bool | None = None, truncate: bool = False,
              dimensions: int | None = None, on_progress: Any = None) -> EmbeddingResult: ...

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool = False,
               on_progress: Any = None) -> list[float]: ...

    def as_queries(self, texts: Sequence[str]) -> list[str]: ...

    def close(self) -> None: ...


def complete(engine: Engine, ids: Sequence[int], params: GenerationParams) -> tuple[str, Chunk]:
    """The non-streaming call: the whole text and the final chunk (finish reason, timings)."""
    parts: list[str] = []
    last = Chunk("", [])
    for chunk in engine.generate(ids, params):
        parts.append(chunk.text)
        last = chunk
    return "".join(parts), last


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two id lists share: the part of a prompt a cache can reuse."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def describe_variant(spec: ModelSpec, variant: Variant) -> str:
    """A short human label such as 'qwen2.5-coder-1.5b-instruct:q4_k_m'."""
    return f"{spec.id}:{variant.name}"
