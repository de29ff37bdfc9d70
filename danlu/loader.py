"""From a model reference (catalog id or path) to a loaded engine with its prompt format and defaults.

This is the one place that decides: which file, which backend, which plan, which prompt format.
The template shipped with the model comes first; the catalog's named format is the fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from danlu import catalog
from danlu.backends import BACKEND_MODULES, backend_module, load_engine
from danlu.backends.base import Engine, GenerationParams, LoadPlan
from danlu.catalog.kinds import gguf_kind, not_chat
from danlu.catalog.schema import ModelSpec, Variant
from danlu.chat import Conversation
from danlu.config import Settings, get_settings
from danlu.errors import BackendUnavailable, DanluError, NotDownloaded
from danlu.formats import ChatFormat, format_names, from_template, get_format
from danlu.i18n import t
from danlu.store import Store, safe_name


@dataclass(frozen=True)
class Resolved:
    """What a reference points at: catalog facts (None for a bare path), the file, the runtime."""

    spec: ModelSpec | None
    variant: Variant | None
    path: Path
    backend: str
    adapters: tuple[Path, ...] = ()  # LoRA adapters applied on top, in order (served as `BASE+NAME`)

    @property
    def label(self) -> str:
        return f"{self.spec.id}:{self.variant.name}" if self.spec and self.variant else str(self.path)


@dataclass
class Loaded:
    """A model ready to chat: engine, prompt format, default sampling, model stop strings."""

    resolved: Resolved
    engine: Engine
    fmt: ChatFormat
    params: GenerationParams
    default_system: str | None

    def conversation(self, params: GenerationParams | None = None, system: str | None = None,
                     on_message=None) -> "Conversation":
        """A new conversation with this model's format, stops and (copied) default parameters."""
        caps = self.engine.capabilities
        if caps.embeddings or caps.rerank:
            raise not_chat(self.resolved.label, "rerank" if caps.rerank else "embedding")
        spec = self.resolved.spec
        return Conversation(self.engine, self.fmt, params or replace(self.params), system or self.default_system,
                            on_message=on_message, model_stops=tuple(spec.stop_strings) if spec else ())


def resolve(ref: str, variant: str | None = None, settings: Settings | None = None) -> Resolved:
    """A catalog id (optionally `id:variant`), an alias (`qwen3:8b`, `qwen3:8b-q8_0`) or a local path to a model
    file or directory."""
    settings = settings or get_settings()
    path = Path(ref).expanduser()
    if path.exists():
        return Resolved(None, None, path, _backend_for_path(path))
    remote = resolve_remote(ref, settings)
    if remote is not None:
        return remote
    alias = catalog.resolve_alias(ref)  # Ollama-style `qwen3:8b` before `id:variant`
    if alias is not None:
        ref, variant = alias[0], variant or alias[1]
    elif ":" in ref and variant is None:
        ref, variant = ref.split(":", 1)
    spec = catalog.get(ref)
    chosen = spec.variant(variant)
    store = Store(settings)
    if not store.is_complete(spec, chosen):
        raise NotDownloaded(
            f"模型 {spec.id}（{chosen.name}）尚未下载 / not downloaded: run `danlu pull {spec.id}`"
        )
    return Resolved(spec, chosen, store.weight_path(spec, chosen), spec.backend_for(chosen))


def resolve_remote(ref: str, settings: Settings) -> Resolved | None:
    """A name registered with `danlu remote add` (danlu/remotes.py): its record file stands in for weights."""
    from danlu import remotes

    remote = remotes.find(ref, settings)
    return Resolved(None, None, remote.record_path, "remote") if remote else None


