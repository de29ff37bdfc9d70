"""Tiny random models with real tokenizers, saved to folders the way the Hub ships them.

No Hub here: each helper builds a config with a few layers, random weights and a tokenizer made
locally (a BERT character vocab, a byte-level BPE or a SentencePiece model trained on a few Chinese
sentences), and saves them in the real layout, so tests go through danlu's real loader. Each model
takes well under a second to build and a few MB on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CHINESE = [
    "你好，世界！今天天气很好。", "我们一起去公园玩吧。", "谢谢你，再见！", "请问这是什么？",
    "用户：你好\n小元：你好，有什么可以帮你？", "丹炉是一个本地的大模型工作台。", "Hello world, 这是一个测试。",
    "北京是中国的首都。", "人工智能正在改变世界。", "春眠不觉晓，处处闻啼鸟。",
]
CHARS = sorted({ch for text in CHINESE for ch in text if not ch.isspace()})


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


# --- tokenizers -------------------------------------------------------------------------------
def bert_char_tokenizer(folder: Path, extra: list[str] = ()) -> Any:
    """A BertTokenizerFast over single characters, like gpt2-dialogbot's 13,317-entry vocab."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS, *extra, "hello", "##lo", "world"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def byte_bpe_tokenizer(folder: Path, vocab_size: int = 400, specials: tuple[str, ...] = ("<|endoftext|>",),
                       eos: str = "<|endoftext|>", bos: str | None = "<|endoftext|>", extra_texts: list[str] = ()) -> Any:
    """A GPT-2-style byte-level BPE trained on the sentences above (DialoGPT, Qwen2, Llama 3 style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CHINESE * 5 + list(extra_texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=bos, unk_token=None)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def t5_sentencepiece_tokenizer(folder: Path) -> Any:
    """A SentencePiece unigram model saved as spiece.model, as ChatYuan and PromptCLUE ship it."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CHINESE * 5), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "spiece"), vocab_size=200, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    corpus.unlink()
    (folder / "spiece.vocab").unlink()
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(folder))


# --- models -----------------------------------------------------------------------------------
def _save(model: Any, folder: Path) -> Path:
    model.save_pretrained(str(folder))
    return folder


