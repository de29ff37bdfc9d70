"""The catalog entries: every model the reference names is present, valid and internally consistent.

The expected ids are written out here on purpose: a model silently dropped from `danlu/catalog/models/`
must fail a test, not shrink the list. Facts spot-checked below come from shared/reference/models.md and
shared/reference/evaluation-and-memory.md.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from danlu.catalog import all_models, get
from danlu.catalog.schema import ModelSpec

# Every model shared/reference/models.md describes (EVA2 sizes and Chinese-Alpaca sizes as separate entries).
EXPECTED_IDS = {
    "qwen2.5-coder-1.5b-instruct",
    "gemma-3-270m",
    "rwkv-4-pile-7b-instruct",
    "rwkv-4-world-7b",
    "rwkv-5-world-7b",
    "rwkv-claude-4-world-7b",
    "eva2-xlarge",
    "eva2-large",
    "eva2-base",
    "gpt2-dialogbot-base-chinese",
    "chat-dialogpt-small-zh",
    "promptclue-base-v1-5",
    "chatyuan-large-v1",
    "chatyuan-large-v2",
    "chatglm3-6b",
    "qwen-14b-chat",
    "qwen-14b",
    "causallm-14b",
    "skywork-13b-base",
    "bluelm-7b-chat",
    "chinese-wizard-vicuna-13b-gptq",
    "chinese-alpaca-lora-7b",
    "chinese-alpaca-lora-13b",
    "llama2-chinese-7b-chat",
    "llama2-chinese-13b-chat",
    "superhot-8k",
    "wizard-vicuna-13b-uncensored",
    "qwen2.5-0.5b-instruct",
    "qwen2.5-1.5b-instruct",
    "qwen2.5-coder-0.5b-instruct",
    # issue 14: the 2025 models (facts checked in tests/test_catalog_2025.py)
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b",
    "qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507",
    "deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-14b",
    "glm-4-9b-0414", "glm-z1-9b-0414", "internlm3-8b-instruct", "minicpm4-8b", "yi-1.5-9b-chat",
    "rwkv-7-world-1.5b", "rwkv-7-world-2.9b", "rwkv7-g1-1.5b", "rwkv7-g1-2.9b", "rwkv7-g1-7.2b",
    # embedding and rerank models for retrieval (issue 15)
    "bge-small-zh-v1.5",
    "bge-large-zh-v1.5",
    "bge-m3",
    "qwen3-embedding-0.6b",
    "bge-reranker-v2-m3",
}

PROMPT_FORMATS = {
    "chatml", "chatglm3", "chatyuan", "promptclue", "gpt2-dialogbot", "dialogpt", "vicuna", "chinese-alpaca",
    "llama2-chinese", "bluelm", "skywork", "rwkv-world", "rwkv-raven", "gemma", "llama2", "eva2", "raw",
    "deepseek-r1", "glm4", "rwkv-g1",
}

# ChatGLM3, Qwen-1, Skywork, BlueLM, InternLM3 and MiniCPM4 ship their modelling code on the Hub; nothing else
# may need it (InternLM3's and MiniCPM4's GGUFs run on llama.cpp without it).
REMOTE_CODE_IDS = {"chatglm3-6b", "qwen-14b-chat", "qwen-14b", "skywork-13b-base", "bluelm-7b-chat",
                   "internlm3-8b-instruct", "minicpm4-8b"}

# Models the user write-ups discuss, by write-up number.
SEED_MENTIONS = {
    "000": {
        "qwen-14b-chat", "qwen-14b", "causallm-14b", "chatglm3-6b", "skywork-13b-base", "bluelm-7b-chat",
        "chinese-wizard-vicuna-13b-gptq", "chinese-alpaca-lora-7b", "llama2-chinese-7b-chat",
        "llama2-chinese-13b-chat", "superhot-8k", "wizard-vicuna-13b-uncensored", "rwkv-claude-4-world-7b",
        "rwkv-4-world-7b", "rwkv-5-world-7b",
    },
    "003": {
        "rwkv-4-pile-7b-instruct", "eva2-xlarge", "gpt2-dialogbot-base-chinese", "chat-dialogpt-small-zh",
        "promptclue-base-v1-5", "chatyuan-large-v1",
    },
}

MODELS = {spec.id: spec for spec in all_models()}


def _catalog_files():
    folder = resources.files("danlu.catalog") / "models"
    return sorted((p for p in folder.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)


def _has_cjk(text: str) -> bool:
    return re.search(r"[\u4e00-\u9fff]", text) is not None


def test_every_model_in_the_reference_is_in_the_catalog():
    missing = EXPECTED_IDS - MODELS.keys()
    assert not missing, f"catalog lacks {sorted(missing)}"


def test_catalog_has_no_entries_the_reference_does_not_name():
    extra = MODELS.keys() - EXPECTED_IDS
    assert not extra, f"add {sorted(extra)} to EXPECTED_IDS (and to the reference) or remove them"


@pytest.mark.parametrize("path", _catalog_files(), ids=lambda p: p.name)
def test_every_catalog_file_validates_against_the_schema(path):
    ModelSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))


def test_ids_are_unique_lowercase_and_match_file_names():
    ids = []
    for path in _catalog_files():
        spec_id = tomllib.loads(path.read_text(encoding="utf-8"))["id"]
        assert path.name == f"{spec_id}.toml"
        assert spec_id == spec_id.lower()
        ids.append(spec_id)
    assert len(ids) == len(set(ids))


def test_every_prompt_format_is_a_known_name():
    unknown = {m.id: m.prompt_format for m in MODELS.values() if m.prompt_format not in PROMPT_FORMATS}
    assert not unknown


def test_every_default_variant_exists_and_variant_names_are_unique():
    for spec in MODELS.values():
        names = [v.name for v in spec.variants]
        assert len(names) == len(set(names)), spec.id
        assert spec.variant().name == spec.default_variant


def test_remote_code_is_trusted_only_for_the_models_that_ship_their_own_code():
    trusted = {m.id for m in MODELS.values() if m.trust_remote_code}
    assert trusted == REMOTE_CODE_IDS


def test_remote_code_models_say_which_transformers_they_were_written_for():
    for spec in MODELS.values():
        if spec.trust_remote_code:
            assert spec.remote_code_transformers, spec.id
        else:
            assert spec.remote_code_transformers is None, spec.id


def test_pypi_shipped_variants_carry_a_sha256_and_a_measured_size():
    shipped = [(m, v) for m in MODELS.values() for v in m.variants if any(s.kind == "pypi" for s in v.sources)]
    assert {m.id for m, _ in shipped} == {"qwen2.5-coder-1.5b-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"}
    for _, variant in shipped:
        assert re.fullmatch(r"[0-9a-f]{64}", variant.sha256 or "")
        assert not variant.size_estimated


def test_no_variant_invents_a_sha256_without_a_pypi_source():
    for spec in MODELS.values():
        for variant in spec.variants:
            if variant.sha256 is not None:
                assert any(s.kind == "pypi" for s in variant.sources), (spec.id, variant.name)


def test_weight_format_matches_the_runtime_that_loads_it():
    for spec in MODELS.values():
        for variant in spec.variants:
            backend = spec.backend_for(variant)
            assert (variant.format == "gguf") == (backend == "llamacpp"), (spec.id, variant.name)
            assert (variant.format == "rwkv-pth") == (backend == "rwkv"), (spec.id, variant.name)


def test_bits_per_weight_agrees_with_size_and_parameter_count():
    for spec in MODELS.values():
        for variant in spec.variants:
            if variant.format == "lora":  # an adapter's size says nothing about the base's parameter count
                continue
            implied = variant.size_bytes * 8 / (spec.params_b * 1e9)
            assert implied == pytest.approx(variant.bits_per_weight, rel=0.1), (spec.id, variant.name)


def test_every_variant_can_be_fetched_from_somewhere():
    for spec in MODELS.values():
        for variant in spec.variants:
            assert variant.sources, (spec.id, variant.name)


def test_every_score_names_its_source_protocol_and_shots_or_split():
    for spec in MODELS.values():
        for score in spec.scores:
            assert score.source.strip() and score.protocol.strip(), spec.id
            assert score.shots is not None or score.split is not None, spec.id
            assert 0 < score.score <= 100, spec.id


def test_zero_and_five_shot_scores_are_stored_separately():
    alpaca = [s for s in get("chinese-alpaca-lora-13b").scores if s.benchmark == "ceval"]
    assert {(s.shots, s.score) for s in alpaca} == {(0, 30.9), (5, 26.7)}


def test_qwen_14b_ceval_is_72_1_five_shot_from_the_qwen_readme():
    for model_id in ("qwen-14b", "qwen-14b-chat"):
        ceval = [s for s in get(model_id).scores if s.benchmark == "ceval" and s.score == 72.1]
        assert len(ceval) == 1, model_id
        assert ceval[0].shots == 5
        assert ceval[0].variant == "base"
        assert ceval[0].source == "QwenLM/Qwen README"


def test_chatglm3_stops_on_user_and_observation_tokens():
    spec = get("chatglm3-6b")
    assert {2, 64795, 64797} <= set(spec.stop_token_ids)
    assert spec.remote_code_transformers == "4.40.0"
    assert spec.shape.n_kv_heads == 2 and spec.shape.head_dim == 128


def test_rwkv_world_models_use_the_world_format_and_pile_models_do_not():
    for model_id in ("rwkv-4-world-7b", "rwkv-5-world-7b", "rwkv-claude-4-world-7b"):
        assert get(model_id).prompt_format == "rwkv-world"
        assert get(model_id).backend == "rwkv"
    assert get("rwkv-4-pile-7b-instruct").prompt_format != "rwkv-world"
    assert all(0 in get(m).stop_token_ids for m in MODELS if m.startswith("rwkv"))


def test_rwkv_claude_marks_its_inferred_prompt_format_unconfirmed():
    assert any("prompt format" in item for item in get("rwkv-claude-4-world-7b").unconfirmed)


def test_chinese_alpaca_entries_are_lora_with_the_expanded_vocab():
    for model_id in ("chinese-alpaca-lora-7b", "chinese-alpaca-lora-13b"):
        spec = get(model_id)
        assert spec.vocab_size == 49954
        assert [v.format for v in spec.variants] == ["lora"]
        assert "LLaMA" in spec.notes  # says which base it needs


def test_superhot_says_it_needs_linear_rope_scaling():
    spec = get("superhot-8k")
    assert spec.context_length == 8192
    assert spec.variant().format == "lora"
    assert "rope_scaling" in spec.notes and "factor" in spec.notes


def test_causallm_runs_gguf_on_llamacpp_and_fp16_on_transformers():
    spec = get("causallm-14b")
    assert spec.backend_for(spec.variant("q4_0")) == "llamacpp"
    assert spec.backend_for(spec.variant("q8_0")) == "llamacpp"
    assert spec.backend_for(spec.variant("fp16")) == "transformers"
    assert 151645 in spec.stop_token_ids  # eos is 151643; without <|im_end|> it runs on


def test_qwen_chat_models_carry_their_default_system_prompt():
    assert get("qwen-14b-chat").default_system == "You are a helpful assistant."
    for model_id in ("qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct"):
        spec = get(model_id)
        assert spec.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        assert spec.backend_for(spec.variant("bf16")) == "transformers"
        assert 151645 in spec.stop_token_ids


def test_modelscope_mirrors_are_named_where_they_exist():
    def modelscope_repos(model_id):
        return {s.repo for v in get(model_id).variants for s in v.sources if s.kind == "modelscope"}

    assert "qwen/Qwen-14B-Chat" in modelscope_repos("qwen-14b-chat")
    assert "ZhipuAI/chatglm3-6b" in modelscope_repos("chatglm3-6b")


def test_base_models_are_not_marked_as_chat_models():
    for model_id in ("qwen-14b", "skywork-13b-base", "gemma-3-270m", "promptclue-base-v1-5"):
        assert get(model_id).chat is False, model_id
    assert get("qwen-14b-chat").chat is True


def test_no_catalog_model_is_marked_unsupported():
    # EVA2.0 was the last one (issue 18): it now runs through danlu's own port (tests/test_eva2_*.py)
    assert [m.id for m in MODELS.values() if m.unsupported] == []


def test_models_the_write_ups_discuss_carry_a_chinese_note_from_that_write_up():
    for seed, ids in SEED_MENTIONS.items():
        for model_id in ids:
            notes = [n.note for n in get(model_id).seed_notes if n.seed == seed]
            assert notes and all(_has_cjk(n) for n in notes), (seed, model_id)


def test_every_entry_knows_its_layer_count():
    for spec in MODELS.values():
        assert spec.shape.n_layers and spec.shape.n_embd, spec.id
