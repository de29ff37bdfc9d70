"""RWKV strategy strings: where each layer runs and in what precision, chosen from the memory there is.

The `rwkv` package takes `(cuda[:n]|cpu|mps) (fp16|fp32|bf16)(i8)? *N[+]` segments joined by `->`:
`cuda fp16i8 *20+ -> cpu fp32` keeps 20 layers on the GPU in int8 and streams the rest. danlu picks
one from the machine's free RAM / VRAM and the checkpoint's size; the user can always pass their own
(validated here with the package's own grammar, so a typo is a message, not a ValueError from deep
inside). Precision rules from the model facts: CPUs need fp32 (or bf16 when short of memory);
RWKV-4 runs fp16 on CUDA (the package rescales layers to avoid overflow), RWKV-5 and later use bf16
(fp16 overflows); RWKV-7 supports neither int8 nor split strategies in the `rwkv` package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from danlu.errors import DanluError

#: The grammar rwkv/model.py accepts (copied so danlu can say what is wrong before loading 14 GB).
STRATEGY_RE = re.compile(
    r"^(?:(?:^|->) *(?:cuda(?::[\d]+)?|cpu|mps|dml) (?:fp(?:16|32)|bf16)(?:i8|i4|i3)?(?: \*[\d]+\+?)? *)+$"
)
#: Share of free memory a plan may use: the rest is for activations, the state and everyone else.
HEADROOM = 0.85


@dataclass(frozen=True)
class Memory:
    """Free memory in bytes; vram is None without CUDA."""

    ram: int
    vram: int | None = None


def machine_memory() -> Memory:
    """What this machine has free now."""
    import psutil

    vram = None
    try:
        import torch

        if torch.cuda.is_available():
            vram = int(torch.cuda.mem_get_info()[0])
    except ImportError:
        pass
    return Memory(int(psutil.virtual_memory().available), vram)


def validate(strategy: str, version: float = 4) -> str:
    """The strategy normalised as the package writes it, or a DanluError saying what is wrong."""
    text = " -> ".join(" ".join(part.split()) for part in strategy.split("->"))
    if not STRATEGY_RE.match(text):
        raise DanluError(
            f"RWKV 策略写法不对：{strategy!r}；例如 'cpu fp32'、'cuda fp16'、'cuda fp16i8 *20+ -> cpu fp32' / "
            f"invalid RWKV strategy {strategy!r}; e.g. 'cpu fp32', 'cuda fp16', 'cuda fp16i8 *20+ -> cpu fp32'"
        )
    if version >= 7 and ("->" in text or "i8" in text or "*" in text):
        raise DanluError(
            f"RWKV-7 只支持单一设备与精度（如 'cuda bf16' 或 'cpu fp32'），不支持 {text!r} / "
            f"RWKV-7 in the rwkv package takes one device and precision (e.g. 'cuda bf16', 'cpu fp32'), not {text!r}"
        )
    return text


def choose(weights_bytes: int, n_layer: int, version: float, memory: Memory) -> str:
    """The fastest strategy that fits; `weights_bytes` is the checkpoint at 16 bits per weight."""
    if memory.vram:
        on_gpu = _gpu_strategy(weights_bytes, n_layer, version, memory)
        if on_gpu:
            return on_gpu
    return _cpu_strategy(weights_bytes, version, memory.ram)


def _cpu_strategy(weights_bytes: int, version: float, ram: int) -> str:
    budget = ram * HEADROOM
    if budget >= 2 * weights_bytes or version >= 7 and budget >= weights_bytes * 1.2:
        return "cpu fp32"
    if budget >= weights_bytes or version >= 7:
        return "cpu bf16"  # half the memory, slower and less exact than fp32 on most CPUs
    return "cpu fp32i8"


def _gpu_strategy(weights_bytes: int, n_layer: int, version: float, memory: Memory) -> str | None:
    dtype = "fp16" if version < 5 else "bf16"
    budget = memory.vram * HEADROOM
    if budget >= weights_bytes:
        return f"cuda {dtype}"
    if version >= 7:
        return None  # no int8 or split strategies for v7: fall back to the CPU
    if budget >= weights_bytes / 2:
        return f"cuda {dtype}i8"
    per_layer = weights_bytes / 2 / (n_layer + 1)
    layers = int(budget // per_layer)
    if layers < 1:
        return None
    rest_fp32 = (n_layer + 1 - layers) * per_layer * 4  # int8 → fp32 is 4×
    tail = " -> cpu fp32" if memory.ram * HEADROOM >= rest_fp32 else "+"
    return f"cuda {dtype}i8 *{layers}{tail}"


def describe(strategy: str) -> str:
    """A one-line explanation for `danlu fit` and the load message."""
    parts = []
    for segment in validate(strategy, 4).split(" -> "):
        device, precision, *count = segment.split()
        where = "GPU" if device.startswith("cuda") else device.upper()
        quant = "，int8 权重 / int8 weights" if precision.endswith("i8") else ""
        layers = f"{count[0].strip('*+')} 层 / layers" + ("（其余流式 / rest streamed）" if count[0].endswith("+") else "") if count else "其余各层 / the rest"
        parts.append(f"{where} {precision.removesuffix('i8')}{quant}: {layers}")
    return "; ".join(parts)
