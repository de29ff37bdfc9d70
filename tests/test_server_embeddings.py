"""Embeddings and rerank through the real server: the official openai client's `embeddings.create` (float and
base64), Ollama's /api/embed (official ollama client) and /api/embeddings, /v1/rerank in Jina/Cohere's shape,
an embedding model refused for chat, bad input answered 4xx in each API's shape; a tiny BERT and a tiny
XLM-RoBERTa cross-encoder converted by llama.cpp's converter, and gemma-3-270m's GGUF in embedding mode."""

from __future__ import annotations

import base64

import httpx2 as httpx
import numpy as np
import ollama
import openai
import pytest

import embed_models as em
from danlu.config import Settings
from danlu.server import ServerSettings
from test_server_harness import GEMMA, home_with, models_dir_of, running_server


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict:
    bert = em.convert(em.tiny_bert(tmp_path_factory.mktemp("bert") / "hf"),
                      tmp_path_factory.mktemp("bert-gguf") / "tiny-bert-f32.gguf")
    reranker = em.convert(em.tiny_cross_encoder(tmp_path_factory.mktemp("xlmr") / "hf"),
                          tmp_path_factory.mktemp("xlmr-gguf") / "tiny-reranker-f32.gguf")
    return {"bert": bert, "reranker": reranker}


@pytest.fixture(scope="module")
def url(ggufs, tmp_path_factory):
    settings = ServerSettings(base=Settings(home=tmp_path_factory.mktemp("embed-home"), threads=1), n_ctx=128,
                              models=[str(ggufs["bert"]), str(ggufs["reranker"])], keep_alive_s=-1)
    with running_server(settings) as base:
        yield base


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_embeddings_come_in_both_encodings(url):
    texts = ["今天天气很好", "the weather is nice today", "北京是首都"]
    floats = client(url).embeddings.create(model="tiny-bert-f32", input=texts)
    assert [d.index for d in floats.data] == [0, 1, 2] and len(floats.data[0].embedding) == 32
    assert floats.usage.prompt_tokens > len(texts)
    raw = client(url).embeddings.create(model="tiny-bert-f32", input="今天天气很好", encoding_format="base64")
    vector = raw.data[0].embedding
    decoded = np.frombuffer(base64.b64decode(vector), dtype="<f4") if isinstance(vector, str) else np.array(vector)
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)


def test_ollama_embed_and_the_older_embeddings_route(url):
    result = ollama.Client(host=url).embed(model="tiny-bert-f32", input=["一", "二"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 32 and result.prompt_eval_count > 0
    old = httpx.post(url + "/api/embeddings", json={"model": "tiny-bert-f32", "prompt": "一"}, timeout=60).json()
    assert np.allclose(old["embedding"], result.embeddings[0], atol=1e-6)


def test_rerank_orders_documents_by_the_cross_encoders_score(url):
    body = {"model": "tiny-reranker-f32", "query": "天气", "documents": ["晴天", {"text": "a cat"}, "下雨了"],
            "top_n": 2, "return_documents": True}
    answer = httpx.post(url + "/v1/rerank", json=body, timeout=60).json()
    scores = [r["relevance_score"] for r in answer["results"]]
    assert len(answer["results"]) == 2 and scores == sorted(scores, reverse=True)
    assert {r["index"] for r in answer["results"]} <= {0, 1, 2} and "text" in answer["results"][0]["document"]


def test_an_embedding_model_is_refused_for_chat(url):
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="tiny-bert-f32", messages=[{"role": "user", "content": "你好"}])
    assert "embedding" in caught.value.body["message"]


@pytest.mark.parametrize("path, body, shape", [
    ("/v1/embeddings", {"model": "tiny-bert-f32", "input": []}, "openai"),
    ("/v1/embeddings", {"model": "tiny-bert-f32", "input": [[1, 2, 3]]}, "openai"),
    ("/v1/embeddings", {"model": "tiny-bert-f32", "input": "x", "encoding_format": "int8"}, "openai"),
    ("/v1/embeddings", {"model": "tiny-bert-f32", "input": ["好"] * 3 + ["长" * 500]}, "openai"),
    ("/v1/rerank", {"model": "tiny-reranker-f32", "query": "", "documents": ["a"]}, "openai"),
    ("/v1/rerank", {"model": "tiny-bert-f32", "query": "q", "documents": ["a"]}, "openai"),
    ("/api/embed", {"model": "tiny-bert-f32", "input": [""]}, "ollama"),
    ("/api/embed", {"model": "no-such-model", "input": "x"}, "ollama"),
    ("/api/embed", {"model": "tiny-bert-f32"}, "ollama"),
])
def test_bad_embedding_input_is_a_4xx_in_that_apis_shape(url, path, body, shape):
    response = httpx.post(url + path, json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert (isinstance(error, dict) and error["message"]) if shape == "openai" else isinstance(error, str)


@pytest.mark.weights
def test_a_chat_gguf_in_embedding_mode_puts_paraphrases_closer(tmp_path, gemma_path):
    settings = ServerSettings(base=home_with(tmp_path, models_dir_of(gemma_path)), n_ctx=256, keep_alive_s=-1)
    with running_server(settings) as base:
        texts = ["今天天气很好，适合出去散步。", "今天天气不错，很适合外出走走。", "这台电脑的显卡是 RTX 3060。"]
        data = client(base).embeddings.create(model=GEMMA, input=texts).data
        a, b, c = (np.array(d.embedding) for d in data)
        assert a @ b > a @ c and len(a) == 640
        reply = client(base).chat.completions.create(model=GEMMA, messages=[{"role": "user", "content": "你好"}],
                                                     max_tokens=2)
        assert reply.choices[0].message.content is not None  # the chat engine is its own, beside the embedding one
        loaded = [m["name"] for m in httpx.get(base + "/api/ps", timeout=10).json()["models"]]
        assert sorted(loaded) == [f"{GEMMA}:q4_k_m", f"{GEMMA}:q4_k_m@embed"]
