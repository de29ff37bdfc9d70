"""EVA2.0's network: logits of danlu's port against a minimal re-implementation of the reference forward pass.

The reference is thu-coai/EVA (branch huggingface) src/model/eva_modeling.py. The re-implementation below
follows it step by step on the raw state dict — per-pair relative position buckets, the extended mask
added before the position bias, the layer norm's fp32 variance — and shares no code with danlu's module.
The checkpoint is the tiny one eva2_tiny.py writes with the Hub's key names, in fp16 like the Hub files.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from danlu.backends.base import LoadPlan
from danlu.backends.hf.eva2.config import EvaConfig
from danlu.backends.transformers_backend import load
from danlu.errors import DanluError
from eva2_tiny import VOCAB, tiny_config, write_tiny_eva

IDS = {t: i for i, t in enumerate(VOCAB)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_eva(tmp_path_factory.mktemp("eva2") / "tiny")


@pytest.fixture(scope="module")
def engine(folder):
    return load(None, None, LoadPlan(folder, n_ctx=512, n_threads=1))


# ---------------------------------------------------------------- the reference, re-implemented

def ref_bucket(relative: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> int:
    """`_relative_position_bucket` for one (memory - context) offset, in the reference's float32."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if relative > 0 else 0
        relative = abs(relative)
    else:
        relative = -min(relative, 0)
    max_exact = num_buckets // 2
    if relative < max_exact:
        return bucket + relative
    scaled = torch.log(torch.tensor(relative, dtype=torch.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + int((scaled * (num_buckets - max_exact)).to(torch.long))
    return bucket + min(large, num_buckets - 1)


def ref_position_bias(table: torch.Tensor, queries: int, keys: int, bidirectional: bool) -> torch.Tensor:
    buckets = torch.tensor([[ref_bucket(k - q, bidirectional) for k in range(keys)] for q in range(queries)])
    return table[buckets].permute(2, 0, 1).unsqueeze(0)  # (1, heads, q, k)


def ref_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def ref_attention(w: dict, prefix: str, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                  bias: torch.Tensor, c: dict) -> torch.Tensor:
    heads, d_kv = c["num_heads"], c["d_kv"]

    def split(t):  # [b, s, h·d] -> [b, h, s, d]
        return t.view(t.shape[0], t.shape[1], heads, d_kv).permute(0, 2, 1, 3)

    q, k, v = (split(F.linear(src, w[f"{prefix}.{n}.weight"])) for n, src in (("q", x), ("k", memory), ("v", memory)))
    scores = torch.matmul(q, k.transpose(-1, -2))
    if c["attn_scale"]:
        scores = scores / math.sqrt(d_kv)
    scores = scores + mask + bias
    context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
    return F.linear(context.view(context.shape[0], context.shape[1], heads * d_kv), w[f"{prefix}.o.weight"])


def ref_ff(w: dict, prefix: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    h = ref_norm(x, w[f"{prefix}.layer_norm.weight"], eps)
    gated = F.gelu(F.linear(h, w[f"{prefix}.DenseReluDense.wi_0.weight"])) * F.linear(h, w[f"{prefix}.DenseReluDense.wi_1.weight"])
    return x + F.linear(gated, w[f"{prefix}.DenseReluDense.wo.weight"])


def ref_forward(w: dict, c: dict, enc_ids: list[int], dec_ids: list[int]) -> torch.Tensor:
    """EVAModel.forward(input_ids, decoder_input_ids), eval mode, batch of one, fp32."""
    eps, n_enc, n_dec = c["layer_norm_epsilon"], len(enc_ids), len(dec_ids)
    h = w["encoder.embed_tokens.weight"][torch.tensor([enc_ids])]
    no_mask = torch.zeros(1, 1, n_enc, n_enc)
    bias = ref_position_bias(w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], n_enc, n_enc, True)
    for i in range(c["num_layers"]):
        p = f"encoder.block.{i}.layer"
        normed = ref_norm(h, w[f"{p}.0.layer_norm.weight"], eps)
        h = h + ref_attention(w, f"{p}.0.SelfAttention", normed, normed, no_mask, bias, c)
        h = ref_ff(w, f"{p}.1", h, eps)
    memory = ref_norm(h, w["encoder.final_layer_norm.weight"], eps)

    h = w["decoder.embed_tokens.weight"][torch.tensor([dec_ids])]
    causal = (1.0 - torch.tril(torch.ones(n_dec, n_dec)))[None, None] * torch.finfo(torch.float32).min
    bias = ref_position_bias(w["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"], n_dec, n_dec, False)
    zeros = torch.zeros(1, c["num_heads"], n_dec, n_enc)
    for i in range(c["num_layers"]):
        p = f"decoder.block.{i}.layer"
        normed = ref_norm(h, w[f"{p}.0.layer_norm.weight"], eps)
        h = h + ref_attention(w, f"{p}.0.SelfAttention", normed, normed, causal, bias, c)
        normed = ref_norm(h, w[f"{p}.1.layer_norm.weight"], eps)
        h = h + ref_attention(w, f"{p}.1.EncDecAttention", normed, memory, torch.zeros(1, 1, n_dec, n_enc), zeros, c)
        h = ref_ff(w, f"{p}.2", h, eps)
    return F.linear(ref_norm(h, w["decoder.final_layer_norm.weight"], eps), w["lm_head.weight"])[0]


def reference_weights(folder) -> dict:
    return {k: v.float() for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items()}


# ---------------------------------------------------------------- the comparisons

# Long enough to reach every bucket: past distance 128 the encoder's and the decoder's last buckets.
ENCODER = [IDS[t] for t in "你好 今天 天气 怎么样 ? <sep> 我 很 好 , 你 呢 ? <sep>".split()] * 10 + [IDS["<s_0>"]]
DECODER = [IDS["<s_0>"]] + [IDS[t] for t in "我 很 好 , 谢谢 你 ! 今天 天气 很好 。 北京 是 中国 的 首都 。 再见 世界 !".split()] * 7


def test_the_prompts_reach_the_last_relative_position_buckets():
    assert ref_bucket(1 - len(ENCODER), True) == 15 and ref_bucket(len(ENCODER) - 1, True) == 31
    assert ref_bucket(1 - len(DECODER), False) == 31


def test_logits_equal_the_reference_forward_pass_in_fp32(engine, folder):
    expected = ref_forward(reference_weights(folder), tiny_config(), ENCODER, DECODER)
    with torch.no_grad():
        got = engine.model(input_ids=torch.tensor([ENCODER]), decoder_input_ids=torch.tensor([DECODER])).logits[0]
    assert next(engine.model.parameters()).dtype == torch.float32
    assert got.shape == expected.shape == (len(DECODER), len(VOCAB))
    assert torch.max(torch.abs(got - expected)) <= 1e-5


def test_cached_decoding_gives_the_same_logits_token_by_token(engine, folder):
    expected = ref_forward(reference_weights(folder), tiny_config(), ENCODER, DECODER)
    cache = engine._cache(ENCODER)
    rows = torch.cat([engine._step(cache, [token]) for token in DECODER])
    assert torch.max(torch.abs(rows - expected)) <= 1e-5


def test_loglikelihood_and_first_token_logits_come_from_the_decoder(engine, folder):
    logits = ref_forward(reference_weights(folder), tiny_config(), ENCODER, DECODER)
    expected = torch.log_softmax(logits.double(), -1)
    context = ENCODER[:-2]  # a raw prompt: the engine closes it with <sep> <s_0>, as the reference does
    want = sum(float(expected[i, t]) for i, t in enumerate(DECODER[1:]))
    assert engine.loglikelihood(context, DECODER[1:]) == pytest.approx(want, abs=1e-4)
    assert torch.allclose(torch.from_numpy(engine.next_token_logits(context)), logits[0], atol=1e-5)


def test_the_hub_base_config_gets_the_reference_defaults():
    hub = {"d_model": 768, "d_ff": 3072, "d_kv": 64, "num_heads": 12, "num_layers": 12, "num_decoder_layers": 12,
           "dropout_rate": 0.0, "init_method_std": 0.001, "initializer_factor": 1.0, "layer_norm_epsilon": 1e-06,
           "max_position_embeddings": 512, "use_cache": False, "attn_scale": True}
    config = EvaConfig(**hub)
    assert (config.vocab_size, config.relative_attention_num_buckets, config.tie_word_embeddings) == (30000, 32, False)
    assert (config.bos_token_id, config.decoder_start_token_id, config.eos_token_id, config.pad_token_id) == (29810, 29810, 4, 5)
    assert config.attn_scale is True and EvaConfig().attn_scale is False  # EVA1.0's files say false


def test_the_checkpoint_loads_with_weights_only_and_refuses_other_pickles(tmp_path):
    folder = write_tiny_eva(tmp_path / "bad")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "extra": {"a python object": print}}, folder / "pytorch_model.bin")
    with pytest.raises(DanluError, match="weights_only=True"):
        load(None, None, LoadPlan(folder, n_ctx=512))


