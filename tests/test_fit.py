"""The memory estimate, the plan and `danlu fit`: known shapes give known bytes, seed cases are pinned,
and on real weights the prediction is within 10% of the measured peak."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from conftest import PRISTINE_ENV
from typer.testing import CliRunner

from danlu import catalog
from danlu.catalog.schema import Architecture, ModelSpec, Variant
from danlu.fit import VERDICTS, DoesNotFit, LlamaOptions, check_fits, context_for, fit_catalog, load_plan_for, plan_model
from danlu.fit import estimate as est
from danlu.fit.plan import rwkv_strategy_estimate, rwkv_version
from danlu.fit.shape import Shape, repack_types, shape_from_spec
from danlu.fit.cli import fit_command
from danlu.hardware import GiB, Hardware, with_budget

MiB = 1024**2
NO_AVX = Hardware(cpu_cores=8, ram_total_bytes=64 * GiB, ram_available_bytes=64 * GiB)


def machine(vram_gb: float | None, ram_gb: float = 64) -> Hardware:
    return with_budget(NO_AVX, vram_gb, ram_gb)


def spec(**fields) -> ModelSpec:
    base = {"family": "test", "license": "test", "prompt_format": "chatml", "default_variant": fields["variants"][0].name}
    return ModelSpec(**{**base, **fields})


# Facts from shared/reference/models.md
QWEN_14B = spec(
    id="qwen-14b-facts", name="Qwen-14B", architecture="qwen", backend="transformers", params_b=14.17,
    context_length=8192, vocab_size=152064,
    shape=Architecture(n_layers=40, n_embd=5120, n_heads=40, n_kv_heads=40, head_dim=128),
    variants=[Variant(name="bf16", format="safetensors", bits_per_weight=16, size_bytes=28_340_000_000),
              Variant(name="gptq-int8", format="gptq", bits_per_weight=9.1, size_bytes=16_110_000_000),
              Variant(name="gptq-int4", format="gptq", bits_per_weight=5.54, size_bytes=9_810_000_000),
              Variant(name="q4_0", format="gguf", bits_per_weight=4.62, size_bytes=8_180_000_000, backend="llamacpp")],
)
CHATGLM3_6B = spec(
    id="chatglm3-6b-facts", name="ChatGLM3-6B", architecture="chatglm", backend="transformers", params_b=6.24,
    context_length=8192, vocab_size=65024,
    shape=Architecture(n_layers=28, n_embd=4096, n_heads=32, n_kv_heads=2, head_dim=128),
    # fp16 ~12.5 GB; `.quantize(4)` keeps embeddings and output in fp16: ~3.9 GB (as chatglm2-6b-int4's file)
    variants=[Variant(name="fp16", format="safetensors", bits_per_weight=16, size_bytes=12_480_000_000),
              Variant(name="int4", format="pytorch", bits_per_weight=5.0, size_bytes=3_920_000_000)],
)
RWKV5_7B = spec(
    id="rwkv5-facts", name="RWKV-5-World-7B", architecture="rwkv5", backend="rwkv", params_b=7.52,
    context_length=4096, vocab_size=65536, prompt_format="rwkv-world",
    shape=Architecture(n_layers=32, n_embd=4096, n_heads=64, head_dim=64),
    variants=[Variant(name="fp16", format="rwkv-pth", bits_per_weight=16, size_bytes=15_040_000_000)],
)
QWEN2_SHAPE = Shape("qwen2", 28, 1536, 8960, 12, (2,) * 28, 128, 128, 151936)
GEMMA3_SHAPE = Shape("gemma3", 18, 640, 2048, 4, (1,) * 18, 256, 256, 262144, 512,
                     tuple(il % 6 < 5 for il in range(18)))


# ---------------------------------------------------------------- arithmetic: known shapes, known bytes

def test_kv_cache_of_qwen2_1_5b_at_4096_is_112_mib():
    # 28 layers × 2 KV heads × 128 × (K + V) × 4096 cells × 2 bytes
    assert sum(est.llamacpp_kv_bytes(QWEN2_SHAPE, 4096)) == 28 * 2 * 128 * 2 * 4096 * 2 == 112 * MiB


def test_context_is_padded_to_256_cells():
    assert est.kv_cells(QWEN2_SHAPE, 500, LlamaOptions()) == (512,) * 28


def test_quantized_cache_types_cost_their_block_size():
    q8 = sum(est.llamacpp_kv_bytes(QWEN2_SHAPE, 4096, LlamaOptions(type_k="q8_0", type_v="q8_0")))
    assert q8 == int(112 * MiB * 34 / 32 / 2)


def test_gemma3_sliding_window_layers_keep_n_ctx_cells_by_default():
    # llama-cpp-python leaves swa_full on: all 18 layers hold 16384 cells (measured: 48 + 240 MiB)
    assert sum(est.llamacpp_kv_bytes(GEMMA3_SHAPE, 16384)) == 288 * MiB


def test_gemma3_sliding_window_layers_hold_only_the_window_without_swa_full():
    small = sum(est.llamacpp_kv_bytes(GEMMA3_SHAPE, 16384, LlamaOptions(swa_full=False)))
    # 3 full layers × 16384 cells + 15 window layers × pad(512 + 512) cells, 1 KiB per cell each
    assert small == 3 * 16384 * 1024 + 15 * 1024 * 1024


def test_window_layers_get_a_narrower_mask_without_swa_full():
    full = est.llamacpp_cpu_compute(GEMMA3_SHAPE, 16384, LlamaOptions())
    window = est.llamacpp_cpu_compute(GEMMA3_SHAPE, 16384, LlamaOptions(swa_full=False))
    assert full - window == (16384 - 1024) * 512 * 4  # the window layers' f32 mask spans 1024 cells, not 16384


def test_chatglm3_kv_cache_is_28_kib_per_token():
    shape = shape_from_spec(CHATGLM3_6B)
    assert est.transformers_kv_bytes(shape, 1, 2) == 28 * 1024


def test_rwkv_state_is_constant_in_context():
    shape = shape_from_spec(RWKV5_7B)
    # v5: per layer 2·n_embd in the model dtype + an n_embd × head_size fp32 matrix
    assert est.rwkv_state_bytes("rwkv5", shape, 2) == 32 * (2 * 4096 * 2 + 4096 * 64 * 4)
    assert est.rwkv_state_bytes("rwkv4", shape, 2) == 32 * (2 * 4096 * 2 + 3 * 4096 * 4)
    a = est.rwkv_estimate("rwkv5", shape, 7.52e9, 512, 33)
    b = est.rwkv_estimate("rwkv5", shape, 7.52e9, 4096, 33)
    assert a.total == b.total


def test_feed_forward_width_is_recovered_from_the_parameter_count():
    assert shape_from_spec(QWEN_14B).n_ff == pytest.approx(13696, rel=0.01)  # Qwen-14B's intermediate size


def test_cpu_compute_grows_with_context_and_heads():
    small, big = (est.llamacpp_cpu_compute(QWEN2_SHAPE, n, LlamaOptions()) for n in (512, 16384))
    # the last ubatch's f32 scores and their f16 copy: cells × 512 × 12 heads × 6 bytes
    assert big - small == pytest.approx((16384 - 512) * 512 * (12 * 6 + 4), rel=0.001)


def test_repacked_types_depend_on_the_cpu():
    assert "q4_k" in repack_types(frozenset({"avx2"}), "x86_64")
    assert "q2_k" in repack_types(frozenset({"avx2", "avx512f"}), "x86_64")
    assert repack_types(frozenset({"sse4_2"}), "x86_64") == frozenset()
    assert "q8_0" in repack_types(frozenset({"asimddp"}), "aarch64")


def test_llama_kwargs_are_read_like_llama_cpp_python_takes_them():
    opts = LlamaOptions.from_kwargs({"type_k": 8, "type_v": "q4_0", "swa_full": False, "n_ubatch": 256})
    assert (opts.type_k, opts.type_v, opts.swa_full, opts.n_ubatch) == ("q8_0", "q4_0", False, 256)


def test_partial_offload_moves_bytes_from_host_to_gpu():
    qwen_gguf = spec(id="qwen2-test", name="q", architecture="qwen2", backend="llamacpp", params_b=1.54,
                     context_length=32768, vocab_size=151936,
                     shape=Architecture(n_layers=28, n_embd=1536, n_heads=12, n_kv_heads=2, head_dim=128),
                     variants=[Variant(name="q8_0", format="gguf", bits_per_weight=8.5, size_bytes=1_650_000_000)])
    from danlu.fit.plan import llamacpp_inputs

    shape, weights, _ = llamacpp_inputs(qwen_gguf, qwen_gguf.variant(), NO_AVX, None)
    cpu, half, full = (est.llamacpp_estimate(shape, weights, 4096, k) for k in (0, 14, 28))
    assert cpu.gpu.total == 0 and half.gpu.weights < full.gpu.weights
    assert half.host.weights < cpu.host.weights and half.gpu.kv_cache == full.gpu.kv_cache // 2
    assert full.gpu.overhead == est.CUDA_CONTEXT


# ---------------------------------------------------------------- the plan: seed cases

def test_qwen_14b_fp16_does_not_fit_12_gb():
    result = plan_model(QWEN_14B, QWEN_14B.variant("bf16"), machine(12, ram_gb=16), 4096)
    assert result.verdict == "no-fit" and not result.fits
    assert "GiB" in result.reason


def test_qwen_14b_4bit_does_not_fit_6_gb():
    six = machine(6, ram_gb=16)
    gptq = plan_model(QWEN_14B, QWEN_14B.variant("gptq-int4"), six, 4096)
    assert gptq.verdict == "no-fit" and "GPU" in gptq.reason  # GPTQ runs only on a GPU
    gguf = plan_model(QWEN_14B, QWEN_14B.variant("q4_0"), six, 4096)
    assert gguf.verdict == "partial" and 0 < gguf.gpu_layers < 40  # the GGUF spills to RAM instead


def test_qwen_14b_4bit_fits_24_gb():
    result = plan_model(QWEN_14B, QWEN_14B.variant("gptq-int4"), machine(24), 4096)
    assert result.verdict == "gpu"


def test_chatglm3_6b_int4_fits_6_gb():
    result = plan_model(CHATGLM3_6B, CHATGLM3_6B.variant("int4"), machine(6, ram_gb=16), 4096)
    assert result.verdict == "gpu", result.reason
    assert result.estimate.gpu.total < 6 * GiB


def test_chatglm3_6b_fp16_needs_a_12_gb_card_or_the_cpu():
    assert plan_model(CHATGLM3_6B, CHATGLM3_6B.variant("fp16"), machine(6), 2048).verdict == "cpu"
    assert plan_model(CHATGLM3_6B, CHATGLM3_6B.variant("fp16"), machine(16), 2048).verdict == "gpu"


@pytest.mark.parametrize("variant, published_gb", [("bf16", 30.2), ("gptq-int8", 18.8), ("gptq-int4", 13.0)])
def test_qwen_14b_chat_estimate_is_near_its_published_memory(variant, published_gb):
    """Qwen's README: Qwen-14B-Chat generating 2048 tokens takes 30.2 / 18.8 / 13.0 GB."""
    result = plan_model(QWEN_14B, QWEN_14B.variant(variant), machine(80), 2048)
    assert result.estimate.gpu.total / 1e9 == pytest.approx(published_gb, rel=0.15)


