"""EVA2.0 (thu-coai): a port of its encoder–decoder and tokenizer that loads the Hub checkpoints unchanged.

transformers has no EVA class and the Hub repositories (thu-coai/EVA2.0-base, -large, -xlarge) ship
config.json, pytorch_model.bin (fp16) and vocab.txt, no code. The facts come from the public
thu-coai/EVA repository (branch huggingface: src/model/*.py, src/convert_to_hf.py, src/eva_interactive.py);
the code here is danlu's own:
- config.py: the reference EVAConfig's fields and defaults;
- modeling.py: the network (a transformers PreTrainedModel with the Hub parameter names) and its cache;
- weights.py: the checkpoint read with `weights_only=True`, its keys checked;
- tokenizer.py: jieba + longest-match pieces over vocab.txt;
- layout.py: the reference chat loop's encoder input and decoding rules;
- engine.py: the Engine the rest of danlu talks to.
"""

from __future__ import annotations

from typing import Any

from danlu.backends.base import LoadPlan
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import BackendUnavailable, DanluError

from .config import EvaConfig, looks_like_eva
from .engine import EvaEngine
from .tokenizer import EvaTokenizer

__all__ = ["EvaConfig", "EvaEngine", "EvaTokenizer", "is_eva", "load"]


def is_eva(spec: ModelSpec | None, config: dict[str, Any]) -> bool:
    """The catalog says eva2, or a bare folder's config.json has EVA's fields."""
    return (spec is not None and spec.architecture == "eva2") or looks_like_eva(config)


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan, source: Any, config: dict[str, Any]) -> EvaEngine:
    """An EVA folder (config.json, pytorch_model.bin, vocab.txt) as an engine, placed as the plan says."""
    from danlu.backends.hf import loading

    from .weights import load_model

    _refuse_extras(source, plan)
    placement = loading.choose_placement(plan, config, variant)
    eva_config = EvaConfig(**config)
    tokenizer = EvaTokenizer.from_folder(source.directory)
    _check_ids(eva_config, tokenizer)
    model = load_model(source.directory, eva_config, placement.dtype, placement.device)
    limit = eva_config.max_position_embeddings or (spec.context_length if spec else plan.n_ctx)
    return EvaEngine(model, tokenizer, spec, min(plan.n_ctx, limit))


def _refuse_extras(source: Any, plan: LoadPlan) -> None:
    if source.adapters:
        raise BackendUnavailable("EVA2.0 暂不支持 LoRA 适配器 / LoRA adapters are not supported for EVA2.0: "
                                 "load the model without --lora")
    if source.gguf_file or plan.extra.get("quantize"):
        raise BackendUnavailable("EVA2.0 只能以 fp32/fp16/bf16 加载 / EVA2.0 loads only unquantized (fp32, fp16, bf16): "
                                 "drop --quantize, use the folder with pytorch_model.bin")


def _check_ids(config: EvaConfig, tokenizer: EvaTokenizer) -> None:
    """config.json's token ids (the reference defaults when absent) must name vocab.txt's special tokens."""
    expected = {"decoder_start_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.sep_id, "pad_token_id": tokenizer.pad_id}
    wrong = {k: getattr(config, k) for k, v in expected.items() if getattr(config, k) != v}
    if wrong:
        raise DanluError(f"config.json 的特殊 token 编号与 vocab.txt 不一致 / config.json's token ids {wrong} do not match "
                         f"vocab.txt ({expected}): the files come from different models")
