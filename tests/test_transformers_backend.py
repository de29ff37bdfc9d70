"""The transformers backend end to end: tiny random models of every seed architecture, built here and
loaded through danlu's real loader (GPT-2 + BERT tokenizer, DialoGPT, T5, Llama, Qwen2, Gemma3).

What is checked is behaviour a user relies on: streaming whole characters, KV-cache reuse that
gives the same numbers as a fresh run, sampling settings, stops, evaluation hooks, and the refusals
(remote code, CUDA-only paths, unsafe pickles, unsupported models). The last test compares greedy
next tokens with llama.cpp on real gemma-3-270m weights (marked `weights`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models as tm
from danlu.backends import load_engine
from danlu.backends._decode import Sampler
from danlu.backends.base import GenerationParams, LoadPlan, complete
from danlu.backends.hf.causal import KVState
from danlu.catalog.schema import ModelSpec
from danlu.errors import BackendUnavailable, ContextOverflow, DanluError

ARCHITECTURES = ["dialogbot", "dialogpt", "llama", "qwen2", "gemma3", "t5"]
BUILDERS = {"dialogbot": tm.gpt2_dialogbot, "dialogpt": tm.gpt2_dialogpt, "llama": tm.llama, "qwen2": tm.qwen2,
            "gemma3": tm.gemma3, "t5": tm.t5}
PROMPT = "你好，世界！今天天气很好。"
GREEDY = GenerationParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def load(path: Path, spec: ModelSpec | None = None, n_ctx: int = 256, **extra):
    return load_engine(spec, None, LoadPlan(path=path, n_ctx=n_ctx, n_threads=1, extra=extra), "transformers")


def spec(**fields) -> ModelSpec:
    base = dict(id="tiny", name="Tiny", family="tiny", architecture="gpt2", backend="transformers", params_b=0.001,
                context_length=128, vocab_size=100, license="MIT", prompt_format="raw", default_variant="fp32",
                variants=[{"name": "fp32", "format": "safetensors", "bits_per_weight": 32, "size_bytes": 1}])
    return ModelSpec.model_validate({**base, **fields})


def prompt_ids(engine) -> list[int]:
    return engine.tokenize(PROMPT, add_bos=engine.bos_token_id() is not None)


def count_fed_tokens(engine, monkeypatch) -> list[int]:
    """Record how many tokens each forward pass of a causal engine runs."""
    fed: list[int] = []
    original = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda tokens, all_logits: fed.append(len(tokens)) or original(tokens, all_logits))
    return fed


# --- every architecture ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_streams_through_the_real_loader(models, arch):
    engine = load(models[arch])
    ids = prompt_ids(engine)
    chunks = list(engine.generate(ids, GREEDY))
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length") and final.timings is not None
    assert final.timings.prompt_tokens >= len(ids) and final.timings.completion_tokens <= GREEDY.max_tokens
    generated = [t for c in chunks for t in c.token_ids]
    assert len(generated) == final.timings.completion_tokens
    assert "".join(c.text for c in chunks) == engine.detokenize(generated).decode("utf-8", errors="replace")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_text_roundtrips_through_token_pieces(models, arch):
    engine = load(models[arch])
    text = engine.detokenize(engine.tokenize(PROMPT)).decode("utf-8").strip()
    expected = PROMPT.replace("，", ",").replace("！", "!") if arch == "t5" else PROMPT  # T5's NFKC normaliser
    assert text == expected


def test_streamed_text_never_splits_a_utf8_character(tmp_path, monkeypatch):
    """A byte-level BPE too small to hold Chinese characters whole: each character is 3 tokens."""
    folder = tmp_path / "bytes"
    tm.byte_bpe_tokenizer(folder, vocab_size=257)  # 256 bytes + <|endoftext|>: no merges at all
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=257, n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    engine = load(folder)
    script = engine.tokenize("丹炉炼丹")
    assert len(script) == 12
    steps = iter(script[1:] + [engine.tokenizer.eos_token_id])
    one_hot = lambda token: torch.nn.functional.one_hot(torch.tensor(token), 257).float() * 100
    monkeypatch.setattr(engine, "_sync", lambda ids: (one_hot(script[0]), 0))
    monkeypatch.setattr(engine, "_feed", lambda tokens, all_logits=False: one_hot(next(steps))[None])
    chunks = list(engine.generate([0], GenerationParams(max_tokens=20, temperature=0)))
    assert [c.text for c in chunks[:-1]] == ["丹", "炉", "炼", "丹"]
    assert all(len(c.token_ids) == 3 for c in chunks[:-1]) and chunks[-1].finish_reason == "stop"


# --- KV cache reuse --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "dialogpt", "gemma3", "qwen2"])
def test_kv_cache_reuse_processes_only_new_tokens(models, arch, monkeypatch):
    engine = load(models[arch])
    first = prompt_ids(engine)
    reply = [t for c in engine.generate(first, GREEDY) for t in c.token_ids]
    second = first + reply + engine.tokenize("谢谢你，再见！")
    fed = count_fed_tokens(engine, monkeypatch)
    final = list(engine.generate(second, GenerationParams(max_tokens=1, temperature=0)))[-1]
    reused = final.timings.cached_tokens
    assert reused >= len(first) + len(reply) - 1  # the last reply token was sampled, never fed
    assert fed[0] == len(second) - reused


@pytest.mark.parametrize("arch", ["llama", "dialogpt", "gemma3"])
def test_kv_cache_reuse_gives_the_same_logits_as_a_fresh_run(models, arch):
    engine, fresh = load(models[arch]), load(models[arch])
    base = prompt_ids(engine)
    engine.next_token_logits(base + engine.tokenize("我们一起去公园玩吧。"))  # fills the cache past the window
    branch = base + engine.tokenize("谢谢你")  # shares only `base`: the cache is cropped back
    assert np.allclose(engine.next_token_logits(branch), fresh.next_token_logits(branch), atol=1e-4)


def test_identical_prompt_reuses_everything(models):
    engine = load(models["llama"])
    ids = prompt_ids(engine)
    engine.next_token_logits(ids)
    final = list(engine.generate(ids, GenerationParams(max_tokens=2, temperature=0)))[-1]
    assert final.timings.cached_tokens == len(ids)


def test_save_and_restore_state_resume_exactly(models):
    engine = load(models["qwen2"])
    ids = prompt_ids(engine)
    before = engine.next_token_logits(ids)
    saved = engine.save_state()
    engine.next_token_logits(engine.tokenize("完全不同的内容"))
    engine.restore_state(saved)
    assert engine.cached_ids() == ids
    assert np.array_equal(engine.next_token_logits(ids), before)
    engine.generate(ids + [5], GREEDY)
    engine.restore_state(saved)  # a state can be restored again after being used
    final = list(engine.generate(ids, GenerationParams(max_tokens=1, temperature=0)))[-1]
    assert final.timings.cached_tokens == len(ids)


# --- sampling and stops ------------------------------------------------------------------------------
def test_temperature_zero_is_deterministic(models):
    engine = load(models["llama"])
    ids = prompt_ids(engine)
    runs = [[t for c in engine.generate(ids, GREEDY) for t in c.token_ids] for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0][0] == int(np.argmax(engine.next_token_logits(ids)))


def test_seed_makes_sampling_repeatable(models):
    engine = load(models["llama"])
    ids = prompt_ids(engine)
    sample = lambda seed: [t for c in engine.generate(ids, GenerationParams(max_tokens=8, temperature=1.5, top_p=1, top_k=0, seed=seed)) for t in c.token_ids]
    assert sample(7) == sample(7)
    assert len({tuple(sample(s)) for s in range(4)}) > 1


def test_top_k_one_is_greedy(models):
    engine = load(models["dialogpt"])
    ids = prompt_ids(engine)
    greedy = [t for c in engine.generate(ids, GREEDY) for t in c.token_ids]
    topk = [t for c in engine.generate(ids, GenerationParams(max_tokens=12, temperature=1, top_k=1, seed=3)) for t in c.token_ids]
    assert topk == greedy


def test_sampler_penalties_and_filters():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    assert Sampler(GenerationParams(temperature=0)).pick(logits) == 0
    assert Sampler(GenerationParams(temperature=0, repetition_penalty=4.0), recent=[0]).pick(logits) == 1
    presence = Sampler(GenerationParams(temperature=0, presence_penalty=1.5))
    presence.accept(0)
    assert presence.pick(logits) == 1
    top_p = Sampler(GenerationParams(temperature=1, top_p=0.5, top_k=0, seed=0))
    assert {top_p.pick(logits) for _ in range(20)} == {0}
    min_p = Sampler(GenerationParams(temperature=1, top_p=1, top_k=0, min_p=0.3, seed=0))
    assert {min_p.pick(logits) for _ in range(50)} <= {0, 1}


def test_stop_token_ids_end_generation(models):
    engine = load(models["llama"])
    ids = prompt_ids(engine)
    first = int(np.argmax(engine.next_token_logits(ids)))
    chunks = list(engine.generate(ids, GenerationParams(max_tokens=10, temperature=0, stop_token_ids=[first])))
    assert chunks[-1].finish_reason == "stop" and chunks[-1].timings.completion_tokens == 0


def test_stop_string_is_cut_and_never_shown(models):
    engine = load(models["dialogbot"])  # one character per token: a stop string lands inside the text
    ids = prompt_ids(engine)
    full, _ = complete(engine, ids, GenerationParams(max_tokens=12, temperature=0, top_k=0))
    stop = full[3:5]
    text, final = complete(engine, ids, GenerationParams(max_tokens=12, temperature=0, stop=[stop]))
    assert final.finish_reason == "stop" and text == full[: full.index(stop)] and stop not in text


def test_generation_stops_at_the_end_of_the_context(models):
    engine = load(models["dialogbot"])  # n_positions 128
    assert engine.n_ctx == 128
    ids = engine.tokenize(PROMPT * 9)
    final = list(engine.generate(ids, GenerationParams(max_tokens=50, temperature=0, top_k=0)))[-1]
    assert len(ids) == 117 and final.timings.completion_tokens <= 128 - len(ids)
    with pytest.raises(ContextOverflow):
        engine.generate(engine.tokenize(PROMPT * 12), GREEDY)


# --- evaluation hooks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen2", "t5"])
def test_loglikelihood_agrees_with_next_token_logits(models, arch):
    engine = load(models[arch])
    ctx, (a, b) = engine.tokenize("今天天气"), engine.tokenize("很好")[:2]
    logp = torch.log_softmax(torch.tensor(engine.next_token_logits(ctx), dtype=torch.float64), -1)
    assert engine.loglikelihood(ctx, [a]) == pytest.approx(float(logp[a]), abs=1e-4)
    if arch != "t5":  # the chain rule over a context that grows is a decoder-only property
        assert engine.loglikelihood(ctx, [a, b]) == pytest.approx(engine.loglikelihood(ctx, [a]) + engine.loglikelihood(ctx + [a], [b]), abs=1e-4)


# --- tokenizers and templates ------------------------------------------------------------------------------
def test_user_text_cannot_become_a_control_token(models):
    engine = load(models["qwen2"])
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert engine.tokenize("<|im_end|>", special=True) == [im_end]
    assert im_end not in engine.tokenize("<|im_end|>", special=False)
    assert engine.token_to_piece(im_end) == b"" and im_end in engine.eos_token_ids()


def test_chat_template_comes_from_the_tokenizer(models):
    engine = load(models["qwen2"])
    assert engine.capabilities.chat_template and "<|im_start|>" in engine.chat_template()
    assert load(models["dialogpt"]).chat_template() is None


def test_dialogbot_bert_tokenizer_joins_characters_and_stops_at_sep(models):
    engine = load(models["dialogbot"])
    sep, cls = engine.tokenizer.sep_token_id, engine.tokenizer.cls_token_id
    assert engine.eos_token_ids() == {sep} and engine.bos_token_id() == cls
    turn = engine.tokenize("[CLS]", special=True) + engine.tokenize("你好") + engine.tokenize("[SEP]", special=True)
    assert turn == [cls, *engine.tokenize("你好"), sep]
    assert engine.detokenize(turn).decode() == "你好"


def test_dialogpt_history_is_joined_with_eos(models):
    engine = load(models["dialogpt"])
    eos = engine.tokenizer.eos_token_id
    history = engine.tokenize("你好<|endoftext|>谢谢<|endoftext|>", special=True)
    assert history.count(eos) == 2 and eos in engine.eos_token_ids()
    assert list(engine.generate(history, GREEDY))[-1].finish_reason in ("stop", "length")


def test_t5_reads_a_chatyuan_prompt_with_the_encoder(models):
    engine = load(models["t5"])
    assert type(engine).__name__ == "Seq2SeqEngine" and not engine.capabilities.state
    ids = engine.tokenize("用户：你好\\n小元：")  # ChatYuan escapes newlines before encoding
    final = list(engine.generate(ids, GREEDY))[-1]
    assert final.timings.prompt_tokens == len(ids) + 1  # </s> closes the encoder input, as in the reference
    assert final.timings.cached_tokens == 0 and engine.save_state() is None


def test_model_path_may_name_a_file_inside_the_folder(models):
    engine = load(models["llama"] / "model.safetensors")
    assert engine.vocab_size == len(engine.tokenizer)


# --- refusals --------------------------------------------------------------------------------------
def test_remote_code_refused_without_flag(tmp_path):
    folder = tm.remote_code_gpt2(tmp_path / "glm")
    with pytest.raises(DanluError, match="--trust-remote-code"):
        load(folder)
    with pytest.raises(DanluError, match="4.40.0"):
        load(folder, spec=spec(trust_remote_code=True, remote_code_transformers="4.40.0"))


def test_remote_code_runs_with_flag(tmp_path):
    engine = load(tm.remote_code_gpt2(tmp_path / "glm"), trust_remote_code=True)
    assert engine.remote_code and type(engine.model).__name__ == "TinyRemoteModel"
    assert list(engine.generate(prompt_ids(engine), GREEDY))[-1].timings is not None


def test_remote_code_failure_names_the_transformers_version(tmp_path):
    folder = tm.remote_code_gpt2(tmp_path / "qwen1", broken=True)
    with pytest.raises(DanluError, match="4.32.0") as err:
        load(folder, spec=spec(trust_remote_code=True, remote_code_transformers="4.32.0"), trust_remote_code=True)
    assert "transformers_stream_generator" in str(err.value)


def test_unsupported_model_says_why(models):
    eva = spec(unsupported="EVA2 不在 transformers 里，Hub 上也没有模型代码 / no runtime: EVA2 is not in transformers")
    with pytest.raises(BackendUnavailable, match="EVA2"):
        load(models["t5"], spec=eva)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize("extra", [{"quantize": "8bit"}, {"quantize": "4bit"}, {"device": "cuda"}])
def test_cuda_only_paths_stop_with_a_message_on_cpu(models, extra):
    with pytest.raises(BackendUnavailable, match="CUDA"):
        load(models["llama"], **extra)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_gptq_checkpoint_stops_with_a_message_on_cpu(tmp_path, models):
    folder = tmp_path / "gptq"
    tm.llama(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendUnavailable, match="GPTQ"):
        load(folder)


def test_pickle_weights_load_only_as_plain_tensors(tmp_path):
    from safetensors.torch import load_file

    folder = tm.gpt2_dialogpt(tmp_path / "bin")
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    assert load(folder).vocab_size == weights["transformer.wte.weight"].shape[0]
    weights["payload"] = _Payload(tmp_path / "pwned")
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(DanluError, match="weights_only"):
        load(folder)
    assert not (tmp_path / "pwned").exists()


class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


# --- GGUF through transformers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, Path]:
    return tm.llama_gguf(tmp_path_factory.mktemp("gguf"))


def test_gguf_file_loads_through_transformers(tiny_gguf):
    gguf_file, hf_folder = tiny_gguf
    from_gguf, from_hf = load(gguf_file), load(hf_folder)
    ids = from_hf.tokenize(PROMPT, add_bos=True)
    assert from_gguf.tokenize(PROMPT, add_bos=True) == ids  # the vocabulary came from GGUF metadata
    assert np.allclose(from_gguf.next_token_logits(ids), from_hf.next_token_logits(ids), atol=1e-5)


def test_tiny_gguf_greedy_agrees_with_llama_cpp(tiny_gguf):
    """The cross-check machinery on a tiny f32 GGUF: both runtimes, same weights, same argmax."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(tiny_gguf[0]), n_ctx=1024, logits_all=True, verbose=False, n_threads=1)
    try:
        agreement, positions = greedy_agreement(llm, load(tiny_gguf[0], n_ctx=1024), PARAGRAPHS[:2])
    finally:
        llm.close()
    assert agreement == 1.0 and positions > 100


