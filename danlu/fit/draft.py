"""A draft model for speculative decoding, placed in what its target leaves.

The draft holds its own weights, a KV cache as long as the target's context (it follows the whole
conversation) and its own compute buffers. It is planned like any llama.cpp model against the memory the
target leaves — what is free once the target is loaded (the loader's case, danlu/drafting.py), or
`left_after(target_plan)` when both are planned beforehand — so target + draft never exceed the machine;
on a GPU it goes wherever the rest fits (partial offload included). `combined` adds the two estimates.
Conservative on one point: a draft on the GPU is charged its own CUDA context although it shares the
target's process.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from danlu.catalog.schema import ModelSpec, Variant
from danlu.fit.estimate import Breakdown, Estimate, LlamaOptions, llamacpp_estimate
from danlu.fit.plan import Budget, DoesNotFit, FitResult, fmt_bytes, gguf_inputs, llamacpp_inputs, place_llamacpp
from danlu.hardware import Hardware


def left_after(target: FitResult, budget: Budget) -> Budget:
    """The GPU memory and RAM a plan leaves for anything else loaded beside it."""
    est = target.estimate
    return replace(budget, vram=max(0, budget.vram - est.gpu.total), ram=max(0, budget.ram - est.host_needed))


def plan_draft(spec: ModelSpec | None, variant: Variant | None, hw: Hardware, n_ctx: int, path: Path | None = None,
               budget: Budget | None = None) -> FitResult:
    """Where the draft goes within `budget` (default: what `hw` has free now, i.e. with a loaded target already
    taken out; planning both before loading, pass `left_after(target_plan, Budget.of(hw))`)."""
    if spec is not None and variant is not None:
        shape, weights, source = llamacpp_inputs(spec, variant, hw, path)
        model_id, variant_name = spec.id, variant.name
    else:
        shape, weights, source = gguf_inputs(path, hw)
        model_id, variant_name = path.name, "file"
    place = lambda k: llamacpp_estimate(shape, weights, n_ctx, k, LlamaOptions(), source)  # noqa: E731
    return place_llamacpp(model_id, variant_name, place, shape.n_layers, budget or Budget.of(hw), n_ctx)


def combined(target: FitResult, draft: FitResult) -> Estimate:
    """The target's estimate with the draft's memory added on each device (what `fit` reports for the pair)."""
    t, d = target.estimate, draft.estimate
    return replace(t, gpu=_add(t.gpu, d.gpu), host=_add(t.host, d.host), reclaimable=t.reclaimable + d.reclaimable,
                   notes=t.notes + (f"draft {draft.model_id}: {fmt_bytes(d.total)}",))


def check_draft_fits(spec: ModelSpec | None, variant: Variant | None, hw: Hardware, n_ctx: int,
                     path: Path | None = None, force: bool = False, budget: Budget | None = None) -> FitResult:
    """plan_draft, raising DoesNotFit (a DanluError that says what to do) unless it fits or `force`."""
    budget = budget or Budget.of(hw)
    draft = plan_draft(spec, variant, hw, n_ctx, path, budget)
    if draft.fits or force:
        return draft
    need = fmt_bytes(draft.estimate.host_needed + draft.estimate.gpu.total)
    message = (f"草稿模型 {draft.model_id} 需要约 {need}，目标模型之外只剩 {fmt_bytes(budget.ram)} 内存"
               f"（显存 {fmt_bytes(budget.vram)}）：用 --draft ngram 或 --draft none，或减小 --ctx / "
               f"the draft model {draft.model_id} needs about {need} but the target leaves {fmt_bytes(budget.ram)} "
               f"of RAM ({fmt_bytes(budget.vram)} of VRAM): use --draft ngram or --draft none, or a smaller --ctx")
    raise DoesNotFit(message, draft, [])


def _add(a: Breakdown, b: Breakdown) -> Breakdown:
    return Breakdown(a.weights + b.weights, a.kv_cache + b.kv_cache, a.compute + b.compute, a.overhead + b.overhead)
