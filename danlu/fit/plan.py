"""The plan: where a model goes on a machine, and whether it fits at all.

For each catalog model and variant: the estimate for its runtime, the placement (all on the GPU;
llama.cpp's partial offload of N of M layers; RWKV's strategy string; CPU only), a verdict, an
expected speed class and the reason in words. `rank()` orders a whole catalog best first;
`check_fits()` is what a loader calls to refuse a model that will not fit, before loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from danlu.catalog.schema import ModelSpec, ReferenceScore, Variant
from danlu.errors import DanluError
from danlu.fit.estimate import (DTYPE_BYTES, Breakdown, Estimate, LlamaOptions, TorchWeights, encoder_decoder_estimate,
                                llamacpp_estimate, rwkv_estimate, transformers_estimate)
from danlu.fit.shape import (ENCODER_DECODER, Shape, Weights, read_hf_dir, repack_types, shape_from_gguf,
                             shape_from_spec, weight_bytes_for, weights_from_gguf, weights_from_spec)
from danlu.hardware import GiB, Hardware

VERDICTS = ("gpu", "partial", "cpu", "remote", "no-fit", "unsupported")  # best first
VRAM_USABLE = 0.95  # leave a little for the display and fragmentation
RAM_USABLE = 0.90  # the OS and the user's other programs keep running
GPU_BANDWIDTH = 300e9  # bytes/s when the driver does not say: between a GTX 1060 (192) and an RTX 3060 (360)
CPU_BANDWIDTH = 20e9  # what decoding reaches on dual-channel DDR4 (qwen2.5-1.5b Q4_K_M: ~17 tok/s here)
PCIE_BANDWIDTH = 12e9  # RWKV's streamed layers cross PCIe 3.0 x16 every token
TORCH_CPU_EFFICIENCY = 0.5  # PyTorch's CPU matmuls use the bandwidth about half as well as llama.cpp
USABLE_TOKENS_PER_S = 2.0  # below this a 200-token reply takes more than a minute and a half
SPEED_CLASSES = ((20.0, "fast", "快"), (5.0, "medium", "中"), (1.0, "slow", "慢"), (0.0, "very slow", "很慢"))
GPU_ONLY_FORMATS = ("gptq",)


@dataclass(frozen=True)
class FitResult:
    """One model and variant on one machine: the estimate, where it goes, the verdict and why."""

    model_id: str
    variant: str
    backend: str
    n_ctx: int
    verdict: str
    estimate: Estimate
    reason: str
    tokens_per_s: float = 0.0
    strategy: str | None = None  # RWKV's strategy string
    ceval: float | None = None
    ceval_note: str = ""
    thinking_tokens: int = 0  # of n_ctx, the room left for the model's thinking (context_for)
    kind: str = "chat"  # chat | embedding | rerank (the catalog's kind): ranked apart

    @property
    def predicted_bytes(self) -> int:
        return self.estimate.total

    @property
    def fits(self) -> bool:
        return self.verdict in ("gpu", "partial", "cpu", "remote")

    @property
    def gpu_layers(self) -> int:
        return self.estimate.gpu_layers

    @property
    def speed(self) -> str:
        """fast (≥ 20 tok/s), medium (≥ 5), slow (≥ 1), very slow; "-" when it does not fit."""
        return next(key for floor, key, _ in SPEED_CLASSES if self.tokens_per_s >= floor) if self.fits else "-"

    def speed_text(self) -> str:
        """The speed class as '快 fast'."""
        return next(f"{zh} {key}" for _, key, zh in SPEED_CLASSES if key == self.speed) if self.fits else "-"

    def verdict_text(self) -> str:
        """The verdict in words: 'GPU', 'partial offload 20/40 layers', 'CPU only', 'does not fit'."""
        if self.verdict == "partial":
            return f"部分卸载 {self.gpu_layers}/{self.estimate.n_layers} 层 / partial offload " \
                   f"{self.gpu_layers} of {self.estimate.n_layers} layers"
        return {"gpu": "GPU", "cpu": "仅 CPU / CPU only", "remote": "远程 / remote", "no-fit": "放不下 / does not fit",
                "unsupported": "暂不支持 / unsupported"}[self.verdict]

    def to_dict(self) -> dict:
        return {"id": self.model_id, "variant": self.variant, "backend": self.backend, "n_ctx": self.n_ctx,
                "predicted_bytes": self.predicted_bytes, "verdict": self.verdict, "verdict_text": self.verdict_text(),
                "gpu_layers": self.gpu_layers, "n_layers": self.estimate.n_layers, "strategy": self.strategy,
                "speed": self.speed, "tokens_per_s": round(self.tokens_per_s, 1), "ceval": self.ceval,
                "ceval_note": self.ceval_note, "thinking_tokens": self.thinking_tokens, "kind": self.kind,
                "reason": self.reason,
                "estimate": self.estimate.to_dict()}


@dataclass(frozen=True)
class Budget:
    """Bytes a plan may use on the GPU and in RAM, and how fast each is read."""

    vram: int
    ram: int
    gpu_bandwidth: float = GPU_BANDWIDTH

    @classmethod
    def of(cls, hw: Hardware) -> "Budget":
        gpu = hw.gpu
        return cls(int(hw.vram_free_bytes * VRAM_USABLE), int(hw.ram_available_bytes * RAM_USABLE),
                   (gpu.bandwidth if gpu and gpu.bandwidth else GPU_BANDWIDTH))


def fmt_bytes(n: float) -> str:
    """'5.1 GiB' / '512 MiB': binary units, as cards and RAM are sold."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 1024**2:.0f} MiB"


