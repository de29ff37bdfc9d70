"""What Ollama's model routes say about a model — /api/tags rows, /api/show, /api/ps rows — from danlu's
catalog, store and scheduler. Ollama's fields come first; danlu's own (backend, fit, thinking mode, requests in
flight) ride along under `danlu`, where Ollama's clients ignore them.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any

from danlu.loader import Resolved

GPU_BACKENDS = ("llamacpp", "transformers")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def digest(resolved: Resolved) -> str:
    """The catalog's sha256 of the weights when it has one, else a stable hash of the name."""
    variant = resolved.variant
    if variant is not None and variant.sha256:
        return variant.sha256
    return hashlib.sha256(resolved.label.encode()).hexdigest()


def details(resolved: Resolved) -> dict:
    spec, variant = resolved.spec, resolved.variant
    family = spec.family if spec else resolved.backend
    return {"parent_model": "", "format": _format(resolved), "family": family, "families": [family],
            "parameter_size": f"{spec.params_b:g}B" if spec else "", "quantization_level":
            variant.name.upper() if variant else ""}


def _format(resolved: Resolved) -> str:
    if resolved.variant is not None:
        return resolved.variant.format
    return "gguf" if resolved.path.suffix == ".gguf" else resolved.backend


def size_on_disk(resolved: Resolved) -> int:
    path = resolved.path
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def modified(resolved: Resolved) -> str:
    try:
        return iso(resolved.path.stat().st_mtime)
    except OSError:
        return iso(time.time())


def tag_row(name: str, resolved: Resolved) -> dict:
    """A row of /api/tags."""
    return {"name": name, "model": name, "modified_at": modified(resolved), "size": size_on_disk(resolved),
            "digest": digest(resolved), "details": details(resolved)}


def capabilities(resolved: Resolved, template: str | None) -> list[str]:
    """Ollama's capability words: completion, tools, thinking, embedding."""
    from danlu.formats.jinja import detect_thinking, renders_tools

    spec = resolved.spec
    kind = getattr(spec, "kind", "chat") if spec else "chat"
    if kind != "chat":
        return ["embedding"] if kind == "embedding" else [kind]
    found = ["completion"]
    if (template and renders_tools(template)) or getattr(spec, "tool_protocol", None):
        found.append("tools")
    thinking = getattr(spec, "thinking", None) or (detect_thinking(template) if template else "never")
    if thinking != "never":
        found.append("thinking")
    return found


def show(name: str, resolved: Resolved) -> dict:
    """POST /api/show: template, parameters, details, model_info, capabilities."""
    metadata = gguf_keys(resolved)
    template = metadata.get("tokenizer.chat_template") if metadata else None
    spec = resolved.spec
    return {"modelfile": f"# danlu {name}\nFROM {resolved.path}\n{_parameter_lines(resolved, 'PARAMETER ')}",
            "parameters": _parameter_lines(resolved, ""), "template": template or "",
            "license": spec.license if spec else "", "details": details(resolved),
            "model_info": _model_info(resolved, metadata), "capabilities": capabilities(resolved, template),
            "modified_at": modified(resolved),
            "danlu": {"id": spec.id if spec else None, "variant": resolved.variant.name if resolved.variant else None,
                      "backend": resolved.backend, "thinking": getattr(spec, "thinking", None) if spec else None}}


def gguf_keys(resolved: Resolved) -> dict[str, Any]:
    if resolved.path.suffix != ".gguf" or not resolved.path.exists():
        return {}
    from danlu.gguf_info import gguf_metadata

    try:
        return gguf_metadata(resolved.path)
    except Exception:  # noqa: BLE001 — a header we cannot read only means less to show
        return {}


def _parameter_lines(resolved: Resolved, prefix: str) -> str:
    spec = resolved.spec
    if spec is None:
        return ""
    g = spec.generation
    lines = [f"temperature {g.temperature}", f"top_p {g.top_p}", f"top_k {g.top_k}",
             f"repeat_penalty {g.repetition_penalty}", f"num_ctx {spec.context_length}"]
    lines += [f'stop "{s}"' for s in spec.stop_strings]
    return "".join(f"{prefix}{line}\n" for line in lines)


def _model_info(resolved: Resolved, metadata: dict[str, Any]) -> dict:
    """Scalar GGUF keys (Ollama's model_info), or the catalog's shape facts."""
    if metadata:
        return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float)) and not k.startswith("tokenizer.")}
    spec = resolved.spec
    if spec is None:
        return {}
    arch = spec.architecture
    info = {"general.architecture": arch, "general.parameter_count": int(spec.params_b * 1e9),
            f"{arch}.context_length": spec.context_length}
    if spec.shape.n_layers:
        info[f"{arch}.block_count"] = spec.shape.n_layers
    if spec.shape.n_embd:
        info[f"{arch}.embedding_length"] = spec.shape.n_embd
    return info


def ps_row(scheduler: Any, served: Any) -> dict:
    """A row of /api/ps. During an anonymous battle's turn nothing here tells its two models apart."""
    masked = scheduler.masked.get(served.key, 0) > 0
    keep = scheduler.keep_alive(served)
    expires = (keep if keep >= 0 else None) if masked else scheduler.expires_in(served)
    gpu = served.resolved.backend in GPU_BACKENDS and served.gpu_layers != 0
    row = {"name": served.key, "model": served.key, "size": served.size_bytes, "digest": digest(served.resolved),
           "details": details(served.resolved), "expires_at": iso(time.time() + (expires if expires is not None
                                                                                 else 10 * 365 * 86400)),
           "size_vram": served.size_bytes if gpu else 0, "context_length": served.n_ctx}
    extras = {"backend": served.resolved.backend, "n_ctx": served.n_ctx}
    if not masked:
        extras |= {"in_flight": served.in_flight, "expires_in_s": None if expires is None else round(expires, 1),
                   **served.runner.load_info()}
    return {**row, "danlu": extras}
