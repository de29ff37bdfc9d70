"""LoRA adapters through the real loader: a tiny Llama base and adapters made with peft in the test.

Checked: an adapter changes the output and says so; one that matches nothing or is all zeros is a
warning, not silence; Chinese-LLaMA-Alpaca-style vocabulary growth resizes the base first; two
adapters apply in order (Plus = LLaMA-Plus then Alpaca-Plus); merge-and-save gives the same model;
SuperHOT gets linear RoPE scaling ×4; an adapter folder can be the path, with its base found.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tiny_models as tm
from danlu.backends import load_engine
from danlu.backends.base import GenerationParams, LoadPlan
from danlu.errors import DanluError
from danlu.lora import AdapterWarning, merge_and_save

CHINESE_TOKENS = ["丹炉", "炼丹", "模型"]  # whole-word tokens the base's byte-level BPE does not have


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tm.llama(tmp_path_factory.mktemp("lora") / "llama", positions=64)


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> Path:
    return tm.lora_adapter(base, tmp_path_factory.mktemp("lora") / "plain")


@pytest.fixture(scope="module")
def alpaca(base, tmp_path_factory) -> Path:
    return tm.lora_adapter(base, tmp_path_factory.mktemp("lora") / "chinese-alpaca", new_tokens=CHINESE_TOKENS)


def load(path: Path, **extra):
    return load_engine(None, None, LoadPlan(path=path, n_ctx=64, n_threads=1, extra=extra), "transformers")


def logits(engine, text: str = "你好，世界！") -> np.ndarray:
    return engine.next_token_logits(engine.tokenize(text, add_bos=True))


def test_lora_changes_output(base, adapter):
    plain, tuned = load(base), load(base, adapters=[str(adapter)])
    report = tuned.adapters[0]
    assert report.applied and report.modules == 4 and report.logit_change > 0  # q_proj, v_proj × 2 layers
    assert not np.allclose(logits(plain), logits(tuned))


def test_adapter_that_matches_no_module_warns(base, adapter, tmp_path):
    broken = Path(shutil.copytree(adapter, tmp_path / "broken"))
    config = json.loads((broken / "adapter_config.json").read_text())
    config["target_modules"] = ["query_key_value"]  # ChatGLM's module names on a Llama base
    (broken / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(AdapterWarning, match="matched no module"):
        engine = load(base, adapters=[str(broken)])
    assert not engine.adapters[0].applied and np.allclose(logits(engine), logits(load(base)))


def test_adapter_with_zero_weights_warns_that_nothing_changed(base, tmp_path):
    zero = tm.lora_adapter(base, tmp_path / "zero", scale=0.0)
    with pytest.warns(AdapterWarning, match="does not change the output"):
        engine = load(base, adapters=[str(zero)])
    assert engine.adapters[0].modules == 4 and not engine.adapters[0].applied


def test_vocab_resize_for_chinese_alpaca_lora(base, alpaca):
    plain = load(base)
    engine = load(base, adapters=[str(alpaca)])
    grown = len(plain.tokenizer) + len(CHINESE_TOKENS)
    assert engine.adapters[0].vocab_resized_to == grown and engine.vocab_size == grown
    assert len(engine.tokenizer) == grown  # the adapter's tokenizer, never the base's (issue #181)
    ids = engine.tokenize("丹炉炼丹")
    assert len(ids) == 2 and all(i >= len(plain.tokenizer) for i in ids)
    assert engine.detokenize(ids).decode() == "丹炉炼丹"
    final = list(engine.generate(engine.tokenize("丹炉", add_bos=True), GenerationParams(max_tokens=4, temperature=0)))[-1]
    assert final.timings.completion_tokens <= 4


def test_two_adapters_apply_in_order(base, alpaca, tmp_path):
    """Chinese-Alpaca-Plus: the second adapter was trained on the base with the first merged in."""
    merged_first = tmp_path / "llama-plus"
    merge_and_save(base, [alpaca], merged_first)
    second = tm.lora_adapter(merged_first, tmp_path / "alpaca-plus", new_tokens=["工作台"], seed=2)
    stacked = load(base, adapters=[str(alpaca), str(second)])
    assert [r.applied for r in stacked.adapters] == [True, True]
    assert stacked.vocab_size == len(load(base).tokenizer) + len(CHINESE_TOKENS) + 1
    reference = load(merged_first, adapters=[str(second)])
    assert np.allclose(logits(stacked), logits(reference), atol=1e-4)


def test_merge_and_save_gives_the_same_model(base, alpaca, tmp_path):
    reports = merge_and_save(base, [alpaca], tmp_path / "merged")
    assert reports[0].applied and (tmp_path / "merged" / "model.safetensors").exists()
    merged, live = load(tmp_path / "merged"), load(base, adapters=[str(alpaca)], merge_adapters=False)
    assert type(live.model).__name__.startswith("Peft")  # kept unmerged when asked
    assert np.allclose(logits(merged, "丹炉"), logits(live, "丹炉"), atol=1e-4)


def test_superhot_gets_linear_rope_scaling_factor_4(base, adapter, tmp_path):
    superhot = Path(shutil.copytree(adapter, tmp_path / "superhot-tiny-8k-no-rlhf-test"))
    engine = load(base, adapters=[str(superhot)])
    rope = engine.model.config.rope_parameters
    assert rope["rope_type"] == "linear" and rope["factor"] == 4.0
    assert engine.model.config.max_position_embeddings == 4 * 64
    long_text = "丹炉是一个本地的大模型工作台。" * 2
    assert not np.allclose(logits(engine, long_text), logits(load(base, adapters=[str(adapter)]), long_text))


def test_adapter_folder_as_the_model_path_finds_its_base(base, adapter, tmp_path):
    engine = load(adapter)  # adapter_config.json names the local base folder
    assert engine.adapters[0].applied
    moved = Path(shutil.copytree(adapter, tmp_path / "orphan"))
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "huggyllama/llama-7b"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(DanluError, match="--base"):
        load(moved)
    assert load(moved, base_model=str(base)).adapters[0].applied
