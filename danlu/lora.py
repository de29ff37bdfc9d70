"""LoRA adapters on a transformers model: apply in order, prove they took effect, merge and save.

Chinese-LLaMA-Alpaca ships only LoRA weights with an enlarged vocabulary (49,953 / 49,954 tokens):
the base model's embeddings are resized to the adapter's tokenizer first (their issue #181), and
Plus/Pro models take two adapters in order (LLaMA-Plus, then Alpaca-Plus), each merged before the
next. "The LoRA did nothing" is a common report, so every adapter is checked: how many layers it
reached and how far it moved the logits of a probe prompt; no match or no change is a warning.
SuperHOT adapters extend LLaMA to 8K and only work with linear RoPE scaling, factor 4.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from danlu.errors import DanluError

log = logging.getLogger(__name__)

SUPERHOT_FACTOR = 4.0
PROBE_TEXT = "你好，请介绍一下你自己。Hello!"


class AdapterWarning(UserWarning):
    """An adapter that matched no module or did not change the output."""


@dataclass
class AdapterReport:
    """What applying one adapter did: the proof that it is in the model."""

    path: Path
    modules: int  # LoRA layers injected into the model
    logit_change: float  # largest |Δ logit| on the probe prompt; 0.0 means no effect
    vocab_resized_to: int | None = None
    merged: bool = False

    @property
    def applied(self) -> bool:
        return self.modules > 0 and self.logit_change > 0


def apply_adapters(model: Any, tokenizer: Any, adapters: Sequence[Path], merge: bool = True) -> tuple[Any, list[AdapterReport]]:
    """Apply adapters in order; all but the last are merged so the next one sees their weights."""
    reports = []
    for i, adapter in enumerate(adapters):
        last = i == len(adapters) - 1
        model, report = apply_adapter(model, tokenizer, Path(adapter), merge=merge or not last)
        reports.append(report)
    return model, reports


def apply_adapter(model: Any, tokenizer: Any, adapter: Path, merge: bool = True) -> tuple[Any, AdapterReport]:
    """Resize to the adapter's vocabulary, inject it, measure its effect, merge if asked."""
    resized = resize_to_adapter(model, adapter)
    probe = _probe_ids(tokenizer, model)
    before = _probe_logits(model, probe)
    peft_model, modules = _inject(model, adapter)
    if modules == 0:
        return model, AdapterReport(adapter, 0, 0.0, resized)
    change = float((_probe_logits(peft_model, probe) - before).abs().max())
    if change == 0.0:
        _warn(f"LoRA {adapter.name} 已加载但输出没有变化（权重全为零或键名不匹配）/ "
              f"LoRA {adapter.name} loaded but does not change the output (zero weights or mismatched keys)")
    model = peft_model.merge_and_unload() if merge else peft_model
    return model, AdapterReport(adapter, modules, change, resized, merged=merge)


def _inject(model: Any, adapter: Path) -> tuple[Any, int]:
    """PeftModel over the base; (model, LoRA layer count). No matching module is a warning, not a crash."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError is a ValueError
        _warn(f"LoRA {adapter.name} 没有匹配到任何模块，未生效 / LoRA {adapter.name} matched no module and is not applied: {exc}")
        return model, 0
    for w in caught:
        if "missing adapter keys" in str(w.message).lower():
            _warn(f"LoRA {adapter.name}: {w.message}")
    return peft_model, sum(isinstance(m, LoraLayer) for m in peft_model.modules())


def adapter_vocab_size(adapter: Path) -> int | None:
    """The vocabulary the adapter was trained with: its tokenizer, else its saved embedding rows."""
    if any((adapter / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(str(adapter)))
    return _embedding_rows(adapter)


def _embedding_rows(adapter: Path) -> int | None:
    weights = adapter / "adapter_model.safetensors"
    if weights.exists():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            shapes = [f.get_slice(k).get_shape() for k in f.keys() if "embed_tokens" in k and "lora" not in k]
    elif (adapter / "adapter_model.bin").exists():
        state = torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
        shapes = [list(v.shape) for k, v in state.items() if "embed_tokens" in k and "lora" not in k]
    else:
        return None
    return int(shapes[0][0]) if shapes else None


def resize_to_adapter(model: Any, adapter: Path) -> int | None:
    """Grow the base's embeddings to the adapter's vocabulary (never shrink); the new size or None."""
    wanted = adapter_vocab_size(adapter)
    current = model.get_input_embeddings().weight.shape[0]
    if wanted is None or wanted <= current:
        return None
    log.info("resizing embeddings %d -> %d for %s", current, wanted, adapter)
    model.resize_token_embeddings(wanted, mean_resizing=False)
    return wanted


def _probe_ids(tokenizer: Any, model: Any) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = [i for i in tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"] if i < vocab][:16] or [0]
    return torch.tensor([ids], device=next(model.parameters()).device)


def _probe_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if getattr(model.config, "is_encoder_decoder", False):
            start = torch.full((1, 1), model.config.decoder_start_token_id or 0, device=ids.device)
            return model(input_ids=ids, decoder_input_ids=start).logits.float()
        return model(input_ids=ids).logits.float()


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, AdapterWarning, stacklevel=3)


def rope_overrides(adapters: Sequence[Path], config: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Config overrides for SuperHOT (linear RoPE ×4) when an adapter is one, or when asked explicitly."""
    factor = extra.get("rope_linear_factor")
    if factor is None and any(is_superhot(a) for a in adapters):
        factor = SUPERHOT_FACTOR
    if not factor:
        return {}
    theta = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0
    positions = int(config.get("max_position_embeddings", 2048) * float(factor))
    return {"rope_parameters": {"rope_type": "linear", "factor": float(factor), "rope_theta": theta},
            "max_position_embeddings": positions}


def is_superhot(adapter: Path) -> bool:
    """SuperHOT adapters say so in their path (the store keeps them under the catalog id `superhot-8k`)
    or in their adapter config."""
    config = adapter / "adapter_config.json"
    text = str(adapter.resolve()) + (config.read_text(encoding="utf-8") if config.exists() else "")
    return "superhot" in text.lower()


def merge_and_save(base: Path, adapters: Sequence[Path], out_dir: Path, dtype: str | None = None) -> list[AdapterReport]:
    """Merge adapters into full weights and save them (safetensors) with the right tokenizer."""
    from danlu.backends.hf.loading import Placement, Source, _dtype, _tokenizer_dir, load_model, read_config
    from transformers import AutoTokenizer

    source = Source(Path(base), None, [Path(a) for a in adapters])
    config = read_config(source)
    placement = Placement("cpu", _dtype(dtype or "fp32", "cpu", False))
    model = load_model(source, config, placement, False, rope_overrides(source.adapters, config, {}))
    tokenizer = AutoTokenizer.from_pretrained(str(_tokenizer_dir(source)))
    model, reports = apply_adapters(model, tokenizer, source.adapters, merge=True)
    if not any(r.applied for r in reports):
        raise DanluError("没有任何 LoRA 生效，不保存 / no adapter changed the model: nothing saved")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "danlu_merge.json").write_text(json.dumps([_report_dict(r) for r in reports], ensure_ascii=False, indent=2))
    return reports


def _report_dict(report: AdapterReport) -> dict[str, Any]:
    return {"adapter": str(report.path), "modules": report.modules, "logit_change": report.logit_change,
            "vocab_resized_to": report.vocab_resized_to}
