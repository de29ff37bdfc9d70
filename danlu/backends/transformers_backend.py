"""transformers backend: PyTorch models through Hugging Face transformers (and peft for LoRA).

Covers what GGUF/llama.cpp does not: GPT-2 dialogue bots with a BERT tokenizer, DialoGPT, T5
(ChatYuan, PromptCLUE), EVA2.0 (danlu's own port in hf/eva2/), remote-code chat models (ChatGLM3,
Qwen-1, Skywork, BlueLM — only with --trust-remote-code), Llama-family bases with Chinese LoRA adapters, GPTQ and bitsandbytes on CUDA,
and GGUF files read by transformers itself (the cross-check against llama.cpp).
The pieces live in `danlu/backends/hf/`: loading.py (what may load, and how), causal.py and
seq2seq.py (the engines), tokens.py (token bytes for streaming).
"""

from __future__ import annotations

from danlu.catalog.schema import ModelSpec, Variant
from danlu.lora import apply_adapters, rope_overrides

from .base import Engine, LoadPlan
from .hf import eva2, loading
from .hf.causal import CausalEngine
from .hf.seq2seq import Seq2SeqEngine


def load(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan) -> Engine:
    """Load a model folder, a file in one, a .gguf file, or a LoRA adapter over a base."""
    loading.refuse_unsupported(spec)
    source = loading.resolve_source(plan)
    config = loading.read_config(source)
    if eva2.is_eva(spec, config):  # no class in transformers and no code on the Hub: danlu's port
        _set_threads(plan)
        return eva2.load(spec, variant, plan, source, config)
    trusted = loading.consent_to_remote_code(spec, plan, loading.remote_code_needed(spec, config))
    placement = loading.choose_placement(plan, config, variant)
    _set_threads(plan)
    with loading.remote_code_guard(spec, trusted):
        tokenizer = loading.load_tokenizer(source, trusted)
        model = loading.load_model(source, config, placement, trusted, rope_overrides(source.adapters, config, plan.extra))
    model, reports = apply_adapters(model, tokenizer, source.adapters, merge=plan.extra.get("merge_adapters", True))
    engine_class = Seq2SeqEngine if getattr(model.config, "is_encoder_decoder", False) else CausalEngine
    n_ctx = loading.context_limit(model, plan, spec)
    return engine_class(model, tokenizer, spec, n_ctx, remote_code=trusted, adapters=reports)


def _set_threads(plan: LoadPlan) -> None:
    """Respect the plan's thread count (torch would otherwise take every core); danlu draws its own progress."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if plan.n_threads and plan.n_threads > 0:
        torch.set_num_threads(plan.n_threads)
