"""danlu's beam search (backends/_beams.py) against transformers' own `generate` on the same model and logits.

Both run on the tiny EVA checkpoint: transformers through `EvaForConditionalGeneration.generate` (its
GenerationMixin, no cache: the whole decoder sequence every step), danlu through the engine (its own cache,
its own search). The settings are the reference script's: 4 beams, length_penalty 1.6, repetition_penalty
1.6, and generate's min_length 2, no_repeat_ngram_size 3, encoder_no_repeat_ngram_size 3; `<sep>` ends a
beam. The checkpoint's `<sep>` row is made stronger so that beams do end and the length penalty decides.
"""

from __future__ import annotations

import pytest
import torch

from danlu.backends.base import LoadPlan, GenerationParams
from danlu.backends.transformers_backend import load
from eva2_tiny import VOCAB, write_tiny_eva

SEP, BOS, PAD = VOCAB.index("<sep>"), VOCAB.index("<s_0>"), VOCAB.index("<pad>")
PROMPTS = ["你好", "今天天气怎么样？", "我是小明", "你了解人工智能吗？", "那你很聪明", "谢谢夸奖！"]
REPLY = 16


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_tiny_eva(tmp_path_factory.mktemp("eva2-beams") / "tiny")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["lm_head.weight"][SEP] *= 4
    torch.save(state, folder / "pytorch_model.bin")
    return load(None, None, LoadPlan(folder, n_ctx=512, n_threads=1))


def prompt_ids(engine, text: str) -> list[int]:
    return engine.tokenize(text) + [SEP, BOS]


def transformers_reply(engine, text: str, **settings) -> tuple[list[int], bool]:
    ids = engine.encoder_input(prompt_ids(engine, text))
    out = engine.model.generate(
        input_ids=torch.tensor([ids]), decoder_start_token_id=BOS, eos_token_id=SEP, pad_token_id=PAD,
        num_beams=4, repetition_penalty=1.6, no_repeat_ngram_size=3, encoder_no_repeat_ngram_size=3, min_length=2,
        max_length=1 + REPLY, early_stopping=False, use_cache=False, **settings)[0].tolist()[1:]
    return (out[: out.index(SEP)], True) if SEP in out else (out, False)


def danlu_reply(engine, text: str, **settings) -> tuple[list[int], bool]:
    params = GenerationParams(max_tokens=REPLY, num_beams=4, repetition_penalty=1.6, **settings)
    chunks = list(engine.generate(prompt_ids(engine, text), params))
    return [t for c in chunks for t in c.token_ids], chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("length_penalty", [1.6, 0.5, -1.0])
def test_beam_search_equals_transformers_beam_search(engine, length_penalty):
    outcomes = []
    for text in PROMPTS:
        ours = danlu_reply(engine, text, temperature=0.0, length_penalty=length_penalty)
        assert ours == transformers_reply(engine, text, do_sample=False, length_penalty=length_penalty), text
        outcomes.append(ours)
    assert any(stopped for _, stopped in outcomes) and any(not stopped for _, stopped in outcomes)


def test_the_length_penalty_changes_which_beam_wins(engine):
    replies = {lp: [danlu_reply(engine, t, temperature=0.0, length_penalty=lp)[0] for t in PROMPTS] for lp in (1.6, -1.0)}
    assert replies[1.6] != replies[-1.0]
    assert sum(map(len, replies[1.6])) > sum(map(len, replies[-1.0]))  # a positive penalty favours longer replies


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_sampling_with_a_seed_equals_transformers_sampled_beam_search(engine, seed):
    sampling = dict(temperature=0.9, top_p=0.9, top_k=0, length_penalty=1.6)
    for text in PROMPTS:
        ours = danlu_reply(engine, text, seed=seed, **sampling)
        torch.manual_seed(seed)  # transformers samples from the global generator; danlu from one seeded alike
        assert ours == transformers_reply(engine, text, do_sample=True, **sampling), (seed, text)


def test_beam_search_cuts_the_reply_at_a_stop_string(engine):
    whole, _ = danlu_reply(engine, "我是小明", temperature=0.0, length_penalty=1.6)
    text = engine.detokenize(whole).decode("utf-8")
    stop = text[len(text) // 2:][:1]
    assert stop
    chunks = list(engine.generate(prompt_ids(engine, "我是小明"), GenerationParams(
        max_tokens=REPLY, num_beams=4, repetition_penalty=1.6, temperature=0.0, length_penalty=1.6, stop=[stop])))
    assert "".join(c.text for c in chunks) == text[: text.index(stop)] and chunks[-1].finish_reason == "stop"
