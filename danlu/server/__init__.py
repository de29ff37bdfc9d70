"""danlu serve: an OpenAI-compatible API over local (and remote) models.

A request flows protocol → service → scheduler → engine:
- `openai/` and `ollama/`: each wire protocol's request/response models and thin routes, nothing else.
- `calls.py`: what a request asks and what comes back, in danlu's terms; `service.py`: chat and completion
  over the scheduler (prompt, sampling, options); `generation.py`: one reply's events, parsed into thinking,
  content and tool calls; `thinking.py`: the thinking switch; `errors.py`: errors before a protocol shapes them.
- `resolver.py`: API model names → what to load; `scheduler.py`: which models are loaded, the memory budget,
  keep-alive, LRU eviction, bounded queues; `runners.py`: one-at-a-time engines behind the batched surface.
- `app.py`: `create_app(settings) -> FastAPI`; `security.py`: API key, bind and Host checks, CORS;
  `cli.py`: `danlu serve` and `danlu remote …`.

This module holds only `ServerSettings` (no FastAPI import), so backends and the CLI can use it cheaply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from danlu.config import Settings, get_settings

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ


class ServerSettings(BaseModel):
    """Everything `danlu serve` is started with; the CLI flags fill this, tests build it directly."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = Field(default_factory=list, description="loaded at start and listed first")
    api_key: str | None = Field(None, description="when set, /v1 and /api need `Authorization: Bearer KEY`")
    max_loaded: int = Field(2, ge=1, description="most models loaded at once; the least recently used goes first")
    keep_alive_s: float = Field(300.0, description="idle seconds before a model unloads; < 0 never")
    insecure: bool = Field(False, description="allow a non-loopback bind without an API key")
    trust_remote_code: bool = Field(False, description="let API calls load models that run their own code")
    n_ctx: int | None = Field(None, description="context per request; default: the danlu setting (4096)")
    parallel: int = Field(4, ge=1, description="requests decoded together per model")
    max_queue: int = Field(64, ge=0, description="requests waiting per model beyond `parallel`; then 429")
    cache_slots: int | None = Field(None, description=(
        "llama.cpp sequences kept as prefix cache (they share the KV pool's cells); default 2 × parallel"))
    kv_cells: int | None = Field(None, description=(
        "KV cells all sequences of a llama.cpp model share (one unified pool); default parallel × context"))
    sampling_defaults: dict[str, float] = Field(default_factory=dict, description=(
        "server-wide sampling defaults (temperature, top_p, max_tokens, …) between the user's and the model's"))
    memory_budget_bytes: int | None = Field(None, description="RAM/VRAM the loaded models may use; default: fit's")
    max_body_bytes: int = 8 << 20
    thinking: dict[str, bool] = Field(default_factory=dict, description=(
        "default thinking switch of hybrid models: model name → on/off, '*' for every model (`--thinking`)"))
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed to call the API")
    base: Settings = Field(default_factory=get_settings, description="DANLU_HOME and the other danlu settings")

    @property
    def context(self) -> int:
        return self.n_ctx or self.base.n_ctx

    @property
    def slots(self) -> int:
        """Sequences a llama.cpp model keeps: the decode lanes plus as many cached conversations (llama.cpp's
        limit is 256)."""
        return min(max(self.cache_slots or 2 * self.parallel, self.parallel), MAX_SEQUENCES)

    @property
    def pool_cells(self) -> int:
        """Cells of the unified KV pool, padded to 256 as llama.cpp does; never less than one context."""
        cells = max(self.kv_cells or self.context * self.parallel, self.context)
        return -(-cells // 256) * 256

    def fit_inputs(self) -> tuple[int, dict]:
        """What fit predicts a served llama.cpp model at: the pool's cells and the llama.cpp options."""
        layout = self.kv_layout()
        return layout["kv_cells"], {"swa_full": layout["swa_full"], "flash_attn": layout["flash_attn"],
                                    "n_seq": layout["slots"]}

    def kv_layout(self) -> dict:
        """How the batched llama.cpp engine lays out its KV cache (LoadPlan.extra); fit predicts from the same."""
        return {"parallel": self.parallel, "slots": self.slots, "kv_cells": self.pool_cells, "kv_unified": True,
                "flash_attn": True, "swa_full": False}

    def thinking_default(self, key: str) -> bool | None:
        """`--thinking MODEL=on|off` for this model (by id or id:variant), else `--thinking on|off`, else None."""
        model_id = key.partition(":")[0]
        for name in (key, model_id, "*"):
            if name in self.thinking:
                return self.thinking[name]
        return None
