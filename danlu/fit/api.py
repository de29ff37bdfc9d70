"""The calls the rest of danlu makes: rank the catalog, check one model before loading, measure one.

`fit_catalog` is `danlu fit`; `check_fits` is what the loader calls (it raises `DoesNotFit` with the
numbers and the alternatives that do fit, unless forced); `measure` is `danlu fit ID --measure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu import catalog
from danlu.backends.base import LoadPlan
from danlu.catalog.schema import ModelSpec, Variant
from danlu.config import Settings, get_settings
from danlu.errors import DanluError
from danlu.fit.estimate import Estimate, LlamaOptions, llamacpp_estimate
from danlu.fit.measure import Measurement, measure_in_subprocess
from danlu.fit.plan import Budget, DoesNotFit, FitResult, gguf_inputs, place_llamacpp, plan_model, plan_with_thinking, \
    rank, refusal_message, transformers_path_estimate
from danlu.hardware import Hardware, detect

ALTERNATIVES_SHOWN = 3


def local_weights(spec: ModelSpec, variant: Variant, settings: Settings | None = None) -> Path | None:
    """The variant's weight file in the store when it has been pulled completely, else None."""
    try:
        from danlu.store import Store

        store = Store(settings or get_settings())
        return store.weight_path(spec, variant) if store.is_complete(spec, variant) else None
    except (DanluError, OSError, ImportError):
        return None


def fit_catalog(hw: Hardware | None = None, n_ctx: int | None = None, settings: Settings | None = None,
                models: tuple[ModelSpec, ...] | None = None, llama_kwargs: dict | None = None) -> list[FitResult]:
    """Every model and variant of the catalog planned for `hw`, best first; models that think are planned with
    room for their thinking on top of `n_ctx` (plan.context_for). With `llama_kwargs` (a server's KV pool:
    `ServerSettings.fit_inputs`) `n_ctx` is the pool's cells, planned as they are."""
    settings = settings or get_settings()
    hw = hw or detect()
    n_ctx = n_ctx or settings.n_ctx
    specs = [(spec, variant) for spec in (models if models is not None else catalog.all_models())
             for variant in spec.variants]
    if llama_kwargs is not None:
        options = LlamaOptions.from_kwargs(llama_kwargs)
        return rank([plan_model(spec, v, hw, n_ctx, local_weights(spec, v, settings), options) for spec, v in specs])
    return rank([plan_with_thinking(spec, v, hw, n_ctx, local_weights(spec, v, settings)) for spec, v in specs])


def check_fits(spec: ModelSpec, variant: Variant | None, hardware: Hardware | None = None, n_ctx: int | None = None,
               *, force: bool = False, path: Path | None = None, llama_kwargs: dict | None = None,
               settings: Settings | None = None) -> FitResult:
    """The plan for loading `spec`; raises DoesNotFit (a DanluError) when it will not fit, unless `force`."""
    settings = settings or get_settings()
    hardware, variant = hardware or detect(), variant or spec.variant()
    n_ctx = n_ctx or settings.n_ctx
    path = path or local_weights(spec, variant, settings)
    result = plan_model(spec, variant, hardware, n_ctx, path, LlamaOptions.from_kwargs(llama_kwargs or {}))
    if result.fits or force or result.verdict == "unsupported":
        return result
    others = [r for r in fit_catalog(hardware, n_ctx, settings)
              if r.fits and r.kind == result.kind and (r.model_id, r.variant) != (spec.id, variant.name)]
    alternatives = others[:ALTERNATIVES_SHOWN]
    raise DoesNotFit(refusal_message(result, alternatives, Budget.of(hardware)), result, alternatives)


def check_path_fits(path: Path, hardware: Hardware | None = None, n_ctx: int | None = None, *, force: bool = False,
                    llama_kwargs: dict | None = None, settings: Settings | None = None) -> FitResult | None:
    """check_fits for a bare GGUF path (no catalog entry): the header alone is enough. None for other
    formats, whose memory cannot be told without a catalog entry."""
    if path.suffix != ".gguf":
        return None
    settings = settings or get_settings()
    hardware, n_ctx = hardware or detect(), n_ctx or settings.n_ctx
    shape, weights, source = gguf_inputs(path, hardware)
    options = LlamaOptions.from_kwargs(llama_kwargs or {})
    place = lambda k: llamacpp_estimate(shape, weights, n_ctx, k, options, source)  # noqa: E731
    result = place_llamacpp(path.name, "file", place, shape.n_layers, Budget.of(hardware), n_ctx)
    if result.fits or force:
        return result
    alternatives = [r for r in fit_catalog(hardware, n_ctx, settings) if r.fits and r.kind == result.kind][:ALTERNATIVES_SHOWN]
    raise DoesNotFit(refusal_message(result, alternatives, Budget.of(hardware)), result, alternatives)


