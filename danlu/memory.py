"""Measure the peak memory of a piece of work: resident memory on CPU; torch or NVML on GPU.

CPU: Linux keeps a process's resident high-water mark (`VmHWM` in /proc/self/status), and writing
"5" to /proc/self/clear_refs resets it, so the peak of one call is exact, not sampled. Resident
memory counts pages actually touched: for a memory-mapped GGUF that is every weight page the model
has read (all of them after one forward pass over a dense model), and for a malloc'd buffer only
the part written — llama.cpp reserves its compute buffer for the worst case but touches what the
graph uses. Where clear_refs is missing (macOS), a thread samples psutil's RSS instead.
GPU: `torch.cuda.max_memory_reserved` (what the caching allocator holds, the number that runs out)
when torch does the work; otherwise NVML's used memory on the device, sampled by a thread, which
also sees the CUDA context and llama.cpp's own allocations.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Peak:
    """The memory one call needed on one device: what was there before, the highest point, and how."""

    device: str  # "cpu" | "cuda"
    baseline_bytes: int
    peak_bytes: int
    method: str

    @property
    def delta_bytes(self) -> int:
        """What the call added on top of what the process already held."""
        return max(0, self.peak_bytes - self.baseline_bytes)


def measure_peak(fn: Callable[[], T], device: str = "cpu", interval_s: float = 0.01) -> tuple[T, Peak]:
    """Run `fn` and return its result with the peak memory on `device` while it ran."""
    if device == "cpu":
        return _measure_cpu(fn, interval_s)
    if _torch_cuda_active():
        return _measure_torch(fn)
    return _measure_nvml(fn, interval_s)


# ---------------------------------------------------------------- CPU: resident set

def status_bytes(key: str) -> int | None:
    """A `kB` line of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile) in bytes; None off Linux."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss() -> int:
    rss = status_bytes("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return int(psutil.Process().memory_info().rss)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not offer it."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _measure_cpu(fn: Callable[[], T], interval_s: float) -> tuple[T, Peak]:
    baseline = current_rss()
    if reset_peak_rss() and status_bytes("VmHWM") is not None:
        result = fn()
        return result, Peak("cpu", baseline, max(status_bytes("VmHWM") or 0, current_rss()), "VmHWM")
    with _Sampler(current_rss, interval_s) as sampler:
        result = fn()
    return result, Peak("cpu", baseline, max(sampler.peak, current_rss()), "sampled RSS")


class _Sampler:
    """Polls a reading in a background thread and keeps the highest value."""

    def __init__(self, read: Callable[[], int], interval_s: float):
        self.read, self.interval_s = read, interval_s
        self.peak = read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(self.interval_s)

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())


# ---------------------------------------------------------------- GPU

def _torch_cuda_active() -> bool:
    import sys

    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


def _measure_torch(fn: Callable[[], T]) -> tuple[T, Peak]:
    import torch

    torch.cuda.synchronize()
    baseline = torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return result, Peak("cuda", baseline, torch.cuda.max_memory_reserved(), "torch.cuda.max_memory_reserved")


def _measure_nvml(fn: Callable[[], T], interval_s: float) -> tuple[T, Peak]:
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        used = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)  # noqa: E731
        with _Sampler(used, interval_s) as sampler:
            baseline = sampler.peak
            result = fn()
        return result, Peak("cuda", baseline, sampler.peak, "NVML used memory (sampled)")
    finally:
        pynvml.nvmlShutdown()