def test_a_remote_model_needs_no_local_memory():
    remote = spec(id="remote-test", name="r", architecture="llama", backend="remote", params_b=70, context_length=8192,
                  vocab_size=32000, variants=[Variant(name="api", format="safetensors", bits_per_weight=16, size_bytes=0)])
    result = plan_model(remote, remote.variant(), machine(0, ram_gb=1), 8192)
    assert result.verdict == "remote" and result.fits and result.predicted_bytes == 0


def test_rwkv_gets_a_strategy_string_for_the_card():
    from danlu.rwkv_strategy import validate

    plans = {vram: plan_model(RWKV5_7B, RWKV5_7B.variant(), machine(vram, ram_gb=32), 4096) for vram in (24, 12, 6, 0)}
    assert plans[24].strategy == "cuda bf16" and plans[24].verdict == "gpu"  # RWKV-5: bf16, fp16 overflows
    assert plans[12].strategy == "cuda bf16i8" and plans[12].verdict == "gpu"
    assert plans[6].verdict == "partial" and plans[6].strategy.startswith("cuda bf16i8 *")
    assert plans[0].verdict == "cpu" and plans[0].strategy.startswith("cpu")
    for plan in plans.values():
        validate(plan.strategy, rwkv_version("rwkv5"))
        assert plan.strategy in plan.reason


