"""llama.cpp's embedding mode (danlu/backends/llamacpp_embed.py) against transformers on the same weights.

Models: the real all-MiniLM-L6-v2 (sentence-transformers, mean pooling) and a tiny random BertModel with the
same real tokenizer, both converted with llama.cpp's converter (tests/embed_models.py says why this tokenizer).
The reference is computed here with torch: the transformers model's last hidden state, pooled the same way.

Tolerances: llama.cpp's CPU GELU is the tanh approximation read from an f16 table, where transformers' BERT uses
the exact erf form, and ggml sums in another order; on the real MiniLM (f32 GGUF) that moves unit vectors by
~2e-4 per value. So an f32 GGUF must agree to cosine ≥ 0.9999 and 2e-3 per value; an f16 GGUF also rounds every
weight to 11 bits (relative 5e-4 each, compounding over layers), so cosine ≥ 0.999. Pooled vectors before
normalisation are compared relative to their length (1e-2 for f32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import embed_models as em
from danlu.backends.base import LoadPlan
from danlu.backends.llamacpp_embed import load, pack
from danlu.catalog import NotAChatModel, kind_of, require_chat
from danlu.errors import DanluError

TEXTS = ["the weather is lovely today", "it is sunny outside", "he drove to the stadium",
         "a cat sat on the mat", "deep learning models read text", "hello world"]


def engine_for(path: Path, **extra):
    return load(None, None, LoadPlan(path, n_ctx=int(extra.pop("n_ctx", 512)), n_threads=2, extra=extra))


def reference(folder: Path, texts: list[str], pooling: str) -> np.ndarray:
    """transformers' last hidden state pooled like llama.cpp: mean over every token (CLS and SEP too, as
    sentence-transformers' attention-masked mean), the CLS token, or the last (SEP) token."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()
    rows = []
    for text in texts:
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        rows.append({"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[pooling].numpy())
    return np.stack(rows)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory) -> Path:
    return em.convert(em.minilm_dir(), tmp_path_factory.mktemp("minilm") / "minilm-f32.gguf")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    return em.tiny_bert(tmp_path_factory.mktemp("bert") / "hf", pooling="cls_token")


@pytest.fixture(scope="module")
def bert_gguf(bert_folder, tmp_path_factory) -> Path:
    return em.convert(bert_folder, tmp_path_factory.mktemp("bert-gguf") / "bert-f32.gguf")


@pytest.fixture(scope="module")
def bert(bert_gguf):
    engine = engine_for(bert_gguf)
    yield engine
    engine.close()


def test_real_minilm_gguf_gives_sentence_transformers_vectors(minilm_gguf):
    engine = engine_for(minilm_gguf)
    result = engine.embed(TEXTS)
    engine.close()
    expected = unit(reference(em.minilm_dir(), TEXTS, "mean"))
    assert engine.pooling == "mean" and result.normalized and result.dimensions == 384
    assert np.min(np.sum(result.vectors * expected, axis=1)) >= 0.9999
    assert np.max(np.abs(result.vectors - expected)) < 2e-3


def test_f16_gguf_agrees_to_f16_precision(bert_folder, tmp_path):
    engine = engine_for(em.convert(bert_folder, tmp_path / "bert-f16.gguf", "f16"))
    result = engine.embed(TEXTS)
    engine.close()
    cosines = np.sum(result.vectors * unit(reference(bert_folder, TEXTS, "cls")), axis=1)
    assert cosines.min() >= 0.999


def test_the_pooling_the_gguf_declares_is_used(bert, bert_folder):
    assert bert.pooling == "cls"
    result = bert.embed(TEXTS[:3], normalize=False)
    expected = reference(bert_folder, TEXTS[:3], "cls")
    assert np.linalg.norm(result.vectors - expected) / np.linalg.norm(expected) < 1e-2


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_each_pooling_gives_its_reference_vector(bert_gguf, bert_folder, pooling):
    engine = engine_for(bert_gguf, pooling=pooling)
    got = engine.embed(TEXTS[:4], normalize=False).vectors
    engine.close()
    refs = {name: reference(bert_folder, TEXTS[:4], name) for name in ("mean", "cls", "last")}
    errors = {name: np.linalg.norm(got - ref) / np.linalg.norm(ref) for name, ref in refs.items()}
    assert errors[pooling] < 1e-2
    assert all(err > 0.1 for name, err in errors.items() if name != pooling), errors  # the modes really differ


def test_batched_texts_get_the_vectors_they_get_alone(bert_gguf):
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(70)]  # > 64 sequences: several decodes
    engine = engine_for(bert_gguf, pack_tokens=64)  # few texts per decode, so the packing boundaries move
    together = engine.embed(texts).vectors
    alone = np.stack([engine.embed([t]).vectors[0] for t in texts[:8]])
    seen = []
    engine.embed(texts, on_progress=lambda done, total: seen.append((done, total)))
    engine.close()
    assert np.max(np.abs(together[:8] - alone)) < 1e-5
    assert seen[-1] == (70, 70) and len(seen) > 1


