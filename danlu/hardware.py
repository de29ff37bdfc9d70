"""What this machine has: CPU cores and features, RAM, NVIDIA GPUs, Apple MPS.

GPUs are found through NVML (`nvidia-ml-py`) first, then `torch.cuda` where a driver is present,
then `nvidia-smi`; Apple silicon shares its RAM with the GPU (MPS). `detect()` never raises: a
missing driver or library means no GPU. `with_budget()` swaps in memory sizes a user asks about
("what if I had a 6 GB card?"), which is how `danlu fit --vram 6` ranks models for another machine.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

GiB = 1024**3
# Apple's Metal lets a process use about three quarters of unified memory (recommendedMaxWorkingSetSize)
MPS_SHARE = 0.75
# the CPU features llama.cpp's kernels and repacking choose by
RELEVANT_FLAGS = frozenset({"avx", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "f16c", "fma",
                            "neon", "asimd", "asimddp", "i8mm", "sve"})


@dataclass(frozen=True)
class GPU:
    """One accelerator: total and free memory in bytes; bandwidth in bytes/s when the driver says."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    kind: str = "cuda"  # "cuda" | "mps"
    bandwidth: float | None = None


@dataclass(frozen=True)
class Hardware:
    """The machine a plan is made for; `assumed` marks sizes given by the user rather than detected."""

    cpu_cores: int
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GPU, ...] = ()
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    machine: str = field(default_factory=platform.machine)
    assumed: bool = False

    @property
    def gpu(self) -> GPU | None:
        """The GPU a single-device plan uses: the one with the most free memory."""
        return max(self.gpus, key=lambda g: g.free_bytes, default=None)

    @property
    def vram_free_bytes(self) -> int:
        return self.gpu.free_bytes if self.gpu else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cpu_flags"] = sorted(self.cpu_flags & RELEVANT_FLAGS)
        return data


def detect() -> Hardware:
    """The machine this process runs on."""
    total, available = _ram()
    return Hardware(cpu_cores=os.cpu_count() or 1, ram_total_bytes=total, ram_available_bytes=available,
                    gpus=tuple(_gpus(total, available)), cpu_flags=cpu_flags())


def with_budget(base: Hardware, vram_gb: float | None = None, ram_gb: float | None = None) -> Hardware:
    """The same machine with the memory a user asks about: `vram_gb` replaces the GPUs by one card
    of that size (0 removes them), `ram_gb` replaces the RAM. Sizes are GiB, as cards are sold."""
    hw = base
    if vram_gb is not None:
        card = GPU(0, f"{vram_gb:g} GB GPU", int(vram_gb * GiB), int(vram_gb * GiB))
        hw = replace(hw, gpus=(card,) if vram_gb > 0 else (), assumed=True)
    if ram_gb is not None:
        hw = replace(hw, ram_total_bytes=int(ram_gb * GiB), ram_available_bytes=int(ram_gb * GiB), assumed=True)
    return hw


def _ram() -> tuple[int, int]:
    try:
        import psutil

        mem = psutil.virtual_memory()
        return int(mem.total), int(mem.available)
    except ImportError:  # /proc/meminfo says the same on Linux
        info = _meminfo()
        return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def cpu_flags() -> frozenset[str]:
    """CPU features from /proc/cpuinfo (x86 `flags`, ARM `Features`); llama.cpp's repacking depends on them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset({"neon", "dotprod"}) if platform.machine() == "arm64" else frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _gpus(ram_total: int, ram_available: int) -> list[GPU]:
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        share = int(ram_total * MPS_SHARE)
        return [GPU(0, "Apple GPU (MPS, unified memory)", share, min(share, ram_available), kind="mps")]
    for probe in (_nvml_gpus, _torch_gpus, _nvidia_smi_gpus):
        found = probe()
        if found:
            return found
    return []


def _nvml_gpus() -> list[GPU]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, or no device: all mean "no GPU through NVML"
        return []
    try:
        return [_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return []
    finally:
        pynvml.nvmlShutdown()


def _nvml_gpu(pynvml, index: int) -> GPU:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:  # bytes/s = bus width in bytes × memory clock × 2 (double data rate)
        bandwidth = pynvml.nvmlDeviceGetMemoryBusWidth(handle) / 8 * pynvml.nvmlDeviceGetMaxClockInfo(
            handle, pynvml.NVML_CLOCK_MEM) * 1e6 * 2
    except Exception:
        bandwidth = None
    return GPU(index, name.decode() if isinstance(name, bytes) else name, int(mem.total), int(mem.free),
               bandwidth=bandwidth or None)


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or platform.system() == "Windows"


def _torch_gpus() -> list[GPU]:
    # importing torch costs seconds; only worth it where an NVIDIA driver exists
    if not _nvidia_driver_present() or importlib.util.find_spec("torch") is None:
        return []
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [_torch_gpu(torch, i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _torch_gpu(torch, index: int) -> GPU:
    free, total = torch.cuda.mem_get_info(index)
    return GPU(index, torch.cuda.get_device_name(index), int(total), int(free))


def _nvidia_smi_gpus() -> list[GPU]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [gpu for line in out.splitlines() if (gpu := _parse_smi_line(line))]


def _parse_smi_line(line: str) -> GPU | None:
    """`0, NVIDIA GeForce RTX 3060, 12288, 11950` (MiB) → GPU."""
    parts = [p.strip() for p in line.split(",")]
    try:
        return GPU(int(parts[0]), parts[1], int(float(parts[2])) * 1024**2, int(float(parts[3])) * 1024**2)
    except (IndexError, ValueError):
        return None