def test_rwkv_strategy_strings_are_estimated_segment_by_segment():
    shape = shape_from_spec(RWKV5_7B)
    streamed = rwkv_strategy_estimate("rwkv5", shape, 7.52e9, 4096, "cuda bf16i8 *20+")
    split = rwkv_strategy_estimate("rwkv5", shape, 7.52e9, 4096, "cuda bf16i8 *20 -> cpu fp32")
    assert streamed.gpu_layers == split.gpu_layers == 20
    assert split.host.weights == pytest.approx(streamed.host.weights * 4 / 1.02, rel=0.001)  # fp32 vs int8 in RAM


def test_ranking_is_best_first_with_a_reason_on_every_line():
    models = (QWEN_14B, CHATGLM3_6B, RWKV5_7B)
    results = fit_catalog(machine(6, ram_gb=16), 4096, models=models)
    order = [r.fits for r in results]
    assert order == sorted(order, reverse=True)  # everything that fits comes before what does not
    assert all(r.reason and " / " in r.reason for r in results)
    assert results[0].model_id == "chatglm3-6b-facts" and results[0].variant == "int4"


def test_check_fits_refuses_with_numbers_and_alternatives():
    with pytest.raises(DoesNotFit) as caught:
        check_fits(QWEN_14B, QWEN_14B.variant("bf16"), machine(12, ram_gb=16), 4096)
    message = str(caught.value)
    chinese, english = message.split("\n")
    assert "放不下" in chinese and "does not fit" in english and "GiB" in chinese
    assert "--force" in english
    assert caught.value.alternatives and all(a.fits for a in caught.value.alternatives)
    assert "qwen-14b-facts:bf16" not in chinese.split("能跑的有")[1]
    assert "30." in chinese and "GPU" in english  # the numbers: ~30 GiB needed