def load_plan_for(result: FitResult, path: Path, n_threads: int) -> LoadPlan:
    """The LoadPlan a backend takes, with the layers on the GPU (or RWKV strategy) this result chose."""
    extra = {"rwkv_strategy": result.strategy} if result.strategy else {}
    return LoadPlan(path=path, n_ctx=result.n_ctx, n_threads=n_threads, gpu_layers=result.gpu_layers, extra=extra)


@dataclass(frozen=True)
class MeasureReport:
    """Predicted against measured for one model at one context."""

    label: str
    n_ctx: int
    estimate: Estimate
    measurement: Measurement

    @property
    def predicted_bytes(self) -> int:
        return self.estimate.total

    @property
    def measured_bytes(self) -> int:
        return self.measurement.measured_bytes

    @property
    def error(self) -> float:
        """(predicted − measured) / measured: positive means the estimate was too high."""
        return (self.predicted_bytes - self.measured_bytes) / max(self.measured_bytes, 1)

    def to_dict(self) -> dict:
        return {"id": self.label, "n_ctx": self.n_ctx, "predicted_bytes": self.predicted_bytes,
                "measured_bytes": self.measured_bytes, "error": round(self.error, 4),
                "estimate": self.estimate.to_dict(), "measurement": self.measurement.to_dict()}


@dataclass(frozen=True)
class _Run:
    """How one measurement loads the model."""

    n_ctx: int
    gpu_layers: int = 0
    n_threads: int = 2
    llama_kwargs: dict | None = None
    served: Any = None  # a ServerSettings: measure its KV pool with the server's batched engine


def measure(ref: str, n_ctx: int, variant: str | None = None, gpu_layers: int = 0, n_threads: int = 2,
            settings: Settings | None = None, hw: Hardware | None = None,
            llama_kwargs: dict | None = None, served: Any = None) -> MeasureReport:
    """Load a catalog model (or a local .gguf file / transformers directory), fill n_ctx tokens, compare.
    `llama_kwargs` (e.g. {"swa_full": False}) go to llama_cpp.Llama and into the estimate alike. With `served`
    (a ServerSettings) a GGUF is loaded the way `danlu serve` loads it — its whole KV pool — and every decode
    lane fills its context (`n_ctx` is then the context per request)."""
    settings, hw = settings or get_settings(), hw or detect()
    run = _Run(n_ctx, gpu_layers, n_threads, llama_kwargs, served)
    path = Path(ref).expanduser()
    if path.exists():
        return _measure_path(path, run, hw)
    spec = catalog.get(ref)
    chosen = spec.variant(variant)
    weights = local_weights(spec, chosen, settings)
    if weights is None:
        raise DanluError(f"{spec.id}:{chosen.name} 还没下载，没法测量 / not downloaded, nothing to measure: "
                         f"run `danlu pull {spec.id}`")
    if spec.backend_for(chosen) != "llamacpp":
        raise DanluError(f"目前只能测量 llama.cpp 和 transformers 目录 / --measure supports GGUF files and "
                         f"transformers directories; {spec.id}:{chosen.name} uses {spec.backend_for(chosen)}")
    return _measure_path(weights, run, hw, label=f"{spec.id}:{chosen.name}")


def _measure_path(path: Path, run: _Run, hw: Hardware, label: str | None = None) -> MeasureReport:
    if path.is_dir():
        estimate = transformers_path_estimate(path, run.n_ctx, on_gpu=run.gpu_layers > 0)
        backend = "transformers"
    elif run.served is not None:
        return _measure_pool(path, run, hw, label)
    else:
        shape, weights, source = gguf_inputs(path, hw)
        options = LlamaOptions.from_kwargs(run.llama_kwargs or {})
        estimate = llamacpp_estimate(shape, weights, run.n_ctx, run.gpu_layers, options, source)
        backend = "llamacpp"
    measured = measure_in_subprocess(backend, path, run.n_ctx, n_threads=run.n_threads, gpu_layers=run.gpu_layers,
                                     llama_kwargs=run.llama_kwargs)
    return MeasureReport(label or str(path), run.n_ctx, estimate, measured)


def _measure_pool(path: Path, run: _Run, hw: Hardware, label: str | None) -> MeasureReport:
    """A served GGUF: fit's estimate for the server's pool against the batched engine filling it."""
    cells, kwargs = run.served.fit_inputs()
    shape, weights, source = gguf_inputs(path, hw)
    estimate = llamacpp_estimate(shape, weights, cells, run.gpu_layers, LlamaOptions.from_kwargs(kwargs), source)
    measured = measure_in_subprocess("llamacpp_pool", path, run.n_ctx, n_threads=run.n_threads,
                                     gpu_layers=run.gpu_layers, llama_kwargs=run.served.kv_layout())
    return MeasureReport(label or str(path), cells, estimate, measured)