def test_role_embeddings_are_skipped_and_one_embedding_name_is_enough(tmp_path, engine):
    folder = write_tiny_eva(tmp_path / "variant")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.embed_tokens.weight"], state["decoder.embed_tokens.weight"]
    state["role_embeds.weight"] = torch.zeros(2, tiny_config()["d_model"], dtype=torch.float16)
    torch.save(state, folder / "pytorch_model.bin")
    other = load(None, None, LoadPlan(folder, n_ctx=512))
    assert torch.equal(other.model.encoder.embed_tokens.weight, engine.model.shared.weight)
    assert torch.equal(other.model.decoder.embed_tokens.weight, engine.model.shared.weight)


def test_a_megatron_checkpoint_is_refused_with_what_to_do(tmp_path):
    folder = write_tiny_eva(tmp_path / "megatron")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    fused = torch.cat([state.pop(f"encoder.block.0.layer.0.SelfAttention.{n}.weight") for n in "qkv"])
    state["encoder.blocks.0.self_attn.self_attn.project.weight"] = fused
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(DanluError, match="convert_to_hf"):
        load(None, None, LoadPlan(folder, n_ctx=512))


def test_token_ids_in_config_must_match_the_vocabulary(tmp_path):
    folder = write_tiny_eva(tmp_path / "mismatch")
    config = json.loads((folder / "config.json").read_text())
    del config["bos_token_id"]  # falls back to the reference's 29810, which this vocabulary does not have there
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DanluError, match="vocab.txt"):
        load(None, None, LoadPlan(folder, n_ctx=512))