def test_packing_keeps_order_and_limits():
    groups = pack([5, 5, 5, 9, 1, 1], max_tokens=10, max_seqs=2)
    assert groups == [[0, 1], [2], [3, 4], [5]]
    assert [i for g in groups for i in g] == list(range(6))


def test_tokens_carry_the_special_tokens_transformers_adds(bert, bert_folder):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(bert_folder))
    result = bert.embed(["Hello world, 这是一个测试。"])
    assert result.token_counts == [len(hf("Hello world, 这是一个测试。").input_ids)]
    assert bert.tokenize("hello") == hf("hello", add_special_tokens=False).input_ids


def test_too_long_text_is_refused_or_truncated_when_asked(bert_gguf):
    engine = engine_for(bert_gguf, n_ctx=64)
    long = "the weather is lovely today " * 40
    with pytest.raises(DanluError, match="64"):
        engine.embed(["short", long])
    cut = engine.embed(["short", long], truncate=True)
    ids, was_cut = engine._encode(long, True, 1)
    engine.close()
    assert cut.token_counts[1] == 64 and cut.truncated == [False, True]
    assert was_cut and len(ids) == 64 and (ids[0], ids[-1]) == (101, 102)  # still [CLS] … [SEP]


@pytest.mark.parametrize("texts, message", [
    ([], "no texts"), ("a string, not a list", "no texts"), ([""], "text 0 is empty"),
    (["ok", "   "], "text 1 is empty"), (["ok", 3], "text 1 is not a string"),
])
def test_bad_input_is_a_clear_error(bert, texts, message):
    with pytest.raises(DanluError, match=message):
        bert.embed(texts)


def test_dimensions_keep_the_first_values_renormalised(bert):
    full, short = bert.embed(TEXTS[:2]).vectors, bert.embed(TEXTS[:2], dimensions=8).vectors
    assert short.shape == (2, 8)
    assert np.allclose(short, unit(full[:, :8]), atol=1e-6)
    with pytest.raises(DanluError, match="dimensions"):
        bert.embed(TEXTS[:1], dimensions=33)


def test_an_embedding_engine_does_not_chat_or_rerank(bert, bert_gguf):
    with pytest.raises(NotAChatModel):
        bert.generate([1, 2], None)
    with pytest.raises(DanluError, match="not a rerank model"):
        bert.rerank("q", ["d"])
    assert bert.capabilities.embeddings and not bert.capabilities.rerank and not bert.capabilities.logits
    with pytest.raises(DanluError, match="no classification head"):
        engine_for(bert_gguf, rerank=True)


def test_the_loader_picks_embedding_mode_for_an_encoder_gguf_and_refuses_to_chat(bert_gguf):
    from danlu import loader

    assert kind_of(str(bert_gguf)) == "embedding"
    with pytest.raises(NotAChatModel, match="embedding model"):
        require_chat(str(bert_gguf))
    loaded = loader.load(str(bert_gguf), n_ctx=128)
    try:
        assert loaded.resolved.backend == "llamacpp_embed" and loaded.engine.dimensions == 32
        with pytest.raises(NotAChatModel, match="danlu embed"):
            loaded.conversation()
    finally:
        loaded.engine.close()