# --- real weights: transformers' GGUF reader against llama.cpp -------------------------------------------
GEMMA_GGUF = Path(os.environ.get("DANLU_HOME", Path.home() / ".danlu")) / "models/gemma-3-270m/q4_k_m/gemma-3-270m-q4_k_m.gguf"
PARAGRAPHS = [
    "丹炉是一个在本地运行中文大模型的工作台。它可以下载模型、估算内存、和模型对话、比较不同模型的回答，"
    "还可以在标准数据集上评测它们。春天来了，公园里的花都开了，孩子们在草地上放风筝，老人们在树下下棋。",
    "北京市，简称京，是中华人民共和国的首都，也是全国的政治中心、文化中心、国际交往中心和科技创新中心。北京位于华北平原的北部，"
    "东与天津市毗连，其余均与河北省相邻。北京有着三千多年的建城史和八百多年的建都史，是世界著名的古都之一。"
    "北京拥有众多的名胜古迹，例如故宫、天坛、颐和园和八达岭长城。",
    "晋太元中，武陵人捕鱼为业。缘溪行，忘路之远近。忽逢桃花林，夹岸数百步，中无杂树，芳草鲜美，落英缤纷。渔人甚异之，"
    "复前行，欲穷其林。林尽水源，便得一山，山有小口，仿佛若有光。便舍船，从口入。初极狭，才通人。复行数十步，豁然开朗。",
    "人工智能技术近年来发展迅速，大型语言模型已经能够完成写作、翻译、编程和问答等多种任务。与此同时，研究人员也在关注模型的安全性、"
    "可靠性以及能源消耗等问题。许多公司和大学开始发布开源模型，让更多的开发者可以在自己的电脑上运行和改进这些模型。",
]