def adapter_path(name_or_path: str, settings: Settings) -> Path:
    """A LoRA adapter given as a path, or by name from $DANLU_HOME/adapters."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    named = settings.adapters_dir / safe_name(name_or_path)
    if not named.exists():
        raise DanluError(f"找不到 LoRA 适配器 {name_or_path!r} / no adapter {name_or_path!r}: see `danlu adapters`, or give a path")
    return named


def for_adapters(resolved: Resolved, settings: Settings, backend_given: bool = False) -> Resolved:
    """peft LoRA adapters run on the transformers backend; a GGUF base is read from its transformers copy,
    made once and cached (danlu.backends.hf.from_gguf), instead of being dequantized at every load."""
    if resolved.backend == "llamacpp" and backend_given:
        raise BackendUnavailable("llama.cpp 后端不能直接套用 peft LoRA：去掉 --backend，或先用 `danlu export` 合并导出 GGUF / "
                                 "the llama.cpp backend cannot apply a peft LoRA: drop --backend, or merge it into a "
                                 "GGUF with `danlu export` first")
    if resolved.backend == "llamacpp":
        resolved = replace(resolved, backend="transformers")
    if resolved.backend == "transformers" and resolved.path.suffix == ".gguf":
        from danlu.backends.hf.from_gguf import gguf_as_hf

        resolved = replace(resolved, path=gguf_as_hf(resolved.path, settings))
    return resolved


def for_embedding(resolved: Resolved, extra: dict) -> Resolved:
    """An embedding or rerank model (by its catalog kind or GGUF header), or any GGUF asked for with
    `embedding=True` / `rerank=True`, runs on llama.cpp's embedding mode (backends/llamacpp_embed.py)."""
    if not (extra.get("embedding") or extra.get("rerank") or kind_of_resolved(resolved) != "chat"):
        return resolved
    if resolved.backend not in ("llamacpp", "llamacpp_embed"):
        raise BackendUnavailable(f"嵌入和重排只支持 GGUF 模型（llama.cpp）；{resolved.label} 用的是 {resolved.backend} / "
                                 f"embeddings and rerank run on GGUF models (llama.cpp); {resolved.label} uses "
                                 f"{resolved.backend}")
    return replace(resolved, backend="llamacpp_embed")


def kind_of_resolved(resolved: Resolved) -> str:
    """chat, embedding or rerank: the catalog's word, else the GGUF header's."""
    if resolved.spec:
        return resolved.spec.kind
    return gguf_kind(resolved.path) if resolved.path.suffix == ".gguf" else "chat"


def _backend_for_path(path: Path) -> str:
    if path.suffix == ".gguf":
        return "llamacpp"
    if path.suffix == ".pth":
        return "rwkv"
    if path.is_dir():
        return "transformers"
    raise DanluError(f"认不出 {path} 的格式（支持 .gguf、.pth 或 transformers 目录）/ unknown model file type: {path}")


def make_plan(resolved: Resolved, settings: Settings, n_ctx: int | None = None, force: bool = False, **extra) -> LoadPlan:
    """Context capped at the model's own; the fit check places layers on the GPU (or picks the RWKV
    strategy) and refuses a model that will not fit, with the alternatives that do, unless forced."""
    ctx = n_ctx or settings.n_ctx
    if resolved.spec:
        ctx = min(ctx, resolved.spec.context_length)
    fit = _fit(resolved, ctx, force, extra.get("llama_kwargs"))
    gpu_layers = settings.gpu_layers if settings.gpu_layers >= 0 else (fit.gpu_layers if fit else 0)
    if fit and fit.strategy and "rwkv_strategy" not in extra:
        extra["rwkv_strategy"] = fit.strategy
    return LoadPlan(path=resolved.path, n_ctx=ctx, n_threads=settings.threads, gpu_layers=gpu_layers, extra=extra)


def _fit(resolved: Resolved, n_ctx: int, force: bool, llama_kwargs: dict | None):
    from danlu.fit import check_fits, check_path_fits

    if resolved.backend == "remote":
        return None
    if resolved.backend == "llamacpp_embed":  # one micro-batch holds a whole batch of texts (see llamacpp_embed)
        llama_kwargs = {**(llama_kwargs or {}), "n_ubatch": n_ctx, "embedding": True}
    if resolved.spec and resolved.variant:
        return check_fits(resolved.spec, resolved.variant, n_ctx=n_ctx, force=force, path=resolved.path,
                          llama_kwargs=llama_kwargs)
    return check_path_fits(resolved.path, n_ctx=n_ctx, force=force, llama_kwargs=llama_kwargs)


def load(ref: str, *, variant: str | None = None, n_ctx: int | None = None, settings: Settings | None = None,
         backend: str | None = None, force: bool = False, draft: str | None = None, **extra) -> Loaded:
    """Resolve, plan and load; the prompt format and defaults come along. `extra` goes to LoadPlan.extra.
    `draft` (a model, "ngram", "auto" for the catalog's, None/"none": off) turns on speculative decoding."""
    settings = settings or get_settings()
    resolved = resolve(ref, variant, settings)
    if backend:
        resolved = replace(resolved, backend=backend)
    if "adapters" in extra:
        extra["adapters"] = [str(adapter_path(a, settings)) for a in extra["adapters"]]
        resolved = for_adapters(resolved, settings, backend_given=backend is not None)
    if resolved.spec and resolved.spec.unsupported:
        raise BackendUnavailable(resolved.spec.unsupported)
    resolved = for_embedding(resolved, extra)
    plan = make_plan(resolved, settings, n_ctx, force, **extra)
    engine = load_engine(resolved.spec, resolved.variant, plan, resolved.backend)
    spec = resolved.spec
    loaded = Loaded(resolved, engine, choose_format(engine, spec, resolved.backend, resolved.path), default_params(spec),
                    spec.default_system if spec else None)
    if draft:
        from danlu.drafting import attach_draft

        try:
            attach_draft(loaded, draft, settings, force, on_gpu=plan.gpu_layers > 0)
        except BaseException:
            engine.close()
            raise
    return loaded


