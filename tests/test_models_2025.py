"""Issue 14's model checks on tiny random models built here (tests/tiny_modern.py, session fixtures in conftest):

- a Qwen3ForCausalLM with the real Qwen3 chat template and `<think>` tokens runs through the transformers backend,
  and `enable_thinking` on/off renders exactly what the template renders;
- the same model converted by llama.cpp's converter runs through the llama.cpp backend and the batched server
  engine, its GGUF template giving the same prompt text (and ids) as the transformers path;
- an RWKV-7 checkpoint chats through the rwkv backend with its state kept across turns.
"""

from __future__ import annotations

import numpy as np
import pytest

from danlu.backends.base import GenerationParams, LoadPlan
from danlu.chat import tokenize_segments
from danlu.config import Settings
from danlu.formats import to_text
from danlu.loader import load

GREEDY = GenerationParams(max_tokens=6, temperature=0)
HELLO = [{"role": "user", "content": "你好"}]
# A reply with its thinking, then a new question: Qwen3's template drops thinking before the last user turn.
HISTORY = [{"role": "user", "content": "第一问"},
           {"role": "assistant", "content": "<think>\n先想一想\n</think>\n\n答一"},
           {"role": "user", "content": "第二问"}]


def settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"), threads=1)


@pytest.fixture(scope="module")
def hf(tiny_qwen3_dir, tmp_path_factory):
    return load(str(tiny_qwen3_dir), n_ctx=512, settings=settings(tmp_path_factory))


@pytest.fixture(scope="module")
def gguf(tiny_qwen3_gguf, tmp_path_factory):
    loaded = load(str(tiny_qwen3_gguf), n_ctx=512, settings=settings(tmp_path_factory))
    yield loaded
    loaded.engine.close()


@pytest.fixture(scope="module")
def template_tokenizer(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_qwen3_dir))


def rendered(loaded, messages, **options) -> str:
    return to_text(loaded.fmt.render(messages, True, **options))


# ---------------------------------------------------------------- transformers

def test_tiny_qwen3_loads_on_transformers_with_its_own_template(hf):
    assert hf.resolved.backend == "transformers"
    assert type(hf.engine).__name__ == "CausalEngine"
    assert hf.fmt.name == "model-template"
    assert "<think>" in hf.engine.chat_template()


def test_tiny_qwen3_chats_through_the_transformers_backend(hf):
    conv = hf.conversation(GREEDY)
    chunks = list(conv.send("你好"))
    assert chunks[-1].finish_reason in ("stop", "length")
    assert [m.role for m in conv.history] == ["user", "assistant"]
    assert sum(len(c.token_ids) for c in chunks) == chunks[-1].timings.completion_tokens <= 6


@pytest.mark.parametrize("messages", [HELLO, HISTORY], ids=["one-turn", "history-with-thinking"])
@pytest.mark.parametrize("thinking", [True, False])
def test_enable_thinking_renders_exactly_what_the_qwen3_template_renders(hf, template_tokenizer, messages, thinking):
    reference = template_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                       enable_thinking=thinking)
    assert rendered(hf, messages, enable_thinking=thinking) == reference


def test_enable_thinking_off_writes_the_empty_think_block_and_past_thinking_is_dropped(hf):
    on, off = rendered(hf, HISTORY), rendered(hf, HISTORY, enable_thinking=False)
    assert off == on + "<think>\n\n</think>\n\n"
    assert "先想一想" not in on and "答一" in on


# ---------------------------------------------------------------- llama.cpp: single stream and batched

def test_the_converted_gguf_keeps_the_qwen3_template_and_its_think_tokens(gguf, hf):
    assert gguf.resolved.backend == "llamacpp" and gguf.fmt.name == "model-template"
    assert gguf.engine.chat_template() == hf.engine.chat_template()
    think = gguf.engine.tokenize("<think>", special=True)
    assert len(think) == 1 and think == hf.engine.tokenize("<think>", special=True)


@pytest.mark.parametrize("thinking", [True, False])
def test_gguf_template_gives_the_transformers_prompt_text_and_ids(gguf, hf, thinking):
    segments = gguf.fmt.render(HISTORY, True, enable_thinking=thinking)
    assert to_text(segments) == rendered(hf, HISTORY, enable_thinking=thinking)
    assert tokenize_segments(gguf.engine, segments) == tokenize_segments(hf.engine, hf.fmt.render(
        HISTORY, True, enable_thinking=thinking))


def test_gguf_and_transformers_agree_on_the_next_token(gguf, hf):
    ids = tokenize_segments(hf.engine, hf.fmt.render(HELLO, True))
    ours, theirs = gguf.engine.next_token_logits(ids), hf.engine.next_token_logits(ids)
    assert int(np.argmax(ours)) == int(np.argmax(theirs))
    assert np.allclose(ours, theirs, atol=1e-3)  # f32 weights on both sides


def test_tiny_qwen3_gguf_chats_through_llamacpp_reusing_the_cache(gguf):
    conv = gguf.conversation(GREEDY)
    list(conv.send("你好"))
    first = len(conv.last_prompt.ids)
    final = list(conv.send("再见"))[-1]
    assert final.timings.cached_tokens >= first
    assert [m.role for m in conv.history] == ["user", "assistant"] * 2


def test_batched_server_engine_generates_what_the_single_stream_engine_does(gguf, tiny_qwen3_gguf):
    from danlu.backends import llamacpp_batched

    engine = llamacpp_batched.load(None, None, LoadPlan(path=tiny_qwen3_gguf, n_ctx=512, n_threads=1))
    try:
        assert engine.chat_template() == gguf.engine.chat_template()
        ids = tokenize_segments(engine, gguf.fmt.render(HELLO, True, enable_thinking=False))
        assert ids == tokenize_segments(gguf.engine, gguf.fmt.render(HELLO, True, enable_thinking=False))
        batched = [t for c in engine.generate(ids, GREEDY) for t in c.token_ids]
    finally:
        engine.close()
    single = [t for c in gguf.engine.generate(ids, GREEDY) for t in c.token_ids]
    assert batched == single and len(batched) >= 1


# ---------------------------------------------------------------- RWKV-7

def test_tiny_rwkv7_chats_through_the_rwkv_backend_keeping_its_state(tiny_rwkv7_pth, tmp_path_factory):
    loaded = load(str(tiny_rwkv7_pth), n_ctx=512, settings=settings(tmp_path_factory))
    assert loaded.resolved.backend == "rwkv" and loaded.fmt.name == "rwkv-world"
    assert int(loaded.engine.version) == 7
    conv = loaded.conversation(GREEDY)
    list(conv.send("你好"))
    first_prompt = list(conv.last_prompt.ids)
    final = list(conv.send("今天天气怎么样？"))[-1]
    # the second turn runs from the state the first left, not from the start of the conversation
    assert final.timings.cached_tokens >= len(first_prompt) > 0
    assert conv.last_prompt.ids[: len(first_prompt)] == first_prompt
    assert loaded.engine.cached_ids()[: len(first_prompt)] == first_prompt
    assert [m.role for m in conv.history] == ["user", "assistant"] * 2