def gpt2_dialogbot(folder: Path) -> Path:
    """GPT2LMHeadModel + BertTokenizerFast (shibing624/gpt2-dialogbot-base-chinese's layout)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = bert_char_tokenizer(folder)
    seeded()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=None, pad_token_id=0)
    config.tokenizer_class = "BertTokenizerFast"
    return _save(GPT2LMHeadModel(config), folder)


def gpt2_dialogpt(folder: Path) -> Path:
    """GPT-2 with a byte-level BPE and eos-joined turns (liam168/chat-DialoGPT-small-zh's layout)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = byte_bpe_tokenizer(folder)
    seeded()
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return _save(GPT2LMHeadModel(config), folder)


def llama(folder: Path, hidden: int = 32, layers: int = 2, positions: int = 256, tokenizer: Any = None) -> Path:
    """A Llama with a byte-level BPE whose <s>/</s> are special tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or byte_bpe_tokenizer(folder, specials=("<unk>", "<s>", "</s>"), eos="</s>", bos="<s>")
    tokenizer.save_pretrained(str(folder))
    seeded()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=positions, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return _save(LlamaForCausalLM(config), folder)


def qwen2(folder: Path) -> Path:
    """A Qwen2 with ChatML control tokens and a chat template in tokenizer_config.json."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    tokenizer = byte_bpe_tokenizer(folder, specials=specials, eos="<|im_end|>", bos=None)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.save_pretrained(str(folder))
    seeded()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return _save(Qwen2ForCausalLM(config), folder)


def gemma3(folder: Path, sliding_window: int = 8) -> Path:
    """A Gemma3 text model with a tiny sliding window, so the cache's sliding layers get exercised."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = byte_bpe_tokenizer(folder, specials=("<pad>", "<eos>", "<bos>", "<end_of_turn>"), eos="<eos>", bos="<bos>")
    seeded()
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                              sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    return _save(Gemma3ForCausalLM(config), folder)


def t5(folder: Path) -> Path:
    """T5ForConditionalGeneration with a SentencePiece tokenizer (ChatYuan / PromptCLUE layout)."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = t5_sentencepiece_tokenizer(folder)
    seeded()
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return _save(T5ForConditionalGeneration(config), folder)


def remote_code_gpt2(folder: Path, broken: bool = False) -> Path:
    """A model whose config maps to Python code in its own folder, as ChatGLM3 and Qwen-1 do."""
    gpt2_dialogpt(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="danlu_tiny", architectures=["TinyRemoteModel"],
                  auto_map={"AutoConfig": "modeling_tiny.TinyRemoteConfig", "AutoModelForCausalLM": "modeling_tiny.TinyRemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    failure = "import transformers_stream_generator  # Qwen-1's remote code needs this old package\n" if broken else ""
    (folder / "modeling_tiny.py").write_text(
        f"{failure}from transformers import GPT2Config, GPT2LMHeadModel\n\n"
        "class TinyRemoteConfig(GPT2Config):\n    model_type = 'danlu_tiny'\n\n"
        "class TinyRemoteModel(GPT2LMHeadModel):\n    config_class = TinyRemoteConfig\n"
    )
    return folder


# --- LoRA ---------------------------------------------------------------------------------------
def lora_adapter(base: Path, folder: Path, new_tokens: list[str] = (), target: tuple[str, ...] = ("q_proj", "v_proj"),
                 seed: int = 1, scale: float = 0.5) -> Path:
    """A peft LoRA on a tiny Llama with non-zero weights; with new tokens it also saves the grown
    tokenizer and full embed/lm_head rows (Chinese-LLaMA-Alpaca's layout)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    modules_to_save = None
    if new_tokens:
        tokenizer.add_tokens(list(new_tokens))
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        modules_to_save = ["embed_tokens", "lm_head"]
        tokenizer.save_pretrained(str(folder))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(target), modules_to_save=modules_to_save))
    seeded(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; a trained adapter is not
                param.normal_(0, scale)
    peft_model.save_pretrained(str(folder))
    return folder


# --- RWKV -----------------------------------------------------------------------------------------
def rwkv4_pth(path: Path, vocab: int = 65536, n_embd: int = 32, n_layer: int = 2) -> Path:
    """An RWKV-4 checkpoint in the rwkv package's .pth layout (keys as in rwkv/model.py)."""
    seeded()
    c, ffn = n_embd, n_embd * 4
    w: dict[str, torch.Tensor] = {"emb.weight": torch.randn(vocab, c) * 0.1, "blocks.0.ln0.weight": torch.ones(c),
                                  "blocks.0.ln0.bias": torch.zeros(c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        w.update(_layer_norms(b, c))
        w.update({b + "att.time_mix_k": torch.rand(1, 1, c), b + "att.time_mix_v": torch.rand(1, 1, c),
                  b + "att.time_mix_r": torch.rand(1, 1, c), b + "att.time_decay": torch.randn(c),
                  b + "att.time_first": torch.randn(c), **_square(b + "att.", ("key", "value", "receptance", "output"), c),
                  b + "ffn.time_mix_k": torch.rand(1, 1, c), b + "ffn.time_mix_r": torch.rand(1, 1, c),
                  b + "ffn.key.weight": torch.randn(ffn, c) * 0.1, b + "ffn.value.weight": torch.randn(c, ffn) * 0.1,
                  b + "ffn.receptance.weight": torch.randn(c, c) * 0.1})
    return _save_pth(w, path, vocab, c)


def rwkv5_pth(path: Path, vocab: int = 65536, n_embd: int = 64, n_layer: int = 2, head_size: int = 32) -> Path:
    """An RWKV-5.2 (World v2) checkpoint: gated attention, per-head decay, time_faaaa."""
    seeded()
    c, h, ffn = n_embd, n_embd // head_size, int(n_embd * 3.5) // 32 * 32
    w: dict[str, torch.Tensor] = {"emb.weight": torch.randn(vocab, c) * 0.1, "blocks.0.ln0.weight": torch.ones(c),
                                  "blocks.0.ln0.bias": torch.zeros(c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        w.update(_layer_norms(b, c))
        w.update({b + f"att.time_mix_{x}": torch.rand(1, 1, c) for x in "kvrg"})
        w.update({b + "att.time_decay": torch.randn(h, head_size) * 0.5, b + "att.time_faaaa": torch.randn(h, head_size) * 0.5,
                  b + "att.ln_x.weight": torch.ones(c), b + "att.ln_x.bias": torch.zeros(c),
                  **_square(b + "att.", ("key", "value", "receptance", "output", "gate"), c),
                  b + "ffn.time_mix_k": torch.rand(1, 1, c), b + "ffn.time_mix_r": torch.rand(1, 1, c),
                  b + "ffn.key.weight": torch.randn(ffn, c) * 0.1, b + "ffn.value.weight": torch.randn(c, ffn) * 0.1,
                  b + "ffn.receptance.weight": torch.randn(c, c) * 0.1})
    return _save_pth(w, path, vocab, c)


def rwkv6_pth(path: Path, vocab: int = 65536, n_embd: int = 64, n_layer: int = 2, head_size: int = 32) -> Path:
    """An RWKV-6 (Finch) checkpoint: data-dependent token shift (time_maa_*) and decay (time_decay_w*)."""
    seeded()
    c, h, ffn, d_mix, d_decay = n_embd, n_embd // head_size, int(n_embd * 3.5) // 32 * 32, 32, 64
    w: dict[str, torch.Tensor] = {"emb.weight": torch.randn(vocab, c) * 0.1, "blocks.0.ln0.weight": torch.ones(c),
                                  "blocks.0.ln0.bias": torch.zeros(c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        w.update(_layer_norms(b, c))
        w.update({b + f"att.time_maa_{x}": torch.rand(1, 1, c) for x in ("x", "w", "k", "v", "r", "g")})
        w.update({b + "att.time_maa_w1": torch.randn(c, 5 * d_mix) * 0.01, b + "att.time_maa_w2": torch.randn(5, d_mix, c) * 0.01,
                  b + "att.time_decay_w1": torch.randn(c, d_decay) * 0.01, b + "att.time_decay_w2": torch.randn(d_decay, c) * 0.01,
                  b + "att.time_decay": torch.randn(1, 1, c) * 0.5, b + "att.time_faaaa": torch.randn(h, head_size) * 0.5,
                  b + "att.ln_x.weight": torch.ones(c), b + "att.ln_x.bias": torch.zeros(c),
                  **_square(b + "att.", ("key", "value", "receptance", "output", "gate"), c),
                  b + "ffn.time_maa_k": torch.rand(1, 1, c), b + "ffn.time_maa_r": torch.rand(1, 1, c),
                  b + "ffn.key.weight": torch.randn(ffn, c) * 0.1, b + "ffn.value.weight": torch.randn(c, ffn) * 0.1,
                  b + "ffn.receptance.weight": torch.randn(c, c) * 0.1})
    return _save_pth(w, path, vocab, c)


def rwkv7_pth(path: Path, vocab: int = 65536, n_embd: int = 64, n_layer: int = 2, head_size: int = 32) -> Path:
    """An RWKV-7 (Goose) checkpoint: the x070 layout (x_r…x_g, w0-2, a0-2, v0-2 from layer 1, g1-2, k_k, k_a, r_k)."""
    seeded()
    c, h, ffn, low = n_embd, n_embd // head_size, n_embd * 4, 16
    w: dict[str, torch.Tensor] = {"emb.weight": torch.randn(vocab, c) * 0.1, "blocks.0.ln0.weight": torch.ones(c),
                                  "blocks.0.ln0.bias": torch.zeros(c)}
    for i in range(n_layer):
        b = f"blocks.{i}."
        w.update(_layer_norms(b, c))
        w.update({b + f"att.{x}": torch.rand(1, 1, c) for x in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a")})
        w.update({b + f"att.{n}1": torch.randn(c, low) * 0.1 for n in "wavg"})
        w.update({b + f"att.{n}2": torch.randn(low, c) * 0.1 for n in "wavg"})
        w.update({b + "att.r_k": torch.randn(h, head_size) * 0.1, b + "att.ln_x.weight": torch.ones(c),
                  b + "att.ln_x.bias": torch.zeros(c), **_square(b + "att.", ("key", "value", "receptance", "output"), c),
                  b + "ffn.x_k": torch.rand(1, 1, c), b + "ffn.key.weight": torch.randn(ffn, c) * 0.1,
                  b + "ffn.value.weight": torch.randn(c, ffn) * 0.1})
    for name in ("v0", "v1", "v2"):  # published checkpoints have none: layer 0's value becomes v_first
        del w[f"blocks.0.att.{name}"]
    return _save_pth(w, path, vocab, c)


def _layer_norms(prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {prefix + f"{n}.{p}": (torch.ones(c) if p == "weight" else torch.zeros(c)) for n in ("ln1", "ln2") for p in ("weight", "bias")}


def _square(prefix: str, names: tuple[str, ...], c: int) -> dict[str, torch.Tensor]:
    return {prefix + f"{n}.weight": torch.randn(c, c) * 0.1 for n in names}


def _save_pth(w: dict[str, torch.Tensor], path: Path, vocab: int, c: int) -> Path:
    w["ln_out.weight"], w["ln_out.bias"] = torch.ones(c), torch.zeros(c)
    w["head.weight"] = torch.randn(vocab, c) * 0.1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in w.items()}, path)
    return path


# --- GGUF -----------------------------------------------------------------------------------------
def llama_gguf(folder: Path, tokenizer: Any = None, noise: float = 0.0) -> tuple[Path, Path]:
    """A tiny Llama written as GGUF (f32, byte-level BPE vocabulary) the way llama.cpp's converter lays it
    out, next to the HF folder it came from: (gguf file, hf folder). `noise` > 0 adds seeded Gaussian noise
    of that size to every weight: a related model of the same vocabulary (a draft for speculative decoding)."""
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = llama(folder / "hf", hidden=64, layers=2, positions=1024, tokenizer=tokenizer)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(str(hf)), AutoTokenizer.from_pretrained(str(hf))
    if noise:
        seeded(1)
        with torch.no_grad():
            for weight in model.parameters():
                weight.add_(torch.randn_like(weight) * noise)
    config, path = model.config, folder / "tiny-llama-f32.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    _gguf_hparams(writer, config)
    _gguf_vocab(writer, tokenizer)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    for name, tensor in model.state_dict().items():
        data = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            data = _rope_permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = _rope_permute(data, kv_heads)
        writer.add_tensor(_gguf_name(name), np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, hf


def _gguf_hparams(writer: Any, config: Any) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_file_type(0)


def _gguf_vocab(writer: Any, tokenizer: Any) -> None:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in special else 1 for token, _ in vocab])  # 3: control, 1: normal
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_add_bos_token(True)


def _rope_permute(weights: Any, heads: int) -> Any:
    """llama.cpp's converter reorders q/k rows for its RoPE layout; transformers undoes it on load."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _gguf_name(name: str) -> str:
    table = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if name in table:
        return table[name]
    layer = name.split(".")[2]
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    module = ".".join(name.split(".")[3:-1])
    return f"blk.{layer}.{parts[module]}.weight"