# ---------------------------------------------------------------- one model

def plan_model(spec: ModelSpec, variant: Variant, hw: Hardware, n_ctx: int, path: Path | None = None,
               llama: LlamaOptions = LlamaOptions()) -> FitResult:
    """Where `spec`/`variant` goes on `hw` at context `n_ctx`; `path` is its local weights, if any."""
    n_ctx = max(1, min(n_ctx, spec.context_length))
    backend = spec.backend_for(variant)
    budget = Budget.of(hw)
    if backend == "remote":
        nothing = Estimate("remote", n_ctx, Breakdown(), Breakdown())
        result = FitResult(spec.id, variant.name, "remote", n_ctx, "remote", nothing,
                           "在远程服务器上运行，不占本机内存 / runs on a remote server: no local memory")
    elif backend == "llamacpp":
        if spec.kind != "chat":  # embedding mode: one micro-batch holds a whole batch of texts, no generation
            llama = replace(llama, n_ubatch=n_ctx, embedding=True)
        result = _plan_llamacpp(spec, variant, hw, budget, n_ctx, path, llama)
    elif backend == "rwkv":
        result = _plan_rwkv(spec, variant, budget, n_ctx)
    else:
        result = _plan_transformers(spec, variant, budget, n_ctx)
    score = reference_ceval(spec)
    result = replace(result, ceval=score.score if score else None, ceval_note=_score_note(score), kind=spec.kind)
    if spec.unsupported:
        return replace(result, verdict="unsupported", reason=spec.unsupported)
    return result


def context_for(spec: ModelSpec, n_ctx: int) -> int:
    """The context a model needs for a conversation of `n_ctx` tokens: a model that thinks first also needs room
    for its thinking (the catalog's thinking_budget), within the context it supports."""
    room = (spec.thinking_budget or 0) if spec.thinking != "never" else 0
    return max(1, min(n_ctx + room, spec.context_length))


def plan_with_thinking(spec: ModelSpec, variant: Variant, hw: Hardware, n_ctx: int, path: Path | None = None) -> FitResult:
    """plan_model at context_for(spec, n_ctx); the reason says how much of the context is kept for thinking."""
    result = plan_model(spec, variant, hw, context_for(spec, n_ctx), path)
    room = result.n_ctx - min(n_ctx, spec.context_length)
    if room <= 0 or spec.unsupported:
        return result
    reason = _extend(result.reason, f"；上下文含 {room} token 思考预留", f"; the context includes {room} tokens for thinking")
    return replace(result, thinking_tokens=room, reason=reason)


