"""The base model a LoRA is trained on and merged into, as a transformers folder, and its prompt format.

A base is a catalog id (`gemma-3-270m`), a transformers folder, or a .gguf file, which is read through its
cached transformers copy (danlu/backends/hf/from_gguf.py): plain fp32 safetensors that peft trains on and
`danlu.lora.merge_and_save` merges into.

The prompt format is the one `danlu chat` would pick for the same base (loader.choose_format: the
model's own template first, then the catalog's named format), so a fine-tuned model is asked
questions the way it was taught. A bare folder with neither needs `--format NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.catalog.schema import ModelSpec
from danlu.config import Settings
from danlu.errors import DanluError
from danlu.formats import ChatFormat, get_format
from danlu.backends.hf.from_gguf import gguf_as_hf

@dataclass(frozen=True)
class Base:
    """A base model: how the user named it, its catalog facts (if any), the transformers folder to load, and the
    file or folder it was resolved to (the GGUF the folder was made from, when it was)."""

    ref: str
    spec: ModelSpec | None
    hf_dir: Path
    source: Path

    @property
    def model_id(self) -> str | None:
        return self.spec.id if self.spec else None


def prepare_base(ref: str, settings: Settings, show_progress: bool = True) -> Base:
    """Resolve `ref` like every other command does, and make sure a transformers folder exists for it."""
    from danlu.loader import resolve

    resolved = resolve(ref, settings=settings)
    if resolved.backend not in ("llamacpp", "transformers"):
        raise DanluError(f"{ref} 用 {resolved.backend} 后端，LoRA 训练只支持 transformers 能加载的模型 / {ref} runs on "
                         f"{resolved.backend}; LoRA training needs a model transformers can load")
    return Base(ref, resolved.spec, hf_folder(resolved.path, settings, show_progress), resolved.path)


def hf_folder(path: Path, settings: Settings, show_progress: bool = True) -> Path:
    """A transformers folder for a folder, a weight file inside one, or a .gguf (converted once, cached)."""
    path = Path(path).expanduser()
    if path.suffix == ".gguf":
        return gguf_as_hf(path, settings, show_progress)
    folder = path if path.is_dir() else path.parent
    if (folder / "adapter_config.json").exists():
        raise DanluError(f"{folder} 是 LoRA 适配器，不是基础模型 / {folder} is a LoRA adapter, not a base model")
    return folder


def training_format(model: Any, tokenizer: Any, base: Base, name: str | None) -> ChatFormat:
    """`--format NAME` if given, else what `danlu chat` picks for this base (template, then catalog)."""
    if name:
        return get_format(name)
    from danlu.backends.hf.common import HFEngineBase
    from danlu.loader import choose_format

    engine = HFEngineBase(model, tokenizer, base.spec, n_ctx=1)  # token side only: what choose_format reads
    if engine.chat_template() is None and base.spec is None:
        raise DanluError(f"{base.ref} 没有自带对话模板，目录里也没有它：用 --format 指定（如 chatml）/ {base.ref} ships no "
                         f"chat template and is not in the catalog: name a prompt format with --format (e.g. chatml)")
    return choose_format(engine, base.spec, "transformers")
