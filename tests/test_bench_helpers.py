"""The benchmarks' pure helpers (no timing), and the thread setting bench/raw_speed.py found ignored."""

import pytest

from bench import _llama_build, _machine
from bench.fit_table import markdown
from bench.raw_speed import summarize
from bench.serve_overhead import decode_tps


def test_decode_tps_counts_tokens_after_the_first_chunk():
    marks = [(10.0, 1), (10.5, 2), (11.0, 1)]  # the middle chunk held two tokens for a UTF-8 character
    assert decode_tps(marks) == {"tokens": 4, "decode_tps": 3.0}


def test_llama_bench_gets_the_wheels_options_and_cuda_only_when_asked(monkeypatch):
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_AVX512=OFF")
    cpu, cuda = _llama_build.wheel_cmake_args(False), _llama_build.wheel_cmake_args(True)
    assert "-DGGML_NATIVE=ON" in cpu and "-DCMAKE_BUILD_TYPE=Release" in cpu and "-DGGML_AVX512=OFF" in cpu
    assert "-DGGML_CUDA=on" in cuda and "-DGGML_CUDA=on" not in cpu


def test_raw_speed_ratio_is_of_medians():
    runs = [{"pp_tps": p, "tg_tps": t} for p, t in ((100, 10), (90, 9), (80, 30))]
    bench = [{"pp_tps": 100, "tg_tps": 10}] * 3
    parts = [{"eval_ms": 1.0, "eval_sample_ms": 1.1, "eval_sample_penalty_ms": 1.2}] * 3
    out = summarize("m", 1, 0, {"danlu": runs, "llama-bench": bench, "breakdown": parts})
    assert out["ratio"] == {"pp_tps": 0.9, "tg_tps": 1.0} and out["meets_goal"] == {"pp_tps": False, "tg_tps": True}


def test_fit_table_markdown_has_signed_error():
    row = {"id": "gemma-3-270m:q4_k_m", "n_ctx": 4096, "predicted_bytes": 101 << 20, "measured_bytes": 100 << 20,
           "error": 0.01}
    assert "| gemma-3-270m:q4_k_m | 4,096 | 101.0 MiB | 100.0 MiB | +1.0% |" in markdown([row])


def test_machine_info_has_cpu_cores_load_and_device():
    info = _machine.info()
    assert info["cores"] >= 1 and len(info["load_avg_at_start"]) == 3 and info["device"]["kind"] in ("cpu", "cuda")


@pytest.mark.weights
def test_threads_setting_also_bounds_prefill(gemma_path):
    from danlu.backends.base import LoadPlan
    from danlu.backends.llamacpp import load

    engine = load(None, None, LoadPlan(gemma_path, n_ctx=256, n_threads=1))
    try:
        assert engine.llm.context_params.n_threads_batch == 1
    finally:
        engine.close()
