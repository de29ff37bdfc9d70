"""Real weights in embedding mode: the chat GGUFs `make models` pulls (qwen2.5-coder-1.5b-instruct, gemma-3-270m),
loaded once per session through llama.cpp's embedding mode with the pooling danlu picks for a decoder that
declares none (mean). Paraphrases must come out closer than unrelated sentences — for a model never trained
for embeddings that is a low bar, and it is the bar issue 15 sets; bench/embed_speed.py records the margins
for mean and last-token pooling side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from danlu.backends.base import LoadPlan
from danlu.backends.llamacpp_embed import load

pytestmark = pytest.mark.weights

# (sentence, its paraphrase, an unrelated sentence)
TRIPLETS = [
    ("今天天气很好，阳光明媚。", "今天是个晴天，天气不错。", "这台电脑的内存不够用了。"),
    ("我想预订一张去北京的火车票。", "帮我买一张到北京的高铁票。", "这道菜太咸了，不好吃。"),
    ("他每天早上都去公园跑步。", "他每天清晨在公园里慢跑。", "股市今天大幅下跌。"),
    ("这本书的内容非常有趣。", "这本书写得很有意思。", "明天下午三点开会。"),
]


@pytest.fixture(scope="session")
def qwen_embedder(qwen_path):
    engine = load(None, None, LoadPlan(qwen_path, n_ctx=512, n_threads=2))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def gemma_embedder(gemma_path):
    engine = load(None, None, LoadPlan(gemma_path, n_ctx=512, n_threads=2))
    yield engine
    engine.close()


def cosines(engine, triplet: tuple[str, str, str]) -> tuple[float, float, float]:
    """cos(sentence, paraphrase), cos(sentence, unrelated), cos(paraphrase, unrelated) on unit vectors."""
    v = engine.embed(list(triplet)).vectors
    return float(v[0] @ v[1]), float(v[0] @ v[2]), float(v[1] @ v[2])


@pytest.mark.parametrize("triplet", TRIPLETS, ids=lambda t: t[0][:6])
@pytest.mark.parametrize("which", ["qwen_embedder", "gemma_embedder"])
def test_chinese_paraphrases_are_closer_than_an_unrelated_pair(request, which, triplet):
    engine = request.getfixturevalue(which)
    same, other, other2 = cosines(engine, triplet)
    assert same > max(other, other2), (same, other, other2)


def test_a_chat_gguf_embeds_with_mean_pooling_into_unit_vectors_of_its_width(qwen_embedder):
    result = qwen_embedder.embed(["你好", "今天天气很好，阳光明媚。"])
    assert qwen_embedder.pooling == "mean" and result.dimensions == 1536  # qwen2.5-1.5b's hidden size
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)
    assert result.token_counts[0] == len(qwen_embedder.tokenize("你好"))  # no BOS for Qwen, nothing added


def test_batch_of_32_gives_the_vectors_of_one_at_a_time(qwen_embedder):
    texts = [s for triplet in TRIPLETS for s in triplet] * 3
    together = qwen_embedder.embed(texts[:32]).vectors
    alone = np.stack([qwen_embedder.embed([t]).vectors[0] for t in texts[:4]])
    # q4_K matmuls take other kernels for a 32-text batch than for one text (rows ~0.03 move by up to 2e-3)
    assert np.min(np.sum(together[:4] * alone, axis=1)) > 0.9995  # measured 0.99992, whatever the neighbours


def test_danlu_embed_on_a_pulled_chat_model(home_with_models):
    out = subprocess.run([sys.executable, "-m", "danlu.cli", "--lang", "en", "embed", "gemma-3-270m", "--json",
                          "你好", "再见"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "DANLU_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model"] == "gemma-3-270m:q4_k_m" and body["dimensions"] == 640 and len(body["data"]) == 2
