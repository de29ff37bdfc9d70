"""LoRA adapters as first-class things: $DANLU_HOME/adapters/NAME, listed with their base, rank, size, age.

An adapter is a peft folder (adapter_config.json + adapter_model.safetensors). Those `danlu finetune`
wrote also carry danlu.json (base as the user named it, prompt format, held-out loss before/after);
adapters copied in from elsewhere are listed from peft's config alone. Hidden folders (checkpoints,
half-written saves) are not adapters.

Served model ids: an adapter on base B is served as `B+NAME` (e.g. `gemma-3-270m+tea-shop`); `+` is
not allowed in catalog ids or adapter names, so the id splits back unambiguously (`split_model_id`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from danlu.config import Settings, get_settings
from danlu.errors import DanluError
from danlu.store import safe_name

ADAPTER_CONFIG = "adapter_config.json"
META = "danlu.json"
SEPARATOR = "+"


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter as `danlu adapters` shows it."""

    name: str
    path: Path
    base: str | None  # catalog id or path the adapter was trained on
    rank: int | None
    alpha: float | None
    size_bytes: int
    created: str  # ISO time
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    prompt_format: str | None = None  # the format it was trained with ("model-template": the base's own template)
    held_out: str | None = None  # the dialogue file it was validated on (its --val, else its --data)

    @property
    def model_id(self) -> str | None:
        """The id a server offers this adapter under: `BASE+NAME` (None when the base is unknown)."""
        return f"{self.base}{SEPARATOR}{self.name}" if self.base else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "model_id": self.model_id}


def adapter_dir(name: str, settings: Settings | None = None) -> Path:
    """Where adapter NAME lives; the name must be one safe path component."""
    try:
        safe_name(name)
    except DanluError:
        raise DanluError(f"适配器名不合法 / invalid adapter name: {name!r} (只能用字母、数字和 . _ - / only letters, "
                         f"digits and . _ -)") from None
    return (settings or get_settings()).adapters_dir / name


def list_adapters(settings: Settings | None = None) -> list[AdapterInfo]:
    """Every adapter in $DANLU_HOME/adapters, by name."""
    root = (settings or get_settings()).adapters_dir
    if not root.is_dir():
        return []
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [read_adapter(p) for p in folders if (p / ADAPTER_CONFIG).exists()]


def read_adapter(folder: Path) -> AdapterInfo:
    """An adapter's facts from danlu.json when present, else from peft's adapter_config.json."""
    config = _json(folder / ADAPTER_CONFIG)
    meta = _json(folder / META)
    result = meta.get("result", {})
    created = meta.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((folder / ADAPTER_CONFIG).stat().st_mtime))
    return AdapterInfo(folder.name, folder, meta.get("base") or config.get("base_model_name_or_path"), config.get("r"),
                       config.get("lora_alpha"), _size(folder), created, result.get("val_loss_before"),
                       result.get("val_loss_after"), meta.get("format"), _held_out(meta.get("config", {})))


def split_model_id(model_id: str) -> tuple[str, str] | None:
    """`gemma-3-270m+tea-shop` → ("gemma-3-270m", "tea-shop"); None for an id without an adapter."""
    base, sep, name = model_id.rpartition(SEPARATOR)
    return (base, name) if sep and base and name else None


def served_ids(settings: Settings | None = None) -> dict[str, AdapterInfo]:
    """Model id → adapter, for every adapter whose base is known (what a server lists in /v1/models)."""
    return {info.model_id: info for info in list_adapters(settings) if info.model_id}


def _held_out(config: dict[str, Any]) -> str | None:
    return config.get("val") or config.get("data")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except json.JSONDecodeError:
        return {}  # a damaged danlu.json should not hide the adapter; peft's config still describes it


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