def llamacpp_inputs(spec: ModelSpec, variant: Variant, hw: Hardware, path: Path | None) -> tuple[Shape, Weights, str]:
    """Shape and weights from the local GGUF header when there is one, from the catalog otherwise."""
    if path is not None and path.suffix == ".gguf" and path.is_file():
        try:
            return gguf_inputs(path, hw)
        except DanluError:  # an unreadable local file: plan from the catalog; loading will say what is wrong
            pass
    shape = shape_from_spec(spec)
    return shape, weights_from_spec(spec, variant, shape, repack_types(hw.cpu_flags, hw.machine)), "catalog"


def gguf_inputs(path: Path, hw: Hardware) -> tuple[Shape, Weights, str]:
    """Shape and exact weight layout from a GGUF header, with the tensors this CPU would repack."""
    from danlu.gguf_info import read_gguf

    info = read_gguf(path)
    return shape_from_gguf(info), weights_from_gguf(info, repack_types(hw.cpu_flags, hw.machine)), "GGUF header"


def _plan_llamacpp(spec: ModelSpec, variant: Variant, hw: Hardware, budget: Budget, n_ctx: int,
                   path: Path | None, llama: LlamaOptions) -> FitResult:
    shape, weights, source = llamacpp_inputs(spec, variant, hw, path)
    place = lambda k: llamacpp_estimate(shape, weights, n_ctx, k, llama, source)  # noqa: E731
    return place_llamacpp(spec.id, variant.name, place, shape.n_layers, budget, n_ctx)


def place_llamacpp(model_id: str, variant: str, place, n_layers: int, budget: Budget, n_ctx: int) -> FitResult:
    """All layers on the GPU if they fit; else the most layers that fit (partial offload); else CPU."""
    make = lambda verdict, est, why: FitResult(model_id, variant, "llamacpp", n_ctx, verdict, est, why,  # noqa: E731
                                               _tokens_per_s(est, budget))
    cpu = place(0)
    full = place(n_layers)
    if budget.vram and _within(full, budget):
        return make("gpu", full, _why_gpu(full, budget))
    k = _most_layers_on_gpu(place, n_layers, budget) if budget.vram else 0
    if k and _within(place(k), budget):
        return make("partial", place(k), _why_partial(place(k), budget))
    if cpu.host_needed <= budget.ram:
        return make("cpu", cpu, _why_cpu(cpu, full if budget.vram else None, budget))
    return make("no-fit", cpu, _why_not(full, cpu, budget))


def _most_layers_on_gpu(place, n_layers: int, budget: Budget) -> int:
    """Binary search: the GPU part only grows with the number of offloaded layers."""
    lo, hi = 0, n_layers - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if place(mid).gpu.total <= budget.vram:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _within(est: Estimate, budget: Budget) -> bool:
    return est.gpu.total <= budget.vram and est.host_needed <= budget.ram


def _plan_transformers(spec: ModelSpec, variant: Variant, budget: Budget, n_ctx: int) -> FitResult:
    gpu, cpu = _torch_estimates(spec, variant, n_ctx)
    make = lambda verdict, est, why: FitResult(spec.id, variant.name, "transformers", n_ctx, verdict, est, why,  # noqa: E731
                                               _tokens_per_s(est, budget))
    if budget.vram and _within(gpu, budget):
        return make("gpu", gpu, _why_gpu(gpu, budget))
    if variant.format in GPU_ONLY_FORMATS:
        return make("no-fit", gpu, _why_gpu_only(gpu, budget, variant.format))
    if cpu.host_needed <= budget.ram:
        return make("cpu", cpu, _why_cpu(cpu, gpu if budget.vram else None, budget))
    return make("no-fit", cpu, _why_not(gpu, cpu, budget))


