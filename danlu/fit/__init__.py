"""Fit: which model runs on this machine — the memory estimate, the plan, and the measurement.

- `shape.py`: what a model is made of (from a GGUF header, the catalog, or a config.json).
- `estimate.py`: the arithmetic per runtime (weights, KV cache / RWKV state, compute, overhead).
- `plan.py`: placement and verdict (GPU / partial offload N of M layers / CPU only / does not fit),
  RWKV strategy strings, speed class, ranking, the refusal message.
- `measure.py`: load, fill the context, read the peak — in a child process.
- `api.py`: `fit_catalog`, `check_fits` / `check_path_fits`, `load_plan_for`, `measure`.
"""

from danlu.fit.api import MeasureReport, check_fits, check_path_fits, fit_catalog, load_plan_for, local_weights, measure
from danlu.fit.estimate import Breakdown, Estimate, LlamaOptions
from danlu.fit.plan import VERDICTS, Budget, DoesNotFit, FitResult, context_for, fmt_bytes, plan_model, rank

__all__ = [
    "Breakdown", "Budget", "DoesNotFit", "context_for", "Estimate", "FitResult", "LlamaOptions", "MeasureReport", "VERDICTS",
    "check_fits", "check_path_fits", "fit_catalog", "fmt_bytes", "load_plan_for", "local_weights", "measure", "plan_model", "rank",
]
