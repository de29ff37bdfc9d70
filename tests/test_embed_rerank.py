"""Rerank through llama.cpp's rank pooling: a tiny XLM-RoBERTa cross-encoder (bge-reranker-v2-m3's architecture,
`XLMRobertaForSequenceClassification` with one label) converted with llama.cpp's converter, scored against the
transformers model's logits on the same query–document pairs.

Why XLM-RoBERTa and not a BERT cross-encoder: llama.cpp's converter drops BERT's pooler (dense + tanh) and
llama.cpp feeds every token the segment-A type embedding, so a `BertForSequenceClassification` would score
differently by construction; XLM-RoBERTa has one segment type and keeps its head (dense + tanh + out_proj).
Tolerance: the GELU and summation differences of test_embed_engine.py, on logits of 2.7–3.6, come to 2.7e-3
(f32 GGUF; 4.4e-3 from an f16 one): 1e-2 is allowed, while the documents' scores lie ≥ 0.09 apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import embed_models as em
from danlu.backends.base import LoadPlan
from danlu.backends.llamacpp_embed import load
from danlu.catalog import NotAChatModel, kind_of
from danlu.errors import DanluError

QUERY = "今天天气很好"
DOCS = ["天气很好，我们去公园玩吧。", "a cat sat on the mat", "北京是中国的首都。", "人工智能正在改变世界。",
        "where is the train station", "谢谢你，再见！"]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    return em.tiny_cross_encoder(tmp_path_factory.mktemp("xlmr") / "hf")


@pytest.fixture(scope="module")
def reranker_gguf(cross_encoder, tmp_path_factory) -> Path:
    return em.convert(cross_encoder, tmp_path_factory.mktemp("xlmr-gguf") / "reranker-f32.gguf")


@pytest.fixture(scope="module")
def reranker(reranker_gguf):
    engine = load(None, None, LoadPlan(reranker_gguf, n_ctx=128, n_threads=2))
    yield engine
    engine.close()


def hf_logits(folder: Path, query: str, docs: list[str]) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        batch = tokenizer([query] * len(docs), docs, return_tensors="pt", padding=True)
        return model(**batch).logits[:, 0].tolist()


def test_rerank_scores_are_the_cross_encoders_logits(reranker, cross_encoder):
    scores = reranker.rerank(QUERY, DOCS)
    expected = hf_logits(cross_encoder, QUERY, DOCS)
    assert np.max(np.abs(np.array(scores) - expected)) < 1e-2
    assert np.argsort(scores).tolist() == np.argsort(expected).tolist()
    assert np.ptp(expected) > 0.5  # the documents really score apart, so the order above means something


def test_pairs_are_laid_out_as_transformers_lays_them_out(reranker, cross_encoder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder))
    assert reranker._pair(QUERY, DOCS[0], False, 0) == tokenizer(QUERY, DOCS[0]).input_ids  # <s> q </s></s> d </s>


def test_the_gguf_reads_as_a_reranker_and_cannot_embed_or_chat(reranker, reranker_gguf):
    assert kind_of(str(reranker_gguf)) == "rerank" and reranker.pooling == "rank"
    assert reranker.capabilities.rerank and not reranker.capabilities.embeddings
    with pytest.raises(DanluError, match="rerank"):
        reranker.embed(["text"])
    with pytest.raises(NotAChatModel):
        reranker.generate([0], None)


def test_a_long_document_is_refused_or_cut_keeping_the_query(reranker):
    long = "天气很好，我们去公园玩吧。" * 40
    with pytest.raises(DanluError, match="query plus document 1"):
        reranker.rerank(QUERY, [DOCS[0], long])
    ids = reranker._pair(QUERY, long, True, 1)
    assert len(ids) == reranker.max_tokens and ids[-1] == 2  # </s> still closes the pair
    assert len(reranker.rerank(QUERY, [DOCS[0], long], truncate=True)) == 2


@pytest.mark.parametrize("query, docs, message", [
    ("", DOCS, "query is empty"), (QUERY, [], "no documents"), (QUERY, ["ok", ""], "document 1 is empty"),
])
def test_bad_rerank_input_is_a_clear_error(reranker, query, docs, message):
    with pytest.raises(DanluError, match=message):
        reranker.rerank(query, docs)


def test_the_loader_loads_a_reranker_gguf_for_scores(reranker_gguf):
    from danlu import loader

    loaded = loader.load(str(reranker_gguf), n_ctx=128)
    try:
        assert loaded.engine.capabilities.rerank and len(loaded.engine.rerank(QUERY, DOCS[:2])) == 2
        with pytest.raises(NotAChatModel, match="rerank model"):
            loaded.conversation()
    finally:
        loaded.engine.close()
