"""The RWKV backend end to end: tiny random checkpoints in the `rwkv` package's .pth layout for
versions 4, 5, 6 and 7, loaded through danlu's real loader with the package's World tokenizer.

Checked: every version generates; a turn that extends the state's ids runs only its new tokens and
gives the same numbers as a fresh run; save/restore is a deep copy; the 20B tokenizer is found next
to the weights (or its absence is explained); strategies are chosen from memory and validated;
ChatRWKV's newline rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models as tm
from danlu import rwkv_strategy
from danlu.backends import load_engine
from danlu.backends.base import GenerationParams, LoadPlan
from danlu.backends.rwkv_backend import ChatRules, RwkvState
from danlu.errors import DanluError

VERSIONS = {4: tm.rwkv4_pth, 5: tm.rwkv5_pth, 6: tm.rwkv6_pth, 7: tm.rwkv7_pth}
GREEDY = GenerationParams(max_tokens=8, temperature=0)
GiB = 2**30


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("rwkv")
    return {v: build(root / f"v{v}" / f"tiny-v{v}.pth") for v, build in VERSIONS.items()}


def load(path: Path, **extra):
    return load_engine(None, None, LoadPlan(path=path, n_ctx=1024, n_threads=1, extra=extra), "rwkv")


@pytest.fixture(scope="session")
def engines(checkpoints):
    """One loaded engine per version (loading costs ~1.5 s), handed out with an empty state."""
    loaded = {}

    def get(version: int):
        if version not in loaded:
            loaded[version] = load(checkpoints[version])
        engine = loaded[version]
        reset(engine)
        engine.chat_rules = None
        return engine

    return get


def reset(engine) -> None:
    engine.restore_state(RwkvState([], None, None))


def turn(engine, text: str) -> list[int]:
    return engine.tokenize(text)


class CountingModel:
    """Stands in front of the rwkv model (a TorchScript module: its forward cannot be patched)."""

    def __init__(self, model):
        self.model, self.fed = model, []

    def forward(self, tokens, state, full_output=False):
        self.fed.append(len(tokens))
        return self.model.forward(tokens, state, full_output=full_output)


def count_fed_tokens(engine, monkeypatch) -> list[int]:
    counting = CountingModel(engine.model)
    monkeypatch.setattr(engine, "model", counting)
    return counting.fed


@pytest.mark.parametrize("version", [4, 5, 6, 7])
def test_every_rwkv_version_generates(engines, version):
    engine = engines(version)
    assert int(engine.version) == version and engine.strategy == "cpu fp32"
    chunks = list(engine.generate(turn(engine, "User: 你好\n\nAssistant:"), GREEDY))
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].timings.completion_tokens <= 8
    generated = [t for c in chunks for t in c.token_ids]
    assert "".join(c.text for c in chunks) == engine.detokenize(generated).decode("utf-8", errors="replace")


@pytest.mark.parametrize("version", [4, 7])
def test_state_reuse_processes_only_new_tokens(engines, version, monkeypatch):
    engine = engines(version)
    first = turn(engine, "User: 你好\n\nAssistant:")
    list(engine.generate(first, GREEDY))
    second = engine.cached_ids() + turn(engine, "\n\nUser: 再见\n\nAssistant:")
    fed = count_fed_tokens(engine, monkeypatch)
    final = list(engine.generate(second, GenerationParams(max_tokens=1, temperature=0)))[-1]
    assert final.timings.cached_tokens == len(second) - fed[0] >= len(first)
    assert fed == [len(second) - final.timings.cached_tokens]


@pytest.mark.parametrize("version", [4, 5, 6, 7])
def test_state_reuse_gives_the_same_logits_as_a_fresh_run(engines, version):
    engine = engines(version)
    first = turn(engine, "User: 你好\n\nAssistant:")
    engine.next_token_logits(first)
    both = first + turn(engine, " 你好！\n\nUser: 今天天气怎么样？\n\nAssistant:")
    reused = engine.next_token_logits(both)
    reset(engine)
    assert np.allclose(reused, engine.next_token_logits(both), atol=1e-4)


def test_a_reply_tokenized_differently_resumes_from_the_prompt(engines):
    """chat.py re-renders the reply as text; if its tokens differ from the sampled ones, only the
    reply and the new turn are read again, not the whole history."""
    engine = engines(4)
    prompt = turn(engine, "User: 你好\n\nAssistant:")
    list(engine.generate(prompt, GREEDY))
    rerendered = prompt + turn(engine, " 你好！\n\nUser: 再见\n\nAssistant:")
    final = list(engine.generate(rerendered, GenerationParams(max_tokens=1, temperature=0)))[-1]
    assert final.timings.cached_tokens == len(prompt)


def test_diverging_ids_restart_from_a_fresh_state(engines):
    engine = engines(4)
    engine.next_token_logits(turn(engine, "User: 你好\n\nAssistant:"))
    other = turn(engine, "Question: 为什么？")
    final = list(engine.generate(other, GenerationParams(max_tokens=1, temperature=0)))[-1]
    assert final.timings.cached_tokens == 0 and engine.cached_ids()[: len(other)] == other


def test_save_state_is_a_deep_copy(engines):
    engine = engines(5)
    ids = turn(engine, "User: 你好\n\nAssistant:")
    before = engine.next_token_logits(ids)
    saved = engine.save_state()
    list(engine.generate(ids + turn(engine, " 再见"), GREEDY))  # moves the live state on
    assert all(a is not b for a, b in zip(saved.state, engine._state))
    engine.restore_state(saved)
    assert engine.cached_ids() == ids and np.array_equal(engine.next_token_logits(ids), before)
    longer = ids + turn(engine, " 继续")
    after_restore = engine.next_token_logits(longer)
    engine.restore_state(saved)  # restoring twice works: restore copies again
    assert np.array_equal(engine.next_token_logits(longer), after_restore)
    reset(engine)
    assert np.allclose(engine.next_token_logits(longer), after_restore, atol=1e-4)


def test_state_size_does_not_grow_with_the_conversation(engines):
    engine = engines(4)
    ids = turn(engine, "User: 你好\n\nAssistant:")
    engine.next_token_logits(ids)
    small = engine.state_bytes()
    engine.next_token_logits(ids + turn(engine, "很长的对话。" * 50))
    assert engine.state_bytes() == small == 2 * 5 * 32 * 4  # v4: 5 vectors of n_embd per layer, fp32


def test_temperature_zero_is_deterministic(engines):
    engine = engines(6)
    ids = turn(engine, "User: 你好\n\nAssistant:")
    runs = [[t for c in engine.generate(ids, GREEDY) for t in c.token_ids] for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][0] == int(np.argmax(engine.next_token_logits(ids)))


def test_loglikelihood_agrees_with_next_token_logits(engines):
    engine = engines(4)
    ctx, cont = turn(engine, "User: 你好"), turn(engine, "\n\nAssistant: 好")
    logp = torch.log_softmax(torch.tensor(engine.next_token_logits(ctx), dtype=torch.float64), -1)
    assert engine.loglikelihood(ctx, cont[:1]) == pytest.approx(float(logp[cont[0]]), abs=1e-4)
    chained = engine.loglikelihood(ctx, cont[:1]) + engine.loglikelihood(ctx + cont[:1], cont[1:])
    assert engine.loglikelihood(ctx, cont) == pytest.approx(chained, abs=1e-3)


def test_world_tokenizer_roundtrips_chinese(engines):
    engine = engines(4)
    text = "User: 丹炉是什么？\n\nAssistant: 一个本地的大模型工作台。"
    assert engine.detokenize(engine.tokenize(text)).decode() == text
    assert engine.tokenize("\n") == [11] and engine.eos_token_ids() == {0}


def test_20b_tokenizer_is_read_from_the_model_folder(tmp_path):
    tokenizer = tm.byte_bpe_tokenizer(tmp_path / "tok", vocab_size=300, specials=("<|endoftext|>", "<|padding|>"))
    (tmp_path / "pile").mkdir()
    tokenizer.backend_tokenizer.save(str(tmp_path / "pile" / "20B_tokenizer.json"))
    engine = load(tm.rwkv4_pth(tmp_path / "pile" / "RWKV-4-Pile-tiny.pth", vocab=len(tokenizer)))
    assert engine.tokenizer.name == "20B_tokenizer.json"
    assert engine.tokenize("<|endoftext|>", special=True) == [0]
    assert 0 not in engine.tokenize("<|endoftext|>")  # typed markup stays text
    assert engine.detokenize(engine.tokenize("你好，世界")).decode() == "你好，世界"


def test_pile_model_without_its_tokenizer_says_where_to_get_it(tmp_path):
    with pytest.raises(DanluError, match="ChatRWKV"):
        load(tm.rwkv4_pth(tmp_path / "RWKV-4-Pile-tiny.pth", vocab=50277, n_layer=1, n_embd=16))


def test_strategy_can_be_overridden_and_is_validated(checkpoints):
    assert load(checkpoints[4], rwkv_strategy="cpu  fp32").strategy == "cpu fp32"
    with pytest.raises(DanluError, match="策略"):
        load(checkpoints[4], rwkv_strategy="gpu fp16")
    with pytest.raises(DanluError, match="RWKV-7"):
        load(checkpoints[7], rwkv_strategy="cuda fp16i8 *10 -> cpu fp32")


@pytest.mark.parametrize("weights, layers, version, memory, expected", [
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=64 * GiB), "cpu fp32"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=20 * GiB), "cpu bf16"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=12 * GiB), "cpu fp32i8"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=64 * GiB, vram=24 * GiB), "cuda fp16"),
    (14 * GiB, 32, 5, rwkv_strategy.Memory(ram=64 * GiB, vram=24 * GiB), "cuda bf16"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=64 * GiB, vram=10 * GiB), "cuda fp16i8"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=64 * GiB, vram=4 * GiB), "cuda fp16i8 *16 -> cpu fp32"),
    (14 * GiB, 32, 4, rwkv_strategy.Memory(ram=8 * GiB, vram=4 * GiB), "cuda fp16i8 *16+"),
    (14 * GiB, 32, 7, rwkv_strategy.Memory(ram=64 * GiB, vram=4 * GiB), "cpu fp32"),
])
def test_strategy_is_chosen_from_free_memory(weights, layers, version, memory, expected):
    assert rwkv_strategy.choose(weights, layers, version, memory) == expected
    assert rwkv_strategy.validate(expected, version) == expected


def test_strategy_is_described_for_humans():
    text = rwkv_strategy.describe("cuda fp16i8 *20+ -> cpu fp32")
    assert "GPU fp16" in text and "int8" in text and "20" in text and "CPU fp32" in text


def test_chat_rules_follow_chatrwkv(checkpoints):
    engine = load(checkpoints[4], rwkv_chat_rules=True)
    rules = engine.chat_rules
    assert rules.newline_id == 11 and rules.newline_bias(0) == rules.newline_bias(1) == float("-inf")
    assert rules.newline_bias(21) == pytest.approx(-2.0) and rules.newline_bias(100) == 0 and rules.newline_bias(171) == 5
    logits = torch.zeros(65536)
    logits[11], logits[0] = 50.0, 40.0  # the model wants a newline, then end-of-text
    rules(0, logits, [])
    assert int(torch.argmax(logits)) not in (0, 11)


def test_chat_rules_keep_the_first_token_off_newline(engines, monkeypatch):
    engine = engines(4)
    engine.chat_rules = ChatRules.for_tokenizer(engine.tokenizer)
    wants_newline = torch.zeros(65536)
    wants_newline[11] = 100.0
    monkeypatch.setattr(engine, "_sync", lambda ids: (wants_newline, 0))
    monkeypatch.setattr(engine, "_feed", lambda tokens, all_logits=False: wants_newline)
    chunks = list(engine.generate([1], GenerationParams(max_tokens=3, temperature=0)))
    tokens = [t for c in chunks for t in c.token_ids]
    assert tokens[0] != 11 and tokens[1] != 11 and tokens[2] == 11
