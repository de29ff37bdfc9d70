"""EVA2.0's configuration, as the Hub repositories' `config.json` gives it.

The Hub files (thu-coai/EVA2.0-base, -large, -xlarge) hold only the shape: d_model, d_ff, d_kv,
num_heads, num_layers, num_decoder_layers, dropout_rate, init_method_std, initializer_factor,
layer_norm_epsilon, max_position_embeddings, use_cache and attn_scale. No `model_type`, no vocabulary
size, no token ids: those come from the defaults of the reference `EVAConfig`
(thu-coai/EVA, branch huggingface, src/model/configuration_eva.py), repeated here field by field.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedConfig


class EvaConfig(PreTrainedConfig):
    """The reference EVAConfig's fields and defaults; `attn_scale` is False unless the file says True."""

    model_type = "eva"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 256
    num_layers: int = 12
    num_decoder_layers: int | None = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    use_cache: bool = False
    use_scaled_init_for_output_weights: bool = True
    init_method_std: float = 0.02
    max_position_embeddings: int = 1024
    attn_scale: bool = False
    vocab_size: int = 30000
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 5
    eos_token_id: int | None = 4
    bos_token_id: int | None = 29810
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.bos_token_id  # the reference sets it to bos, always
        super().__post_init__(**kwargs)


def read_eva_config(folder: Path) -> EvaConfig:
    """config.json as the Hub ships it; keys the reference does not know are kept as attributes."""
    return EvaConfig(**json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))


def looks_like_eva(config: dict) -> bool:
    """A Hub EVA config: no model_type (or "eva"), T5-style names and the EVA-only `attn_scale`."""
    return config.get("model_type") in (None, "eva") and "attn_scale" in config and "d_kv" in config
