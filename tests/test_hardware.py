"""Hardware detection, budgets, peak-memory measurement and the GGUF header reader."""

from __future__ import annotations

import sys
import types

import json
import subprocess
import textwrap

import pytest
from conftest import PRISTINE_ENV

from danlu import hardware
from danlu.hardware import GiB, GPU, Hardware, detect, with_budget


# ---------------------------------------------------------------- detection

def test_detect_reports_this_machine():
    hw = detect()
    assert hw.cpu_cores >= 1
    assert hw.ram_total_bytes >= hw.ram_available_bytes > 0
    assert all(g.total_bytes >= g.free_bytes >= 0 for g in hw.gpus)
    json.dumps(hw.to_dict())  # --json must serialise it


def test_budget_replaces_gpus_and_ram():
    base = Hardware(cpu_cores=8, ram_total_bytes=64 * GiB, ram_available_bytes=60 * GiB)
    six = with_budget(base, vram_gb=6, ram_gb=16)
    assert six.assumed and len(six.gpus) == 1
    assert six.vram_free_bytes == 6 * GiB and six.ram_available_bytes == 16 * GiB
    assert with_budget(six, vram_gb=0).gpus == ()
    assert with_budget(base).gpus == base.gpus and not with_budget(base).assumed


def test_the_gpu_with_most_free_memory_is_used():
    hw = Hardware(2, GiB, GiB, gpus=(GPU(0, "small", 8 * GiB, 2 * GiB), GPU(1, "big", 24 * GiB, 20 * GiB)))
    assert hw.gpu.name == "big" and hw.vram_free_bytes == 20 * GiB


def test_nvml_is_read_through_pynvml(monkeypatch):
    fake = types.SimpleNamespace(
        NVML_CLOCK_MEM=2,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}", nvmlDeviceGetName=lambda h: b"NVIDIA GeForce RTX 3060",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=12 * GiB, free=11 * GiB, used=GiB),
        nvmlDeviceGetMemoryBusWidth=lambda h: 192, nvmlDeviceGetMaxClockInfo=lambda h, kind: 7501,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (gpu,) = hardware._nvml_gpus()
    assert gpu.name == "NVIDIA GeForce RTX 3060" and gpu.total_bytes == 12 * GiB and gpu.free_bytes == 11 * GiB
    assert gpu.bandwidth == pytest.approx(360e9, rel=0.01)  # 192-bit × 7501 MHz × 2


def test_no_driver_means_no_gpu(monkeypatch):
    def broken_init():
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken_init))
    assert hardware._nvml_gpus() == []


def test_nvidia_smi_lines_are_parsed():
    gpu = hardware._parse_smi_line("0, NVIDIA GeForce GTX 1060 6GB, 6144, 5900")
    assert gpu == GPU(0, "NVIDIA GeForce GTX 1060 6GB", 6144 * 1024**2, 5900 * 1024**2)
    assert hardware._parse_smi_line("garbage") is None


def test_apple_silicon_shares_ram_with_the_gpu(monkeypatch):
    monkeypatch.setattr(hardware.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "arm64")
    (gpu,) = hardware._gpus(32 * GiB, 20 * GiB)
    assert gpu.kind == "mps" and gpu.total_bytes == 24 * GiB and gpu.free_bytes == 20 * GiB


def test_cpu_flags_are_a_set_of_words():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset) and all(" " not in f for f in flags)


# ---------------------------------------------------------------- peak memory

def _touch(n_bytes: int) -> int:
    block = bytearray(n_bytes)  # zero-filled: every page is written
    return len(block)