def _torch_estimates(spec: ModelSpec, variant: Variant, n_ctx: int) -> tuple[Estimate, Estimate]:
    """(on the GPU, on the CPU) for a transformers model from the catalog."""
    shape = shape_from_spec(spec)
    if spec.architecture in ENCODER_DECODER:
        return _encoder_decoder_estimates(spec, variant, shape, n_ctx)
    dtype = 4 if variant.bits_per_weight >= 32 else 2
    weights = TorchWeights(weight_bytes_for(spec, variant))  # full: the tie and the file layout are unknown
    return (transformers_estimate(shape, weights, n_ctx, dtype, on_gpu=True),
            transformers_estimate(shape, weights, n_ctx, dtype, on_gpu=False))


def _encoder_decoder_estimates(spec: ModelSpec, variant: Variant, shape: Shape, n_ctx: int) -> tuple[Estimate, Estimate]:
    """In the dtype danlu loads them in (backends/hf/loading.py): fp32 on the CPU (an fp16 file doubles),
    bf16/fp16 on a GPU; a reply of the catalog's max_tokens (at most n_ctx) on each of its beams."""
    elements = weight_bytes_for(spec, variant) / (variant.bits_per_weight / 8)
    reply, beams = min(spec.generation.max_tokens, n_ctx), spec.generation.num_beams
    return (encoder_decoder_estimate(shape, int(elements * 2), n_ctx, reply, 2, on_gpu=True, beams=beams),
            encoder_decoder_estimate(shape, int(elements * 4), n_ctx, reply, 4, on_gpu=False, beams=beams))


def transformers_path_estimate(path: Path, n_ctx: int, on_gpu: bool = False) -> Estimate:
    """The estimate for a local transformers directory, from its config.json and file sizes."""
    hf = read_hf_dir(path)
    dtype = DTYPE_BYTES.get(hf.dtype, 4)
    embedding = hf.shape.n_vocab * hf.shape.n_embd * dtype
    weights = TorchWeights(hf.size_bytes, embedding, 0 if hf.tied else embedding, mapped=hf.safetensors)
    return transformers_estimate(hf.shape, weights, n_ctx, dtype, on_gpu, source="config.json")


# ---------------------------------------------------------------- RWKV

def _plan_rwkv(spec: ModelSpec, variant: Variant, budget: Budget, n_ctx: int) -> FitResult:
    """The strategy danlu's RWKV backend would choose (danlu.rwkv_strategy.choose), then its memory."""
    from danlu import rwkv_strategy

    shape, params = shape_from_spec(spec), spec.params_b * 1e9
    memory = rwkv_strategy.Memory(ram=budget.ram, vram=budget.vram or None)
    strategy = rwkv_strategy.choose(variant.size_bytes, shape.n_layers, rwkv_version(spec.architecture), memory)
    est = rwkv_strategy_estimate(spec.architecture, shape, params, n_ctx, strategy)
    verdict = "cpu" if est.gpu_layers == 0 else "gpu" if est.gpu_layers == est.n_layers else "partial"
    if not _within(est, budget):
        verdict = "no-fit"
    why = {"gpu": _why_gpu, "partial": _why_partial}.get(verdict, lambda e, b: _why_cpu(e, None, b))(est, budget)
    if verdict == "no-fit":
        why = _why_not(rwkv_strategy_estimate(spec.architecture, shape, params, n_ctx, "cuda fp16i8"), est, budget)
    why = _extend(why, f"，策略 `{strategy}`", f"; strategy `{strategy}`")
    return FitResult(spec.id, variant.name, "rwkv", n_ctx, verdict, est, why, _tokens_per_s(est, budget, strategy),
                     strategy)


def rwkv_version(architecture: str) -> float:
    """'rwkv5' → 5.0; plain 'rwkv' is RWKV-4."""
    digits = "".join(ch for ch in architecture if ch.isdigit() or ch == ".")
    return float(digits) if digits else 4.0


