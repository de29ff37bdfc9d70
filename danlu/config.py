"""Settings: one pydantic model read from environment variables (DANLU_*) and defaults.

The CLI reads its defaults from here, so a flag, an env var and the default always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    """Physical-ish core count: llama.cpp is fastest with one thread per core."""
    return max(1, min(os.cpu_count() or 1, 8))


class Settings(BaseSettings):
    """Everything a user can configure; env vars are DANLU_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="DANLU_", extra="ignore")

    home: Path = Field(default=Path.home() / ".danlu", description="model store, sessions database, logs")
    default_model: str = "qwen2.5-coder-1.5b-instruct"
    lang: str = Field(default="zh", description="interface language: zh or en")
    threads: int = Field(default_factory=_default_threads)
    n_ctx: int = Field(default=4096, description="context window used when loading a model")
    gpu_layers: int = Field(default=-1, description="-1: as many as fit (all when a GPU is present)")

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
