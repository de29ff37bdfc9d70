"""What every benchmark records about where it ran: CPU model, cores, load average at start, the device.

The machines these figures come from are shared, so the load average at the start is part of the
result: a ratio taken at load 6 on 2 cores is noisier than one taken at load 0.3.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 `model name`), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device() -> dict:
    """The accelerator danlu would offload to (first CUDA GPU by free memory), or the CPU."""
    from danlu.hardware import detect

    gpu = detect().gpu
    if gpu is None or gpu.kind != "cuda":
        return {"kind": "cpu", "name": cpu_model()}
    return {"kind": "cuda", "name": gpu.name, "memory_bytes": gpu.total_bytes}


def info() -> dict:
    """Machine facts for a result's JSON, taken once at the start of a run."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_at_start": load_now(), "device": device(), "omp_env": omp_env()}


def omp_env() -> dict:
    """OpenMP settings llama.cpp's CPU threads obey: with libgomp's default active spin-waiting, 2 threads on a
    busy 2-core machine collapse (0.3-3 tok/s instead of ~20); OMP_WAIT_POLICY=passive avoids it."""
    return {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))}


def load_now() -> list[float]:
    """The 1/5/15-minute load averages now (recorded again at the end of a run)."""
    return [round(x, 2) for x in os.getloadavg()]


def label(machine: dict) -> str:
    """A short line for a plot title."""
    dev = machine["device"]
    where = dev["name"] if dev["kind"] != "cpu" else f"{machine['cores']} cores"
    return f"{machine['cpu']} · {where} · load {machine['load_avg_at_start'][0]}"