def dequantized_copy(source: Path, target: Path) -> Path:
    """The same GGUF with every tensor dequantized to f32: llama.cpp then computes on exactly the
    weights transformers computes on, without its quantized-activation dot products."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name != "general.architecture" and not field.name.startswith("GGUF."):
            value = 0 if field.name == "general.file_type" else field.contents()  # 0: all f32
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def greedy_agreement(llm, engine, paragraphs: list[str] = PARAGRAPHS) -> tuple[float, int]:
    """Share of positions where llama.cpp and the transformers engine pick the same next token."""
    same = total = 0
    for text in paragraphs:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        assert engine.tokenize(text, add_bos=True) == ids  # same tokens, or the comparison means nothing
        llm.reset()
        llm.eval(ids)
        reference = np.argmax(np.asarray(llm.scores[: len(ids)]), axis=-1)
        engine.restore_state(KVState([], None, None))  # an empty cache: every position is computed
        mine = np.argmax(engine._feed(ids, all_logits=True).float().numpy(), axis=-1)
        same, total = same + int(np.sum(mine == reference)), total + len(ids)
    return same / total, total


@pytest.mark.weights
@pytest.mark.slow
def test_gguf_greedy_next_tokens_agree_with_llama_cpp(tmp_path):
    """gemma-3-270m through transformers (gguf_file=, dequantized to fp32) against llama.cpp.

    On the same f32 weights the two runtimes must agree on ≥ 95% of greedy next tokens (measured:
    99.7% of 337 positions). On the Q4_K_M file itself llama.cpp quantizes activations to 8 bits in
    its dot products, and a base model's near-ties flip: measured 92.0%, so the floor there is 90%.
    """
    if not GEMMA_GGUF.exists():
        pytest.skip(f"needs {GEMMA_GGUF} (`danlu pull gemma-3-270m`)")
    llama_cpp = pytest.importorskip("llama_cpp")
    engine = load(GEMMA_GGUF, n_ctx=1024)
    same_weights = llama_cpp.Llama(str(dequantized_copy(GEMMA_GGUF, tmp_path / "f32.gguf")), n_ctx=1024,
                                   logits_all=True, verbose=False, n_threads=2)
    agreement, positions = greedy_agreement(same_weights, engine)
    assert agreement >= 0.95, f"f32 weights: greedy agreement {agreement:.1%} over {positions} positions"
    quantized = llama_cpp.Llama(str(GEMMA_GGUF), n_ctx=1024, logits_all=True, verbose=False, n_threads=2)
    agreement, positions = greedy_agreement(quantized, engine)
    assert agreement >= 0.90, f"Q4_K_M: greedy agreement {agreement:.1%} over {positions} positions"
