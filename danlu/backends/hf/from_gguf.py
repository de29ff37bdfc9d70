"""A GGUF as a transformers folder: dequantized once by transformers, cached, reused by every later load.

transformers reads a GGUF by dequantizing every tensor, which takes a minute or two for gemma-3-270m; the
result is saved once under $DANLU_HOME/cache/hf-from-gguf/ (keyed by the file's path, size and mtime), so
LoRA serving, training, merging and export after the first reuse it in seconds.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from danlu.config import Settings
from danlu.progress import say

CACHE_SUBDIR = "hf-from-gguf"


def gguf_as_hf(gguf: Path, settings: Settings, show_progress: bool = True) -> Path:
    """The GGUF dequantized by transformers and saved as safetensors, converted on first use only."""
    target = cache_dir_for(gguf, settings)
    if (target / "config.json").exists():
        return target
    say(f"首次把 {gguf.name} 转成 transformers 格式并缓存（小模型约 1–2 分钟）/ converting {gguf.name} for "
        f"transformers once and caching it in {target} (1–2 min for a small model)", enabled=show_progress)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _dequantize_to(gguf, staging)
    staging.rename(target)  # whole or not at all: a killed conversion leaves only the .partial folder
    return target


def cache_dir_for(gguf: Path, settings: Settings) -> Path:
    """$DANLU_HOME/cache/hf-from-gguf/<stem>-<hash of path, size, mtime>: a changed file gets a new copy."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return settings.home / "cache" / CACHE_SUBDIR / f"{gguf.stem}-{key}"


def _dequantize_to(gguf: Path, folder: Path) -> None:
    import torch

    from danlu.backends.hf import loading

    source = loading.Source(gguf.parent, gguf.name)
    tokenizer = loading.load_tokenizer(source, False)
    model = loading.load_model(source, {}, loading.Placement("cpu", torch.float32), False, {})
    _forget_gguf_origin(model)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _forget_gguf_origin(model: Any) -> None:
    """transformers marks a model read from GGUF as 'quantized' and refuses to save it; its weights are
    plain dequantized tensors by now (no GGUF kernels on CPU), so the marker is dropped."""
    model.hf_quantizer = None
    if "is_quantized" in vars(model):  # an instance flag in some transformers releases
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