def test_check_fits_can_be_forced_and_gives_a_load_plan(tmp_path):
    forced = check_fits(QWEN_14B, QWEN_14B.variant("bf16"), machine(12, ram_gb=16), 4096, force=True)
    assert forced.verdict == "no-fit"
    partial = check_fits(QWEN_14B, QWEN_14B.variant("q4_0"), machine(6, ram_gb=16), 4096)
    plan = load_plan_for(partial, tmp_path / "model.gguf", n_threads=2)
    assert plan.gpu_layers == partial.gpu_layers > 0 and plan.n_ctx == 4096


@pytest.mark.weights
def test_a_bare_gguf_path_is_checked_from_its_header(gemma_path):
    from danlu.fit import check_path_fits

    ok = check_path_fits(gemma_path, machine(0, ram_gb=4), 4096)
    assert ok.verdict == "cpu" and ok.estimate.source == "GGUF header"
    with pytest.raises(DoesNotFit, match="gemma-3-270m-q4_k_m.gguf"):
        check_path_fits(gemma_path, machine(0, ram_gb=0.25), 4096)
    assert check_path_fits(gemma_path.with_suffix(".bin"), machine(0), 4096) is None


# ---------------------------------------------------------------- the real catalog

def _catalog_result(results, model_id, variant):
    return next((r for r in results if (r.model_id, r.variant) == (model_id, variant)), None)


