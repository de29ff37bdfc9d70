"""The Hub checkpoint into the model: `pytorch_model.bin` read with `weights_only=True`, keys checked.

The Hub files hold `shared.weight` and also `encoder.embed_tokens.weight` / `decoder.embed_tokens.weight`
(convert_to_hf.py writes all three). In the model they are one module, so loading assigns it three
times in module order and the decoder's copy is the one kept — as the reference's `from_pretrained`
does. The reference class also has `role_embeds`, which its forward never uses; such keys are skipped.
A file with other unknown or missing keys (a Megatron checkpoint from the main branch, another model)
is refused with the names it lacks, never half-loaded.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from danlu.errors import DanluError

from .config import EvaConfig
from .modeling import EvaForConditionalGeneration

SAFETENSORS, PICKLE = "model.safetensors", "pytorch_model.bin"
EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
UNUSED = re.compile(r"(^|\.)role_embeds\.")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """safetensors first; else the pickle, tensors only (weights_only=True), memory-mapped when it can be."""
    if (folder / SAFETENSORS).exists():
        from safetensors.torch import load_file

        return load_file(str(folder / SAFETENSORS))
    path = folder / PICKLE
    if not path.exists():
        raise DanluError(f"{folder} 里没有 {PICKLE} 或 {SAFETENSORS} / no {PICKLE} or {SAFETENSORS} in {folder}: "
                         f"pull the model again")
    try:
        return _torch_load(path)
    except pickle.UnpicklingError as exc:
        raise DanluError(
            f"{path} 里有张量以外的 Python 对象，已拒绝加载（weights_only=True）/ refused to load {path}: it holds "
            f"Python objects besides tensors (weights_only=True)"
        ) from exc


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a pre-zip (legacy) pickle cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def check_keys(expected: set[str], state: dict[str, torch.Tensor]) -> None:
    """Every parameter present (one of the three embedding names is enough); nothing unknown but role embeddings."""
    given = set(state)
    missing = expected - given - (set(EMBEDDINGS) if given & set(EMBEDDINGS) else set())
    unknown = {k for k in given - expected if not UNUSED.search(k)}
    if missing or unknown:
        sample = ", ".join(sorted(missing | unknown)[:4])
        raise DanluError(
            f"这不是 EVA2.0 的 Hugging Face 格式权重（缺少 {len(missing)} 个、多出 {len(unknown)} 个参数，例如 {sample}）/ "
            f"not an EVA2.0 checkpoint in the Hub's format ({len(missing)} missing, {len(unknown)} unknown keys, "
            f"e.g. {sample}): Megatron checkpoints from thu-coai/EVA's main branch need its src/convert_to_hf.py first"
        )


def load_model(folder: Path, config: EvaConfig, dtype: torch.dtype, device: str) -> EvaForConditionalGeneration:
    """Build the model without allocating random weights, then assign the checkpoint's tensors in `dtype`."""
    state = read_state_dict(folder)
    with torch.device("meta"):
        model = EvaForConditionalGeneration(config)
    check_keys(set(model.state_dict()), state)
    state = {k: v.to(dtype) for k, v in state.items() if not UNUSED.search(k)}
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # shapes that disagree with config.json
        raise DanluError(f"{folder} 的权重形状与 config.json 不符 / the weights in {folder} do not match "
                         f"config.json: {str(exc)[:300]}") from exc
    return model.to(device).eval()