def rwkv_strategy_estimate(architecture: str, shape: Shape, params: float, n_ctx: int, strategy: str) -> Estimate:
    """Memory for a strategy string: `cuda D`, `cuda D *k+` (the rest streamed, kept in RAM in D),
    `cuda D *k -> cpu E`, or `cpu E`."""
    segments = [part.split() for part in strategy.split("->")]
    first = segments[0]
    if first[0] == "cpu":
        return rwkv_estimate(architecture, shape, params, n_ctx, 0, cpu_dtype=first[1])
    slots = shape.n_layers + 1
    if len(first) < 3:
        return rwkv_estimate(architecture, shape, params, n_ctx, slots, gpu_dtype=first[1])
    k = int(first[2].strip("*+"))
    rest = first[1] if first[2].endswith("+") or len(segments) == 1 else segments[-1][1]
    return rwkv_estimate(architecture, shape, params, n_ctx, k, gpu_dtype=first[1], cpu_dtype=rest)


# ---------------------------------------------------------------- speed, scores, reasons

def _tokens_per_s(est: Estimate, budget: Budget, strategy: str | None = None) -> float:
    """Decoding reads every active weight and the KV cache once per token, so speed ≈ bandwidth / bytes."""
    host_bw = PCIE_BANDWIDTH if strategy and "+" in strategy else CPU_BANDWIDTH
    if est.backend != "llamacpp":
        host_bw *= TORCH_CPU_EFFICIENCY
    seconds = (est.gpu.weights + est.gpu.kv_cache) / budget.gpu_bandwidth
    host_read = est.host.weights - est.reclaimable + est.host.kv_cache
    seconds += host_read / host_bw if est.gpu_layers < est.n_layers else 0
    return 1.0 / seconds if seconds > 0 else 0.0


def reference_ceval(spec: ModelSpec) -> ReferenceScore | None:
    """The published C-Eval score for this model: the one for its own kind (chat or base) first."""
    scores = [s for s in spec.scores if s.benchmark == "ceval"]
    kind = "chat" if spec.chat else "base"
    return next((s for s in scores if s.variant == kind), scores[0] if scores else None)


def _score_note(score: ReferenceScore | None) -> str:
    if score is None:
        return ""
    shots = f"{score.shots}-shot" if score.shots is not None else "shots n/a"
    return f"{score.variant or ''} {shots}, {score.source}".strip()


def _extend(reason: str, zh: str, en: str) -> str:
    """Add to both halves of a '中文 / English' reason (the Chinese half never holds ' / ')."""
    head, _, tail = reason.partition(" / ")
    return f"{head}{zh} / {tail}{en}"


def _why_gpu(est: Estimate, budget: Budget) -> str:
    return f"整个放进显存：需要 {fmt_bytes(est.gpu.total)}，可用 {fmt_bytes(budget.vram)} / " \
           f"all on the GPU: {fmt_bytes(est.gpu.total)} of {fmt_bytes(budget.vram)}"


def _why_partial(est: Estimate, budget: Budget) -> str:
    k, n = est.gpu_layers, est.n_layers
    return f"显存只放得下 {k}/{n} 层（{fmt_bytes(est.gpu.total)}），其余在内存（{fmt_bytes(est.host_needed)}） / " \
           f"VRAM holds {k} of {n} layers ({fmt_bytes(est.gpu.total)}), the rest run from RAM ({fmt_bytes(est.host_needed)})"


def _why_cpu(cpu: Estimate, gpu: Estimate | None, budget: Budget) -> str:
    if gpu is None:
        return f"没有可用 GPU，用 CPU：内存 {fmt_bytes(cpu.host_needed)}/{fmt_bytes(budget.ram)}{_reclaim_zh(cpu)} / " \
               f"no GPU; on the CPU: {fmt_bytes(cpu.host_needed)} of {fmt_bytes(budget.ram)} RAM{_reclaim_en(cpu)}"
    return f"显存不够（需要 {fmt_bytes(gpu.gpu.total)}，可用 {fmt_bytes(budget.vram)}），改用 CPU：内存 " \
           f"{fmt_bytes(cpu.host_needed)}/{fmt_bytes(budget.ram)} / too big for the GPU ({fmt_bytes(gpu.gpu.total)} " \
           f"> {fmt_bytes(budget.vram)}); on the CPU: {fmt_bytes(cpu.host_needed)} of {fmt_bytes(budget.ram)} RAM"