@pytest.mark.parametrize("vram", [6, 12, 24])
def test_catalog_rankings_for_common_cards(vram):
    results = fit_catalog(machine(vram, ram_gb=16), 4096)
    assert len(results) == sum(len(s.variants) for s in catalog.all_models())
    fits = [r.fits for r in results]
    assert fits == sorted(fits, reverse=True)
    usable = [r.fits and r.tokens_per_s >= 2 for r in results]
    assert usable == sorted(usable, reverse=True)
    qwen14 = _catalog_result(results, "qwen-14b", "bf16")
    if qwen14 is not None:
        assert qwen14.verdict != "gpu"
    int4 = _catalog_result(results, "qwen-14b-chat", "gptq-int4")
    if int4 is not None and vram == 6:
        assert int4.verdict == "no-fit"
    small = _catalog_result(results, "qwen2.5-coder-1.5b-instruct", "q4_k_m")
    assert small is not None and small.verdict == "gpu"


# ---------------------------------------------------------------- the command

def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("fit")(fit_command)

    @app.command("version")
    def version() -> None:  # a second command keeps `fit` a sub-command
        print("test")

    return app


def test_fit_json_carries_id_variant_bytes_and_verdict():
    out = CliRunner().invoke(_app(), ["fit", "--vram", "6", "--ram", "16", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["n_ctx"] == 4096 and data["hardware"]["gpus"][0]["total_bytes"] == 6 * GiB
    for row in data["models"]:
        assert {"id", "variant", "predicted_bytes", "verdict", "reason"} <= row.keys()
        assert row["verdict"] in VERDICTS


def test_fit_table_names_each_verdict():
    out = CliRunner().invoke(_app(), ["fit", "--vram", "12", "--ram", "16", "--ctx", "2048"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "qwen2.5-coder-1.5b-instruct" in out.output and "GPU" in out.output and "2048" in out.output


def test_fit_hardware():
    out = CliRunner().invoke(_app(), ["fit", "--hardware", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["cpu_cores"] >= 1
    out = CliRunner().invoke(_app(), ["fit", "--hardware"])
    assert out.exit_code == 0 and "CPU" in out.output


def test_fit_unknown_model_is_a_message_not_a_traceback():
    out = CliRunner().invoke(_app(), ["fit", "no-such-model"])
    assert out.exit_code == 1 and "no-such-model" in out.output and "Traceback" not in out.output


def test_measure_json_has_predicted_measured_and_error(monkeypatch, tmp_path):
    from test_hardware import write_tiny_gguf

    from danlu.fit.measure import Measurement
    from danlu.memory import Peak

    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    measured = Measurement("llamacpp", 512, 512, Peak("cpu", 40 * MiB, 50 * MiB, "VmHWM"), None, 0.5, {})
    monkeypatch.setattr("danlu.fit.api.measure_in_subprocess", lambda *a, **k: measured)
    out = CliRunner().invoke(_app(), ["fit", str(gguf_file), "--measure", "--ctx", "512", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["measured_bytes"] == 10 * MiB
    assert report["error"] == pytest.approx((report["predicted_bytes"] - 10 * MiB) / (10 * MiB), abs=1e-4)
    out = CliRunner().invoke(_app(), ["fit", str(gguf_file), "--measure", "--ctx", "512"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "VmHWM" in out.output


def test_measure_needs_downloaded_weights():
    out = CliRunner().invoke(_app(), ["fit", "gemma-3-270m", "--measure"])
    assert out.exit_code == 1 and "danlu pull gemma-3-270m" in out.output


# ---------------------------------------------------------------- measured: within 10%

@pytest.mark.weights
def test_gemma_prediction_within_10_percent_at_ctx_512(home_with_models):
    out = CliRunner().invoke(_app(), ["fit", "gemma-3-270m", "--measure", "--ctx", "512", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert {"predicted_bytes", "measured_bytes", "error"} <= report.keys()
    assert report["measured_bytes"] > 200 * MiB  # the weights (235 MiB mapped) were really read
    assert abs(report["error"]) <= 0.10, report


@pytest.mark.isolated
def test_tiny_transformers_prediction_within_10_percent(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                                      tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny-llama")
    # as a user runs it: a fresh `danlu fit --measure` process, with the environment from before the test session
    done = subprocess.run([sys.executable, "-m", "danlu.cli", "fit", str(tmp_path / "tiny-llama"), "--measure", "--ctx", "512",
                           "--json"], capture_output=True, text=True, timeout=600, env={**PRISTINE_ENV, "DANLU_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["measured_bytes"] > 20 * MiB
    assert abs(report["error"]) <= 0.10, report


@pytest.mark.weights
@pytest.mark.slow
def test_qwen_prediction_within_10_percent_at_ctx_512(qwen_path):
    from danlu.fit import measure

    report = measure(str(qwen_path), 512)
    assert report.measured_bytes > GiB  # 1.04 GiB of weights mapped and read, plus the repacked Q4_K copies
    assert abs(report.error) <= 0.10, report.to_dict()


# ---------------------------------------------------------------- room for thinking (issue 14)

def test_context_for_adds_the_thinking_budget_within_the_models_own_context():
    assert context_for(catalog.get("qwen3-8b"), 4096) == 32768  # 4096 + 32768, capped at Qwen3's 32K
    assert context_for(catalog.get("deepseek-r1-distill-qwen-7b"), 4096) == 4096 + 32768
    assert context_for(catalog.get("qwen3-4b-instruct-2507"), 4096) == 4096  # never thinks
    assert context_for(catalog.get("qwen2.5-coder-1.5b-instruct"), 4096) == 4096
    assert context_for(catalog.get("rwkv7-g1-1.5b"), 4096) == 4096  # an RNN: no budget, no KV cache to grow


def test_a_thinking_model_is_planned_with_a_larger_kv_cache_and_says_why():
    base = dict(id="t", name="T", family="t", architecture="qwen3", backend="llamacpp", params_b=8.19,
                context_length=32768, vocab_size=151936, license="x", prompt_format="chatml", default_variant="q",
                shape=Architecture(n_layers=36, n_embd=4096, n_heads=32, n_kv_heads=8, head_dim=128),
                variants=[Variant(name="q", format="gguf", bits_per_weight=4.9, size_bytes=5_000_000_000)])
    plain = ModelSpec(**base)
    thinking = ModelSpec(**{**base, "thinking": "hybrid", "reasoning_parser": "think", "thinking_budget": 8192})
    hw = machine(24, ram_gb=32)
    without = fit_catalog(hw, 4096, models=(plain,))[0]
    with_room = fit_catalog(hw, 4096, models=(thinking,))[0]
    assert (without.n_ctx, without.thinking_tokens) == (4096, 0)
    assert (with_room.n_ctx, with_room.thinking_tokens) == (4096 + 8192, 8192)
    kv = lambda r: r.estimate.gpu.kv_cache + r.estimate.host.kv_cache  # noqa: E731
    assert kv(with_room) == 3 * kv(without)  # 36 layers x 8 heads x 128 x (K+V) x 2 bytes per cell, 3x the cells
    assert "8192" in with_room.reason and "thinking" in with_room.reason


def test_fit_vram_12_ranks_the_2025_models_with_the_rest():
    out = CliRunner().invoke(_app(), ["fit", "--vram", "12", "--ram", "16", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["models"]
    ids = {row["id"] for row in rows}
    assert {"qwen3-8b", "qwen3-14b", "deepseek-r1-distill-qwen-7b", "glm-z1-9b-0414", "rwkv7-g1-7.2b",
            "internlm3-8b-instruct", "minicpm4-8b", "yi-1.5-9b-chat", "qwen2.5-coder-0.5b-instruct"} <= ids
    assert len(rows) == sum(len(s.variants) for s in catalog.all_models())
    fits = [row["verdict"] in ("gpu", "partial", "cpu", "remote") for row in rows]
    assert fits == sorted(fits, reverse=True) and any(fits) and not all(fits)
    by_id = {(row["id"], row["variant"]): row for row in rows}
    assert by_id[("qwen3-8b", "q4_k_m")]["thinking_tokens"] > 0 and by_id[("qwen3-8b", "q4_k_m")]["n_ctx"] > 4096
    assert by_id[("yi-1.5-9b-chat", "q4_k_m")]["thinking_tokens"] == 0


def test_fit_table_lists_the_2025_models():
    out = CliRunner().invoke(_app(), ["fit", "--vram", "12", "--ram", "16"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    for model_id in ("qwen3-8b", "deepseek-r1-distill-qwen-7b", "glm-4-9b-0414", "rwkv-7-world-2.9b"):
        assert model_id in out.output
