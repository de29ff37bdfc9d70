"""The llama.cpp backend on real weights (gemma-3-270m): tokens, streaming, stops, KV reuse, logits, state."""

import numpy as np
import pytest

from danlu.backends.base import GenerationParams, LoadPlan, complete
from danlu.backends.llamacpp import load
from danlu.errors import DanluError

pytestmark = pytest.mark.weights

GREEDY = dict(temperature=0.0, top_k=1)


def test_special_text_is_one_control_token_only_when_asked(gemma_engine):
    as_control = gemma_engine.tokenize("<start_of_turn>", special=True)
    as_text = gemma_engine.tokenize("<start_of_turn>", special=False)
    assert len(as_control) == 1
    assert len(as_text) > 1 and as_control[0] not in as_text


def test_temperature_zero_is_deterministic(gemma_engine):
    ids = gemma_engine.tokenize("<bos>长城是", special=True)
    first, _ = complete(gemma_engine, ids, GenerationParams(max_tokens=12, **GREEDY))
    gemma_engine.llm.reset()
    second, _ = complete(gemma_engine, ids, GenerationParams(max_tokens=12, **GREEDY))
    assert first == second and first


def test_stream_is_whole_characters_and_matches_detokenized_ids(gemma_engine):
    ids = gemma_engine.tokenize("<bos>请用中文介绍一下北京的历史：", special=True)
    chunks = list(gemma_engine.generate(ids, GenerationParams(max_tokens=40, **GREEDY)))
    text = "".join(c.text for c in chunks)
    out_ids = [t for c in chunks for t in c.token_ids]
    assert "\ufffd" not in text
    assert text == gemma_engine.detokenize(out_ids).decode("utf-8", "ignore")
    assert chunks[-1].finish_reason == "length" and chunks[-1].timings.completion_tokens == 40


def test_user_stop_string_ends_generation_and_is_not_emitted(gemma_engine):
    ids = gemma_engine.tokenize("<bos>1, 2, 3, 4, 5, 6,", special=True)
    text, last = complete(gemma_engine, ids, GenerationParams(max_tokens=30, stop=[" 9"], **GREEDY))
    assert last.finish_reason == "stop"
    assert "9" not in text and "8" in text


def test_model_stop_ids_stay_active_with_user_stops(gemma_engine):
    params = GenerationParams(stop=["never"], stop_token_ids=[])
    assert {1, 106} <= gemma_engine.eos_token_ids() | set(params.stop_token_ids)


def test_kv_cache_reuse_processes_only_new_tokens(gemma_engine):
    prefix = gemma_engine.tokenize("<bos>" + "今天天气很好。" * 30, special=True)
    complete(gemma_engine, prefix, GenerationParams(max_tokens=4, **GREEDY))
    longer = prefix + gemma_engine.tokenize("我们去公园吧。")
    _, last = complete(gemma_engine, longer, GenerationParams(max_tokens=4, **GREEDY))
    assert last.timings.cached_tokens == len(prefix)
    assert last.timings.prompt_tokens - last.timings.cached_tokens == len(longer) - len(prefix)


def test_next_token_logits_agree_with_greedy_generation(gemma_engine):
    ids = gemma_engine.tokenize("<bos>中国的首都是", special=True)
    gemma_engine.llm.reset()
    logits = gemma_engine.next_token_logits(ids)
    gemma_engine.llm.reset()
    text, last = complete(gemma_engine, ids, GenerationParams(max_tokens=1, **GREEDY))
    assert logits.shape == (gemma_engine.llm.n_vocab(),)
    assert gemma_engine.detokenize([int(np.argmax(logits))]).decode() == text


def test_loglikelihood_prefers_the_true_continuation(gemma_engine):
    ctx = gemma_engine.tokenize("<bos>中国的首都是", special=True)
    right = gemma_engine.loglikelihood(ctx, gemma_engine.tokenize("北京"))
    wrong = gemma_engine.loglikelihood(ctx, gemma_engine.tokenize("香蕉"))
    assert right < 0 and right > wrong


def test_loglikelihood_of_many_tokens_equals_sum_of_steps(gemma_engine):
    ctx = gemma_engine.tokenize("<bos>春眠不觉晓，", special=True)
    cont = gemma_engine.tokenize("处处闻啼鸟")
    total = gemma_engine.loglikelihood(ctx, cont)
    steps = sum(gemma_engine.loglikelihood(ctx + cont[:i], [cont[i]]) for i in range(len(cont)))
    # A batched decode and token-by-token decodes take different quantized-matmul paths in
    # llama.cpp (seen here: logits differ by up to ~0.8), so agreement is per token, not exact;
    # an off-by-one position would be off by several nats per token.
    assert total == pytest.approx(steps, abs=0.15 * len(cont))


def test_saved_state_restores_the_same_continuation(gemma_engine):
    ids = gemma_engine.tokenize("<bos>从前有座山，", special=True)
    gemma_engine.next_token_logits(ids)
    state = gemma_engine.save_state()
    a = gemma_engine.next_token_logits(ids + gemma_engine.tokenize("山里"))
    gemma_engine.next_token_logits(gemma_engine.tokenize("<bos>完全不同的内容", special=True))
    gemma_engine.restore_state(state)
    b = gemma_engine.next_token_logits(ids + gemma_engine.tokenize("山里"))
    assert np.allclose(a, b, atol=1e-3)


def test_prompt_longer_than_context_is_a_clear_error(gemma_path):
    engine = load(None, None, LoadPlan(gemma_path, n_ctx=64, n_threads=2))
    with pytest.raises(DanluError, match="超过上下文"):
        list(engine.generate(list(range(10, 90)), GenerationParams(max_tokens=4)))
    engine.close()


def test_truncated_file_is_refused_with_advice(gemma_path, tmp_path):
    broken = tmp_path / "half.gguf"
    with open(gemma_path, "rb") as src:
        broken.write_bytes(src.read(5_000_000))
    with pytest.raises(DanluError, match="danlu pull"):
        load(None, None, LoadPlan(broken, n_ctx=128, n_threads=2))


def test_not_a_gguf_is_refused(tmp_path):
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(DanluError, match="不是 GGUF"):
        load(None, None, LoadPlan(fake))
