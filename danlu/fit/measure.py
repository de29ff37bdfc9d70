"""Measure a model's real peak memory: load it, fill the context to n_ctx tokens, read the peak.

Each measurement runs in a fresh Python process (`python -m danlu.fit.measure`), so the peak
belongs to this one load, not to whatever the parent process held or freed before. What is
measured: the resident-set high-water mark (VmHWM) minus the resident set just before loading,
after the runtime (llama_cpp, or torch and transformers) is imported — i.e. what the model adds.
Resident memory counts every page of the memory-mapped GGUF that the forward passes read (all of
a dense model's weights) and only the touched part of malloc'd buffers. On a GPU, device memory
is read as well (NVML for llama.cpp, torch's allocator for transformers).

The context is filled the way danlu's llama.cpp backend fills it: one `Llama.eval` over n_ctx
tokens of real text, which llama-cpp-python splits into n_batch-sized decodes. A served model
(`llamacpp_pool`) is loaded with the server's batched engine and KV pool, and every decode lane
fills its context at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from danlu.errors import DanluError
from danlu.memory import Peak, measure_peak, status_bytes

MMAP_THRESHOLD = 1 << 20
FILLER = "丹炉在本机测量内存：把上下文填满，再读峰值。The furnace measures memory by filling the context. "


@dataclass(frozen=True)
class Measurement:
    """One measured run: the host (and GPU) peaks over the baseline, and how long it took."""

    backend: str
    n_ctx: int
    tokens: int
    host: Peak
    gpu: Peak | None
    seconds: float
    detail: dict[str, Any]

    @property
    def measured_bytes(self) -> int:
        return self.host.delta_bytes + (self.gpu.delta_bytes if self.gpu else 0)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["measured_bytes"] = self.measured_bytes
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        gpu = Peak(**data["gpu"]) if data.get("gpu") else None
        return cls(data["backend"], data["n_ctx"], data["tokens"], Peak(**data["host"]), gpu,
                   data["seconds"], data["detail"])


def measure_in_subprocess(backend: str, path: Path, n_ctx: int, n_threads: int = 2, gpu_layers: int = 0,
                          llama_kwargs: dict | None = None, timeout_s: float = 1800) -> Measurement:
    """Run one measurement in a child process and return what it reports."""
    request = {"backend": backend, "path": str(path), "n_ctx": n_ctx, "n_threads": n_threads,
               "gpu_layers": gpu_layers, "llama_kwargs": llama_kwargs or {}}
    cmd = [sys.executable, "-m", "danlu.fit.measure", json.dumps(request)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=_child_env())
    except subprocess.TimeoutExpired as exc:
        raise DanluError(f"测量超时（{timeout_s:.0f} 秒）/ measurement timed out after {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise DanluError("测量进程失败 / the measuring process failed:\n" + "\n".join(tail))
    return Measurement.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _child_env() -> dict[str, str]:
    """glibc raises its mmap threshold as big blocks are freed, after which freed activations stay in
    the heap and the peak swings ±30% from run to run; pinning it makes the peak the live bytes."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}


# ---------------------------------------------------------------- in the child process

def _run_llamacpp(request: dict) -> Measurement:
    import llama_cpp

    def work() -> tuple[Any, int]:
        llm = llama_cpp.Llama(model_path=request["path"], n_ctx=request["n_ctx"], n_threads=request["n_threads"],
                              n_gpu_layers=request["gpu_layers"], use_mmap=True, verbose=False,
                              **request["llama_kwargs"])
        tokens = _filler_tokens(lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False),
                                request["n_ctx"], llm.token_bos())
        llm.eval(tokens)
        return llm, len(tokens)

    return _timed("llamacpp", request, work, on_gpu=request["gpu_layers"] > 0)


def _run_llamacpp_pool(request: dict) -> Measurement:
    """The server's batched engine with its KV pool (`llama_kwargs` is the layout): every decode lane reads a
    prompt of n_ctx − 1 tokens at once, in full batches (the largest step the engine takes: a fast machine)."""
    from danlu.backends import llamacpp_batched
    from danlu.backends.base import GenerationParams, LoadPlan

    llamacpp_batched.STEP_TARGET_S = 1e9  # no cut of a prefill step below N_BATCH tokens
    layout = request["llama_kwargs"]

    def work() -> tuple[Any, int]:
        plan = LoadPlan(Path(request["path"]), n_ctx=request["n_ctx"], n_threads=request["n_threads"],
                        gpu_layers=request["gpu_layers"], extra=layout)
        engine = llamacpp_batched.load(None, None, plan)
        tokens = _filler_tokens(engine.tokenize, request["n_ctx"] + layout["parallel"], engine.bos_token_id())
        prompts = [tokens[:1] + tokens[1 + lane:request["n_ctx"] - 1 + lane] for lane in range(layout["parallel"])]
        streams = [engine.generate(p, GenerationParams(max_tokens=1, temperature=0)) for p in prompts]
        threads = [threading.Thread(target=list, args=(s,)) for s in streams]  # all lanes at once, as clients do
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return engine, sum(len(p) for p in prompts)

    return _timed("llamacpp_pool", request, work, on_gpu=request["gpu_layers"] > 0)


def _filler_tokens(tokenize, n_ctx: int, bos: int | None) -> list[int]:
    """Exactly n_ctx tokens of ordinary text, starting with BOS where the model has one."""
    piece = tokenize(FILLER)
    head = [bos] if bos is not None and bos >= 0 else []
    body = (piece * (n_ctx // max(len(piece), 1) + 1))[: n_ctx - len(head)]
    return head + body


def _run_transformers(request: dict) -> Measurement:
    import torch
    import transformers

    device = "cuda" if request["gpu_layers"] > 0 and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(request["n_threads"])
    # import the model's class before the baseline: transformers loads modeling code lazily
    config = transformers.AutoConfig.from_pretrained(request["path"])
    model_class = getattr(transformers, config.architectures[0])

    def work() -> tuple[Any, int]:
        model = model_class.from_pretrained(request["path"], dtype="auto").to(device)
        ids = torch.arange(request["n_ctx"], device=device).remainder(model.config.vocab_size - 1)[None, :] + 1
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return (model, out), request["n_ctx"]

    return _timed("transformers", request, work, on_gpu=device == "cuda")


def _timed(backend: str, request: dict, work, on_gpu: bool) -> Measurement:
    start = time.perf_counter()
    if on_gpu:
        ((_, tokens), gpu), host = measure_peak(lambda: measure_peak(work, "cuda"), "cpu")
    else:
        (_, tokens), host = measure_peak(work, "cpu")
        gpu = None
    detail = {k: status_bytes(k) for k in ("RssAnon", "RssFile")}
    return Measurement(backend, request["n_ctx"], tokens, host, gpu, round(time.perf_counter() - start, 2), detail)


RUNNERS = {"llamacpp": _run_llamacpp, "llamacpp_pool": _run_llamacpp_pool, "transformers": _run_transformers}


def main(argv: list[str]) -> None:
    request = json.loads(argv[0])
    measurement = RUNNERS[request["backend"]](request)
    print(json.dumps(measurement.to_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