#: For a bare path without a shipped template: the format its runtime's models use.
PATH_FORMATS = {"rwkv": "rwkv-world"}


def choose_format(engine: Engine, spec: ModelSpec | None, backend: str = "", path: Path | None = None) -> ChatFormat:
    """The model's own template first; then the catalog's named format; for a bare path, the format recorded
    beside it by `danlu export`, else the one the engine knows its model by (EVA2.0), else its runtime's usual one."""
    template = engine.chat_template()
    if template:
        return from_template(template, bos_token=_token_text(engine, engine.bos_token_id()),
                             eos_token=_token_text(engine, _first(engine.eos_token_ids())),
                             control_tokens=getattr(engine, "control_tokens", tuple)(), **_template_parsers(spec))
    if spec:
        return with_catalog_facts(get_format(spec.prompt_format), spec)
    own = getattr(engine, "prompt_format", None)
    return get_format(recorded_format(path) or own or PATH_FORMATS.get(backend, "raw"))


def with_catalog_facts(fmt: ChatFormat, spec: ModelSpec) -> ChatFormat:
    """A named format as this model uses it: the catalog's thinking mode, parser and tool protocol win."""
    thinking = getattr(spec, "thinking", "never")
    changes = {"thinking": thinking} if thinking != "never" else {}
    if getattr(spec, "reasoning_parser", None):
        changes["reasoning"] = spec.reasoning_parser
    if getattr(spec, "tool_protocol", None) and fmt.tool_protocol:
        changes["tool_protocol"] = spec.tool_protocol
    return replace(fmt, **changes) if changes else fmt


def _template_parsers(spec: ModelSpec | None) -> dict:
    """How a template-rendered model writes tool calls and thinking when the catalog says so (otherwise
    the template tells: formats.jinja.detect_tool_protocol)."""
    return {"tool_protocol": getattr(spec, "tool_protocol", None),
            "reasoning": getattr(spec, "reasoning_parser", None)}


def recorded_format(path: Path | None) -> str | None:
    """The named prompt format in OUT.danlu.json, the record `danlu export` writes beside a GGUF whose base
    had no chat template of its own (gemma-3-270m): without it the fine-tuned model would be prompted raw."""
    record = path.with_suffix(".danlu.json") if path is not None else None
    try:
        name = json.loads(record.read_text(encoding="utf-8")).get("prompt_format") if record else None
    except (OSError, ValueError, AttributeError):
        return None
    return name if name in format_names() else None


def _token_text(engine: Engine, token_id: int | None) -> str:
    if token_id is None or not hasattr(engine, "token_text"):
        return ""
    return engine.token_text(token_id)


def _first(ids: set[int]) -> int | None:
    return min(ids) if ids else None


def default_params(spec: ModelSpec | None, thinking: bool = True) -> GenerationParams:
    """The catalog's recommended sampling (a hybrid model's card may differ with thinking off), the model's
    own stop ids always on."""
    if spec is None:
        return GenerationParams()
    g = spec.sampling(thinking)
    return GenerationParams(
        max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, min_p=g.min_p,
        repetition_penalty=g.repetition_penalty, presence_penalty=g.presence_penalty,
        frequency_penalty=g.frequency_penalty, num_beams=g.num_beams, length_penalty=g.length_penalty,
        stop_token_ids=list(spec.stop_token_ids),
    )


@dataclass(frozen=True)
class Availability:
    """Whether a catalog model can run now: a code for programs, a reason for people."""

    code: str  # ready | not_downloaded | backend_missing | unsupported
    reason: str

    @property
    def runnable(self) -> bool:
        return self.code == "ready"


def availability(spec: ModelSpec, settings: Settings | None = None) -> Availability:
    """Can this model run now? If not, why (for the `danlu models` column)."""
    if spec.unsupported:
        return Availability("unsupported", spec.unsupported)
    try:
        backend_module(spec.backend_for(spec.variant()))
    except BackendUnavailable as exc:
        return Availability("backend_missing", str(exc))
    if not Store(settings or get_settings()).is_complete(spec, spec.variant()):
        return Availability("not_downloaded", t(f"下载后可运行：danlu pull {spec.id}", f"runs once downloaded: danlu pull {spec.id}"))
    return Availability("ready", t("可运行", "ready"))


__all__ = ["BACKEND_MODULES", "Availability", "Loaded", "Resolved", "availability", "choose_format", "load", "resolve"]