def _reclaim_zh(est: Estimate) -> str:
    return f"（另有 {fmt_bytes(est.reclaimable)} 重排后可回收的映射页）" if est.reclaimable > 64 * 1024**2 else ""


def _reclaim_en(est: Estimate) -> str:
    return f" (+{fmt_bytes(est.reclaimable)} of mapped pages, reclaimable after repacking)" \
        if est.reclaimable > 64 * 1024**2 else ""


def _why_gpu_only(gpu: Estimate, budget: Budget, fmt: str) -> str:
    return f"{fmt.upper()} 权重只能在 GPU 上跑，需要显存 {fmt_bytes(gpu.gpu.total)}，可用 {fmt_bytes(budget.vram)} / " \
           f"{fmt.upper()} weights run only on a GPU: needs {fmt_bytes(gpu.gpu.total)}, {fmt_bytes(budget.vram)} free"


def _why_not(gpu: Estimate, cpu: Estimate, budget: Budget) -> str:
    return f"放不下：GPU 需要 {fmt_bytes(gpu.gpu.total or gpu.total)}（可用 {fmt_bytes(budget.vram)}），CPU 需要内存 " \
           f"{fmt_bytes(cpu.host_needed)}（可用 {fmt_bytes(budget.ram)}） / does not fit: needs " \
           f"{fmt_bytes(gpu.gpu.total or gpu.total)} on a GPU ({fmt_bytes(budget.vram)} free) or " \
           f"{fmt_bytes(cpu.host_needed)} of RAM ({fmt_bytes(budget.ram)} available)"


# ---------------------------------------------------------------- the catalog, ranked; the loader's check

def rank(results: list[FitResult]) -> list[FitResult]:
    """Best first, the way the seed write-up chooses: what fits and decodes at a usable speed, by
    reference C-Eval score (unscored models after scored ones), then by placement and speed; then
    what runs too slowly to chat with; then what does not fit. Within each of these, embedding and rerank
    models come after the chat models."""
    def key(r: FitResult) -> tuple:
        usable = r.fits and r.tokens_per_s >= USABLE_TOKENS_PER_S
        return (not r.fits, not usable, r.kind != "chat", -(r.ceval if r.ceval is not None else -1), VERDICTS.index(r.verdict),
                -r.tokens_per_s, r.model_id, r.variant)

    return sorted(results, key=key)


class DoesNotFit(DanluError):
    """A model that would run out of memory; the message has the numbers and what fits instead."""

    def __init__(self, message: str, result: FitResult, alternatives: list[FitResult]):
        super().__init__(message)
        self.result, self.alternatives = result, alternatives


def refusal_message(result: FitResult, alternatives: list[FitResult], budget: Budget) -> str:
    """Chinese first, then English: what was asked, the numbers, what fits instead, how to override."""
    zh, _, en = result.reason.partition(" / ")
    zh, en = zh.removeprefix("放不下："), en.removeprefix("does not fit: ")
    names = "、".join(f"{a.model_id}:{a.variant}（{a.verdict_text().split(' / ')[0]}）" for a in alternatives) or "无"
    names_en = ", ".join(f"{a.model_id}:{a.variant} ({a.verdict_text().split(' / ')[-1]})" for a in alternatives) or "none"
    return (f"{result.model_id}:{result.variant} 在上下文 {result.n_ctx} 时放不下：{zh}。"
            f"能跑的有：{names}。可减小 --ctx，或用 --force 强行加载。\n"
            f"{result.model_id}:{result.variant} does not fit at context {result.n_ctx}: {en}. "
            f"These fit: {names_en}. Use a smaller --ctx, or --force to load anyway.")
