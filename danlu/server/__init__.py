"""danlu serve: an OpenAI-compatible API over local (and remote) models.

- `protocol.py`: the OpenAI request/response shapes, modelled once in pydantic.
- `app.py`: `create_app(settings) -> FastAPI`; `routes.py`: the endpoints, thin.
- `scheduler.py`: which models are loaded, the memory budget, keep-alive, LRU eviction, bounded queues.
- `batching.py`: generation events, the prefix-cache slot table, runners for one-at-a-time engines.
- `security.py`: API key and bind checks; `cli.py`: `danlu serve` and `danlu remote …`.

This module holds only `ServerSettings` (no FastAPI import), so backends and the CLI can use it cheaply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from danlu.config import Settings, get_settings


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
    max_queue: int = Field(12, ge=0, description="requests waiting per model beyond `parallel`; then 429")
    cache_slots: int | None = Field(None, description="llama.cpp sequences kept as prefix cache; default 2 × parallel")
    sampling_defaults: dict[str, float] = Field(default_factory=dict, description=(
        "server-wide sampling defaults (temperature, top_p, max_tokens, …) between the user's and the model's"))
    memory_budget_bytes: int | None = Field(None, description="RAM/VRAM the loaded models may use; default: fit's")
    max_body_bytes: int = 8 << 20
    base: Settings = Field(default_factory=get_settings, description="DANLU_HOME and the other danlu settings")

    @property
    def context(self) -> int:
        return self.n_ctx or self.base.n_ctx
