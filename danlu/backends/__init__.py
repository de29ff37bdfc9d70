"""Backends are found by name: `danlu/backends/<name>.py` exposes `load(spec, variant, plan) -> Engine`.

The module name is the registry key (as in mlx-lm's models/), so adding a runtime is adding a file.
Runtimes are imported only when used: torch and rwkv are heavy and may be missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import BackendUnavailable

from .base import Engine, LoadPlan

BACKEND_MODULES = {"llamacpp": "llamacpp", "transformers": "transformers_backend", "rwkv": "rwkv_backend", "remote": "remote",
                   "llamacpp_embed": "llamacpp_embed"}
INSTALL_HINTS = {
    "llamacpp": "pip install llama-cpp-python",
    "llamacpp_embed": "pip install llama-cpp-python",
    "transformers": "pip install torch==2.13.0 transformers peft",
    "rwkv": "pip install torch==2.13.0 rwkv",
    "remote": "pip install openai",
}


def backend_module(name: str) -> ModuleType:
    """Import the module for a backend name, or say how to install what it needs."""
    if name not in BACKEND_MODULES:
        raise BackendUnavailable(f"未知的后端 {name!r} / unknown backend {name!r}; known: {', '.join(BACKEND_MODULES)}")
    try:
        return importlib.import_module(f"danlu.backends.{BACKEND_MODULES[name]}")
    except ImportError as exc:
        raise BackendUnavailable(
            f"后端 {name} 不可用（缺少 {exc.name}）/ backend {name} unavailable (missing {exc.name}): {INSTALL_HINTS[name]}"
        ) from exc


def load_engine(spec: ModelSpec | None, variant: Variant | None, plan: LoadPlan, backend: str) -> Engine:
    """Load weights with the named backend; `spec` is None for a bare path."""
    return backend_module(backend).load(spec, variant, plan)