def _in_fresh_process(body: str) -> dict:
    """Peak RSS is per process: a long test session has freed-but-resident heap pages that a new
    allocation reuses without raising RSS, so these measurements run in a fresh interpreter."""
    code = "import json, time\nfrom danlu import memory\n" + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=PRISTINE_ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_peak_of_a_call_counts_what_it_touched():
    got = _in_fresh_process("""
        size, peak = memory.measure_peak(lambda: len(bytearray(64 * 1024**2)))  # zero-filled: every page written
        print(json.dumps({"size": size, "delta": peak.delta_bytes, "device": peak.device}))
    """)
    assert got["size"] == 64 * 1024**2
    assert 60 * 1024**2 <= got["delta"] <= 80 * 1024**2
    assert got["device"] == "cpu"


def test_sampling_fallback_when_the_peak_cannot_be_reset():
    got = _in_fresh_process("""
        memory.reset_peak_rss = lambda: False
        def slow_touch():
            block = bytearray(48 * 1024**2)
            time.sleep(0.1)  # long enough for the sampler to see it
            return len(block)
        _, peak = memory.measure_peak(slow_touch, interval_s=0.005)
        print(json.dumps({"method": peak.method, "delta": peak.delta_bytes}))
    """)
    assert got["method"] == "sampled RSS"
    assert got["delta"] >= 40 * 1024**2


# ---------------------------------------------------------------- GGUF header

def write_tiny_gguf(path):
    """A two-layer gemma3-shaped GGUF written with the gguf package (shared with test_fit)."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_key_length(32)
    writer.add_value_length(32)
    writer.add_context_length(1024)
    writer.add_sliding_window(128)
    writer.add_token_list([f"t{i}".encode() for i in range(100)])
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float16))
    for il in range(2):
        writer.add_tensor(f"blk.{il}.attn_q.weight", np.zeros((128, 64), dtype=np.float32))
        writer.add_tensor(f"blk.{il}.attn_norm.weight", np.zeros(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_header_is_read(tmp_path):
    from danlu.gguf_info import read_gguf

    info = read_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert (info.architecture, info.n_layers, info.n_embd, info.n_ff) == ("gemma3", 2, 64, 128)
    assert info.n_kv_heads == (1, 1) and (info.head_dim_k, info.head_dim_v) == (32, 32)
    assert (info.context_length, info.sliding_window, info.n_vocab) == (1024, 128, 100)
    assert info.swa_layers == (True, True)  # gemma3's pattern: one full layer in six
    assert info.tied_output
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert (embd.type_name, embd.shape, embd.n_bytes) == ("f16", (64, 100), 100 * 64 * 2)
    assert info.layer_bytes() == [128 * 64 * 4 + 64 * 4] * 2
    assert info.weight_bytes == 100 * 64 * 2 + 2 * (128 * 64 * 4 + 64 * 4)


def test_both_readers_agree(tmp_path):
    from pathlib import Path

    from danlu import gguf_info

    path = str(write_tiny_gguf(tmp_path / "tiny.gguf"))
    fast = gguf_info._summarize(Path(path), 0, *gguf_info._read_with_llamacpp(path))
    slow = gguf_info._summarize(Path(path), 0, *gguf_info._read_with_gguf_package(path))
    assert fast == slow


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path):
    from danlu.errors import DanluError
    from danlu.gguf_info import read_gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(DanluError, match="GGUF"):
        read_gguf(bad)


def test_swa_pattern_matches_llama_cpp():
    from danlu.gguf_info import swa_pattern

    full = [il for il, swa in enumerate(swa_pattern(18, 6)) if not swa]
    assert full == [5, 11, 17]  # what llama.cpp logs for gemma-3-270m
    assert swa_pattern(4, 4, dense_first=True) == (False, True, True, True)
    assert all(swa_pattern(3, 0))


@pytest.mark.weights
def test_gemma_header(gemma_path):
    from danlu.gguf_info import read_gguf

    info = read_gguf(gemma_path)
    assert (info.architecture, info.n_layers, info.n_vocab, info.sliding_window) == ("gemma3", 18, 262144, 512)
    assert info.weight_bytes == 246_587_904 and info.tied_output
    assert [il for il, swa in enumerate(info.swa_layers) if not swa] == [5, 11, 17]
