"""A tiny random EVA2.0 checkpoint in the Hub's layout, written without danlu's model code.

The folder holds what thu-coai/EVA2.0-base ships: config.json with the Hub's fields (plus the tiny
vocabulary's size and token ids, which the Hub files leave to the reference defaults), a fp16
pytorch_model.bin whose keys are the ones src/convert_to_hf.py writes — q/k/v cut out of one fused
projection, the embedding saved under three names — and a vocab.txt laid out like the real one
(`<unk>` `<s>` `</s>` `▃` `<sep>` `<pad>` … the sentinels last).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

HEAD = ["<unk>", "<s>", "</s>", "\u2583", "<sep>", "<pad>", "<mask>", "<eod>", "", ",", "\u2582"]
WORDS = [
    "的", "你", "好", "你好", "今天", "天气", "怎么样", "?", "!", "我", "是", "小", "明", "小明", "了解", "人工智能",
    "吗", "那", "很", "很好", "聪明", "谢谢", "夸奖", "会", "我会", "继续", "努力", "北京", "中国", "首都", "。",
    "世界", "再见", "天天", "天", "今", "...", ".", "h", "e", "l", "o", "w", "r", "d", "he", "llo", "A", "B", "C",
    "D", "答案", ":", "选", "项", "也", "学", "计算机", "呢", "新来", "请", "多", "关照", "<",
]
SENTINELS = [f"<s_{i}>" for i in range(4)]
VOCAB = HEAD + WORDS + SENTINELS

#: config.json as the Hub ships it for EVA2.0-base, with tiny dimensions.
HUB_FIELDS = {"d_model": 16, "d_ff": 24, "d_kv": 4, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2,
              "dropout_rate": 0.0, "init_method_std": 0.001, "initializer_factor": 1.0, "layer_norm_epsilon": 1e-06,
              "max_position_embeddings": 512, "use_cache": False, "attn_scale": True}


def tiny_config() -> dict:
    ids = {t: i for i, t in enumerate(VOCAB)}
    return {**HUB_FIELDS, "vocab_size": len(VOCAB), "bos_token_id": ids["<s_0>"], "eos_token_id": ids["<sep>"],
            "pad_token_id": ids["<pad>"]}


def _normal(g: torch.Generator, *shape: int, std: float = 0.3) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * std


def _norm(g: torch.Generator, d: int) -> torch.Tensor:
    return 1.0 + _normal(g, d, std=0.1)  # not all ones, so a misplaced norm shows in the logits


def _attention(state: dict, g: torch.Generator, prefix: str, c: dict, cross: bool) -> None:
    inner, d = c["d_kv"] * c["num_heads"], c["d_model"]
    if cross:  # convert_to_hf.py: project_q, and project_kv cut in two
        state[f"{prefix}.q.weight"] = _normal(g, inner, d)
        kv = _normal(g, 2 * inner, d)
        state[f"{prefix}.k.weight"], state[f"{prefix}.v.weight"] = kv[:inner], kv[inner:]
    else:  # the fused `project` cut in three
        q, k, v = _normal(g, 3 * inner, d).split(inner)
        state[f"{prefix}.q.weight"], state[f"{prefix}.k.weight"], state[f"{prefix}.v.weight"] = q, k, v
    state[f"{prefix}.o.weight"] = _normal(g, d, inner)


def _feed_forward(state: dict, g: torch.Generator, prefix: str, c: dict) -> None:
    d, ff = c["d_model"], c["d_ff"]
    state[f"{prefix}.DenseReluDense.wi_0.weight"] = _normal(g, ff, d)
    state[f"{prefix}.DenseReluDense.wi_1.weight"] = _normal(g, ff, d)
    state[f"{prefix}.DenseReluDense.wo.weight"] = _normal(g, d, ff)
    state[f"{prefix}.layer_norm.weight"] = _norm(g, d)


def tiny_state_dict(c: dict, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    d, vocab = c["d_model"], c["vocab_size"]
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    embedding = _normal(g, vocab, d, std=1.0)
    state["shared.weight"] = state["encoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"] = embedding
    state["lm_head.weight"] = _normal(g, vocab, d)
    for stack in ("encoder", "decoder"):
        for i in range(c["num_layers"]):
            block = f"{stack}.block.{i}.layer"
            _attention(state, g, f"{block}.0.SelfAttention", c, cross=False)
            state[f"{block}.0.layer_norm.weight"] = _norm(g, d)
            if i == 0:
                state[f"{block}.0.SelfAttention.relative_attention_bias.weight"] = _normal(g, 32, c["num_heads"])
            if stack == "decoder":
                _attention(state, g, f"{block}.1.EncDecAttention", c, cross=True)
                state[f"{block}.1.layer_norm.weight"] = _norm(g, d)
            _feed_forward(state, g, f"{block}.{2 if stack == 'decoder' else 1}", c)
        state[f"{stack}.final_layer_norm.weight"] = _norm(g, d)
    return state


def write_tiny_eva(folder: Path, seed: int = 0) -> Path:
    """config.json, pytorch_model.bin (fp16, like the Hub's) and vocab.txt in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    state = tiny_state_dict(config, seed)
    halves: dict[int, torch.Tensor] = {}  # keep shared storages shared, as the Hub file does
    fp16 = OrderedDict((k, halves.setdefault(id(v), v.half())) for k, v in state.items())
    torch.save(fp16, folder / "pytorch_model.bin")
    return folder
