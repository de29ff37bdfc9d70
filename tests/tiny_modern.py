"""Tiny random 2025 models: a Qwen3 with the real Qwen3 chat template, its GGUF made by llama.cpp's own converter,
and an RWKV-7 checkpoint in the `rwkv` package's layout.

The Qwen3 tokenizer is built here the way Qwen ships one: a byte-level BPE behind Qwen2's pre-tokenizer regex,
ChatML control tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) and, as added tokens that are not special,
`<think>`, `</think>`, `<tool_call>`, `</tool_call>`, `<tool_response>`, `</tool_response>` (Qwen3's
tokenizer_config marks those `"special": false` too). The conftest fixtures build each model once per session.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import tiny_models as tm

TEMPLATES = Path(__file__).parent / "reference_templates"
#: Qwen2's pre-tokenizer (tokenizer.json of every Qwen2/2.5/3 model): llama.cpp calls it "qwen2".
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN3_ADDED = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>")
#: Text the BPE is trained on besides tiny_models.CHINESE, so the template's own words get merges.
TEMPLATE_WORDS = ["system user assistant\n\n", "# Tools\n\nYou may call one or more functions", "思考一下：先想再答。"]


def qwen3_tokenizer(folder: Path) -> Any:
    """The tokenizer described above, with tests/reference_templates/qwen3.jinja as its chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(CHATML), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tm.CHINESE * 5 + TEMPLATE_WORDS * 5, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN3_ADDED])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token=None, unk_token=None)
    tokenizer.chat_template = (TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def qwen3(folder: Path) -> Path:
    """A two-layer Qwen3ForCausalLM (q/k norms, head_dim apart from hidden/heads, tied embeddings as in 0.6B-4B)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen3_tokenizer(folder)
    tm.seeded()
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]  # as Qwen3 ships it
    model.save_pretrained(str(folder))
    return folder


# The converter fingerprints a BPE pre-tokenizer by hashing the token ids a fixed text encodes to, and refuses
# hashes it does not know. The tiny tokenizer uses Qwen2's pre-tokenizer exactly (QWEN2_SPLIT, then byte-level),
# but its 400-token vocabulary gives other ids, hence an unknown hash. This wrapper tells the converter what it
# would have detected for the real Qwen3 tokenizer ("qwen2"), and changes nothing else it does.
CONVERT_AS_QWEN2 = """
import runpy, sys
sys.path.insert(0, {converter!r})
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
sys.argv = ["convert_hf_to_gguf.py", {hf!r}, "--outfile", {out!r}, "--outtype", "f32"]
runpy.run_path({script!r}, run_name="__main__")
"""


def qwen3_gguf(hf: Path, out: Path, converter: Path) -> Path:
    """`hf` converted by llama.cpp's convert_hf_to_gguf.py (f32), its pre-tokenizer declared as qwen2."""
    code = CONVERT_AS_QWEN2.format(converter=str(converter), hf=str(hf), out=str(out),
                                   script=str(converter / "convert_hf_to_gguf.py"))
    done = subprocess.run([sys.executable, "-c", code], cwd=converter, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{done.stderr[-3000:]}")
    return out


def rwkv7(path: Path) -> Path:
    """An RWKV-7 checkpoint as the rwkv package's RWKV_x070 reads it (see tiny_models.rwkv7_pth)."""
    return tm.rwkv7_pth(path)
