"""Settings: one pydantic model read from environment variables (DANLU_*) and defaults.

The CLI reads its defaults from here, so a flag, an env var and the default always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from danlu.threads import DEFAULT_POLICY


def _default_threads() -> int:
    """Physical-ish core count: llama.cpp is fastest with one thread per core."""
    return max(1, min(os.cpu_count() or 1, 8))


class Settings(BaseSettings):
    """Everything a user can configure; env vars are DANLU_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="DANLU_", extra="ignore")

    home: Path = Field(default=Path.home() / ".danlu", description="model store, sessions database, logs")
    default_model: str = "qwen2.5-coder-1.5b-instruct"
    lang: str = Field(default="zh", description="interface language: zh or en")
    threads: int = Field(default_factory=_default_threads, description=(
        "llama.cpp threads for prompts and for decoding several streams at once"))
    decode_threads: int | None = Field(None, description=(
        "llama.cpp threads for one stream decoding alone (the server's engine); default: threads − 1, at least 1"))
    omp_wait: str = Field(DEFAULT_POLICY, description=(
        "how llama.cpp's threads wait at each barrier: passive | brief | spin | active (read when danlu is imported; "
        "OMP_WAIT_POLICY or GOMP_SPINCOUNT, when set, win)"))
    n_ctx: int = Field(default=4096, description="context window used when loading a model")
    gpu_layers: int = Field(default=-1, description="-1: as many as fit (all when a GPU is present)")

    @property
    def threads_decode(self) -> int:
        """One token at a time is a few hundred short operations, each ending at a barrier: on a machine whose
        cores are all in use one thread fewer waits less (measured in the README, "Threads on a busy machine")."""
        return self.decode_threads or max(1, self.threads - 1)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        """LoRA adapters by name (danlu finetune writes here; --lora NAME reads here)."""
        return self.home / "adapters"

    @property
    def db_path(self) -> Path:
        return self.home / "danlu.db"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


def get_settings() -> Settings:
    """Fresh settings each call, so tests can point DANLU_HOME at a temp dir."""
    return Settings()
