"""EVA2.0's encoder–decoder in PyTorch, with the parameter names of the Hub checkpoints.

What the reference computes (thu-coai/EVA, branch huggingface, src/model/eva_modeling.py; the Hub
files were made from the Megatron checkpoints by src/convert_to_hf.py, which splits the fused
`project` / `project_kv` matrices into q, k, v):
- a T5-style layer norm before every sublayer: no mean, no bias, the variance in fp32, eps from the
  config (1e-6); a residual add after it; a final norm at the end of each stack;
- attention without biases: q·kᵀ, divided by √d_kv when `attn_scale` (True for EVA2.0, False for
  EVA1.0), plus the mask and a relative position bias, softmax, ·v, then `o`;
- the relative position bias: 32 buckets up to distance 128, bidirectional in the encoder and causal
  in the decoder; only block 0 of each stack holds the table and every block reuses it; cross-attention
  has none;
- a gated feed-forward: gelu(wi_0·x) ⊙ (wi_1·x), then wo, with the exact (erf) GELU of the HF branch's
  `F.gelu` (the Megatron training code used the tanh approximation; the two differ below 1e-3);
- one token embedding shared by both stacks, not scaled; a separate `lm_head` on the decoder's final
  norm, not scaled (`tie_word_embeddings` is False);
- the reference class also holds `role_embeds`, but its forward never passes role ids and
  convert_to_hf.py never copied them into the Hub files, so they are not modelled.
Both stacks have `num_layers` blocks, as in the reference (which ignores `num_decoder_layers`).
The cache keeps the decoder's self-attention K/V per layer and the cross-attention K/V computed once
from the encoder output (the reference recomputes those every step: the same numbers, more work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .config import EvaConfig

MAX_DISTANCE = 128  # the reference's `_relative_position_bucket` default


class EvaLayerNorm(nn.Module):
    """Scale-only RMS norm; half-precision weights get a half-precision result, as in the reference."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        variance = hidden.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):  # the reference casts fp16 only (bf16 breaks there)
            hidden = hidden.to(self.weight.dtype)
        return self.weight * hidden


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int = MAX_DISTANCE) -> torch.Tensor:
    """Mesh-TensorFlow's buckets: exact for small distances, logarithmic up to max_distance."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)  # a causal decoder never looks ahead
    exact = num_buckets // 2
    scaled = torch.log(distance.float() / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    far = (exact + scaled.long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, far)


class EvaAttention(nn.Module):
    """Multi-head attention over given keys and values; block 0's self-attention owns the bias table."""

    def __init__(self, config: EvaConfig, has_relative_bias: bool = False):
        super().__init__()
        inner = config.d_kv * config.num_heads
        self.heads, self.d_kv, self.attn_scale = config.num_heads, config.d_kv, config.attn_scale
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)

    def heads_of(self, projected: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, heads·d_kv] → [batch, heads, tokens, d_kv]."""
        batch, tokens, _ = projected.shape
        return projected.view(batch, tokens, self.heads, self.d_kv).transpose(1, 2)

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        scores = torch.matmul(self.heads_of(self.q(query)), keys.transpose(-1, -2))
        if self.attn_scale:
            scores = scores / math.sqrt(self.d_kv)
        if bias is not None:
            scores = scores + bias
        context = torch.matmul(torch.softmax(scores, dim=-1), values)
        batch, _, tokens, _ = context.shape
        return self.o(context.transpose(1, 2).reshape(batch, tokens, self.heads * self.d_kv))


class EvaSelfAttentionLayer(nn.Module):
    def __init__(self, config: EvaConfig, has_relative_bias: bool):
        super().__init__()
        self.SelfAttention = EvaAttention(config, has_relative_bias)
        self.layer_norm = EvaLayerNorm(config.d_model, config.layer_norm_epsilon)


class EvaCrossAttentionLayer(nn.Module):
    def __init__(self, config: EvaConfig):
        super().__init__()
        self.EncDecAttention = EvaAttention(config)
        self.layer_norm = EvaLayerNorm(config.d_model, config.layer_norm_epsilon)


class EvaGatedGelu(nn.Module):
    def __init__(self, config: EvaConfig):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(hidden)) * self.wi_1(hidden))


class EvaFeedForwardLayer(nn.Module):
    def __init__(self, config: EvaConfig):
        super().__init__()
        self.DenseReluDense = EvaGatedGelu(config)  # the reference keeps T5's name for its gated GELU
        self.layer_norm = EvaLayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.DenseReluDense(self.layer_norm(hidden))


@dataclass
class EvaCache:
    """The decoder's state during one generation: self-attention K/V per layer (growing), cross K/V (fixed)."""

    cross: list[tuple[torch.Tensor, torch.Tensor]]
    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = self.keys or [None] * len(self.cross)
        self.values = self.values or [None] * len(self.cross)

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else int(self.keys[0].shape[2])

    def extend(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            keys = torch.cat([self.keys[layer], keys], dim=2)
            values = torch.cat([self.values[layer], values], dim=2)
        self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def reorder(self, order: torch.Tensor) -> None:
        """Beam search: row i now continues the hypothesis that was row order[i]."""
        self.keys = [k.index_select(0, order) for k in self.keys]
        self.values = [v.index_select(0, order) for v in self.values]


class EvaBlock(nn.Module):
    """Self-attention, cross-attention (decoder only), feed-forward; pre-norm with residuals."""

    def __init__(self, config: EvaConfig, has_relative_bias: bool, is_decoder: bool):
        super().__init__()
        layers: list[nn.Module] = [EvaSelfAttentionLayer(config, has_relative_bias)]
        if is_decoder:
            layers.append(EvaCrossAttentionLayer(config))
        layers.append(EvaFeedForwardLayer(config))
        self.layer = nn.ModuleList(layers)

    def encode(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attention = self.layer[0].SelfAttention
        normed = self.layer[0].layer_norm(hidden)
        keys, values = attention.heads_of(attention.k(normed)), attention.heads_of(attention.v(normed))
        return self.layer[-1](hidden + attention.attend(normed, keys, values, bias))

    def decode(self, hidden: torch.Tensor, bias: torch.Tensor, cache: EvaCache, index: int) -> torch.Tensor:
        attention = self.layer[0].SelfAttention
        normed = self.layer[0].layer_norm(hidden)
        keys, values = cache.extend(index, attention.heads_of(attention.k(normed)), attention.heads_of(attention.v(normed)))
        hidden = hidden + attention.attend(normed, keys, values, bias)
        cross = self.layer[1]
        hidden = hidden + cross.EncDecAttention.attend(cross.layer_norm(hidden), *cache.cross[index], None)
        return self.layer[-1](hidden)


class EvaStack(nn.Module):
    """The encoder or the decoder: the shared embedding, the blocks, a final norm."""

    main_input_name = "input_ids"  # what transformers' `generate` asks of an encoder

    def __init__(self, config: EvaConfig, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.num_buckets = config.relative_attention_num_buckets
        self.embed_tokens = embed_tokens
        self.block = nn.ModuleList([EvaBlock(config, i == 0, is_decoder) for i in range(config.num_layers)])
        self.final_layer_norm = EvaLayerNorm(config.d_model, config.layer_norm_epsilon)

    def position_bias(self, first: int, queries: int, keys: int) -> torch.Tensor:
        """[1, heads, queries, keys] for query positions first…first+queries-1 over key positions 0…keys-1."""
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        query_pos = torch.arange(first, first + queries, device=table.weight.device)[:, None]
        key_pos = torch.arange(keys, device=table.weight.device)[None, :]
        buckets = relative_position_bucket(key_pos - query_pos, not self.is_decoder, self.num_buckets)
        return table(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> BaseModelOutput:
        """The encoder pass (what transformers' `generate` calls through `get_encoder()`); a batch without padding."""
        if self.is_decoder:
            raise TypeError("the decoder runs through EvaForConditionalGeneration.decode")
        hidden = self.embed_tokens(input_ids)
        bias = self.position_bias(0, hidden.shape[1], hidden.shape[1])
        for block in self.block:
            hidden = block.encode(hidden, bias)
        return BaseModelOutput(last_hidden_state=self.final_layer_norm(hidden))

    def decode(self, input_ids: torch.Tensor, cache: EvaCache) -> torch.Tensor:
        past, tokens = cache.length, input_ids.shape[1]
        hidden = self.embed_tokens(input_ids)
        bias = self.position_bias(past, tokens, past + tokens)
        if tokens > 1:  # several new tokens at once: each sees only those before it
            ahead = torch.ones(tokens, past + tokens, dtype=torch.bool, device=bias.device).triu(past + 1)
            bias = bias.masked_fill(ahead, torch.finfo(bias.dtype).min)
        for index, block in enumerate(self.block):
            hidden = block.decode(hidden, bias, cache, index)
        return self.final_layer_norm(hidden)


class EvaForConditionalGeneration(PreTrainedModel, GenerationMixin):
    """EVA2.0 (EVA1.0's Hub files share the layout, with attn_scale false): `encode`, `new_cache`, `decode`
    for danlu's engine; `forward` and `generate` for transformers."""

    config_class = EvaConfig
    base_model_prefix = "eva"
    main_input_name = "input_ids"
    _keys_to_ignore_on_load_unexpected = [r"role_embeds"]

    def __init__(self, config: EvaConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = EvaStack(config, self.shared, is_decoder=False)
        self.decoder = EvaStack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_method_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, EvaLayerNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def get_encoder(self) -> EvaStack:
        return self.encoder

    def get_decoder(self) -> EvaStack:
        return self.decoder

    # --- what danlu's engine calls ------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids).last_hidden_state

    def new_cache(self, encoded: torch.Tensor) -> EvaCache:
        """An empty decoder cache with each layer's cross-attention K/V over `encoded`."""
        cross = []
        for block in self.decoder.block:
            attention = block.layer[1].EncDecAttention
            cross.append((attention.heads_of(attention.k(encoded)), attention.heads_of(attention.v(encoded))))
        return EvaCache(cross)

    def decode(self, decoder_ids: torch.Tensor, cache: EvaCache) -> torch.Tensor:
        """Logits [batch, tokens, vocab] for new decoder tokens; the cache grows by them."""
        return self.lm_head(self.decoder.decode(decoder_ids, cache))

    # --- what transformers calls (forward, generate) --------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, encoder_outputs: Any = None,
                return_dict: bool | None = None, **kwargs: Any) -> Seq2SeqLMOutput:
        """Whole-sequence logits without a cache (the reference forward with `use_cache=False`)."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids)
        encoded = encoder_outputs[0]
        logits = self.decode(decoder_input_ids, self.new_cache(encoded))
        return Seq2SeqLMOutput(logits=logits, encoder_last_hidden_state=encoded)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, encoder_outputs: Any = None,
                                      attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        """transformers' `generate` without a cache: the whole decoder sequence every step."""
        return {"decoder_input_ids": input_ids, "encoder_outputs": encoder_outputs, "attention_mask": attention_mask}

    def _reorder_cache(self, cache: Any, beam_idx: torch.Tensor) -> Any:
        return cache  # `generate` here keeps no cache (see prepare_inputs_for_generation)
