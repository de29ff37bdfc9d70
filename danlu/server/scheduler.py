"""Which models are loaded: load on first use within the memory budget, unload after keep-alive, evict the
least recently used idle model for a new one, and bound each model's queue (past it: 429 + Retry-After).

Ollama's scheduler is the model: a model is a loaded runner plus a count of requests in flight; nothing
is unloaded while it has any, and a request counts until its engine has stopped working for it. Names are
resolved by resolver.py. Memory per model comes from the fit module's prediction (weights + KV cells +
compute), falling back to file size × 1.2 when fit has nothing to say (a bare path). A request may set how
long its model stays loaded afterwards (Ollama's `keep_alive`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from danlu import loader
from danlu.backends.base import Engine, GenerationParams
from danlu.chat import tokenize_segments
from danlu.errors import DanluError
from danlu.formats import ChatFormat, get_format
from danlu.loader import Resolved
from danlu.server import ServerSettings
from danlu.server.errors import ApiError
from danlu.server.resolver import ModelResolver

log = logging.getLogger(__name__)

REAP_EVERY_S = 1.0


@dataclass(eq=False)
class ServedModel:
    """A loaded model: the runner requests go to, its engine, prompt format and default sampling."""

    key: str
    resolved: Resolved
    runner: Any  # BatchedLlamaEngine or runners.ThreadRunner: submit(ids, params, sink, options)
    engine: Engine
    fmt: ChatFormat
    params: GenerationParams
    default_system: str | None
    size_bytes: int
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    avg_request_s: float = 5.0
    keep_alive_s: float | None = None  # set by a request (Ollama's keep_alive); None: the server's
    gpu_layers: int = 0  # layers placed on a GPU (-1: all)

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def params_no_think(self) -> GenerationParams:
        """The catalog's sampling with thinking off (Qwen3's card recommends other settings then)."""
        return loader.default_params(self.resolved.spec, thinking=False) if self.resolved.spec else self.params

    @property
    def model_stops(self) -> tuple[str, ...]:
        spec = self.resolved.spec
        return tuple(self.fmt.stop_strings) + (tuple(spec.stop_strings) if spec else ())

    def chat_ids(self, messages: list[dict], **options) -> list[int]:
        """Markup as special tokens, client text as plain text (chat.tokenize_segments): no injected controls.
        `options` go to the format (tools, enable_thinking, chat_template_kwargs)."""
        if self.default_system and self.fmt.supports_system and all(m["role"] != "system" for m in messages):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        return tokenize_segments(self.engine, self.fmt.render(messages, True, **options))

    def text_ids(self, prompt: str) -> list[int]:
        adds_bos = getattr(self.engine, "adds_bos", lambda: False)()
        return self.engine.tokenize(prompt, special=False, add_bos=adds_bos)


class ModelScheduler:
    """Loaded models by key; every method runs on the event loop (loading itself in a thread)."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.loaded: dict[str, ServedModel] = {}
        self.resolver = ModelResolver(settings.base, settings.trust_remote_code)
        self.masked: dict[str, int] = {}  # keys in an anonymous battle's turn: /api/ps must not tell them apart
        self._in_flight: dict[str, int] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self._load_lock = asyncio.Lock()
        self.budget_bytes = settings.memory_budget_bytes or _default_budget()
        self._reaper: asyncio.Task | None = None

    # --- names ------------------------------------------------------------------------------
    def add_alias(self, name: str) -> str:
        return self.resolver.add_alias(name)

    def resolve(self, name: str) -> tuple[str, Resolved]:
        return self.resolver.resolve(name)

    def served_names(self) -> list[str]:
        return self.resolver.served_names([k for k in self.loaded if "@" not in k])

    def for_purpose(self, key: str, resolved: Resolved, purpose: str) -> tuple[str, Resolved]:
        """The engine a request needs: a chat model's own for generation; embedding mode for vectors and scores."""
        kind = loader.kind_of_resolved(resolved) if resolved.backend != "remote" else "chat"
        if purpose == "generate":
            if kind != "chat":
                raise not_for_chat(key, kind)
            return key, resolved
        if resolved.backend == "remote":
            raise ApiError(400, f"远程模型 {key} 不在这里算向量 / the remote model {key} computes no embeddings here",
                           param="model", code="wrong_model_kind")
        try:
            embedded = loader.for_embedding(resolved, {purpose: True} if purpose == "rerank" else {"embedding": True})
        except DanluError as exc:
            raise ApiError(400, str(exc), param="model", code="wrong_model_kind") from None
        return (key if kind != "chat" else f"{key}@embed"), embedded

    # --- admission --------------------------------------------------------------------------
    async def acquire(self, name: str, purpose: str = "generate") -> ServedModel:
        """The loaded model for `name`, counting this request in; 429 when its queue is full. `purpose` "embed" or
        "rerank" loads the model in llama.cpp's embedding mode (a chat GGUF then gets a second engine, `KEY@embed`)."""
        key, resolved = self.for_purpose(*self.resolve(name), purpose)
        limit = self.settings.parallel + self.settings.max_queue
        if self._in_flight.get(key, 0) >= limit:
            raise ApiError(429, f"模型 {name} 排队已满（{limit} 个请求）/ the queue for {name} is full ({limit} requests): "
                           "retry after the time in Retry-After", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(self._retry_after(key))})
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            served = await self._loaded(key, resolved)
        except BaseException:
            self._in_flight[key] -= 1
            raise
        served.in_flight += 1
        return served

    def release(self, served: ServedModel, duration_s: float, keep_alive_s: float | None = None) -> None:
        if keep_alive_s is not None:
            served.keep_alive_s = keep_alive_s
        served.in_flight -= 1
        self._in_flight[served.key] = self._in_flight.get(served.key, 1) - 1
        served.last_used = time.monotonic()
        served.avg_request_s = 0.8 * served.avg_request_s + 0.2 * duration_s

    def _retry_after(self, key: str) -> int:
        served = self.loaded.get(key)
        per_request = served.avg_request_s if served else 5.0
        waiting = max(self._in_flight.get(key, 0) - self.settings.parallel + 1, 1)
        return max(1, math.ceil(per_request * waiting / self.settings.parallel))

    # --- loading and unloading --------------------------------------------------------------
    async def _loaded(self, key: str, resolved: Resolved) -> ServedModel:
        """The loaded model, loading it once however many requests wait; a waiter's cancellation (its client
        left) does not cancel the load, whose result the next caller uses."""
        if key in self.loaded:
            return self.loaded[key]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(self._load(key, resolved))
            task.add_done_callback(lambda t: (self._loading.pop(key, None), t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def _load(self, key: str, resolved: Resolved) -> ServedModel:
        async with self._load_lock:  # one load at a time, so the memory accounting sees each result
            if resolved.adapters:  # a GGUF base becomes its cached transformers copy (made once, minutes)
                resolved = await asyncio.to_thread(loader.for_adapters, resolved, self.settings.base)
            size = await asyncio.to_thread(predicted_bytes, resolved, self.settings)
            await self._make_room(size, key)
            try:
                served = await asyncio.to_thread(load_served, key, resolved, self.settings, size)
            except DanluError as exc:
                raise ApiError(400, str(exc), param="model", code="model_load_failed") from None
            self.loaded[key] = served
            return served

    async def _make_room(self, size: int, key: str) -> None:
        """Unload idle models, least recently used first, until `size` fits the budget and the count."""
        if size > self.budget_bytes:
            raise ApiError(503, f"模型 {key} 需要约 {size >> 20} MiB，超过内存预算 {self.budget_bytes >> 20} MiB / needs about "
                           f"{size >> 20} MiB, over the memory budget of {self.budget_bytes >> 20} MiB (see `danlu fit`)",
                           type="server_error", code="insufficient_memory")
        while len(self.loaded) >= self.settings.max_loaded or self.used_bytes() + size > self.budget_bytes:
            idle = [m for m in self.loaded.values() if self.is_idle(m)]
            if not idle:
                raise ApiError(503, "所有已加载的模型都在忙，暂时没有内存加载新模型 / every loaded model is busy and there is "
                               "no room for another one yet: retry later", type="server_error", code="no_room",
                               headers={"Retry-After": "5"})
            await self.unload(min(idle, key=lambda m: m.last_used).key)

    async def unload(self, key: str) -> None:
        served = self.loaded.pop(key, None)
        if served is not None:
            log.info("unloading %s", key)
            await asyncio.to_thread(served.runner.close)

    def is_idle(self, served: ServedModel) -> bool:
        """No request in flight, none waiting for it to load: safe to unload."""
        return served.in_flight == 0 and self._in_flight.get(served.key, 0) == 0

    def used_bytes(self) -> int:
        return sum(m.size_bytes for m in self.loaded.values())

    async def preload(self) -> None:
        """The `--model`s, each in the mode its kind asks for (an embedding model in embedding mode)."""
        for key, resolved in list(self.resolver.aliases.items()):
            kind = loader.kind_of_resolved(resolved) if resolved.backend != "remote" else "chat"
            served = await self.acquire(key, {"chat": "generate", "embedding": "embed"}.get(kind, kind))
            self.release(served, served.avg_request_s)

    # --- keep-alive -------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            await self.reap_idle()

    async def reap_idle(self) -> None:
        now = time.monotonic()
        for served in [m for m in self.loaded.values() if self.is_idle(m)]:
            keep = self.keep_alive(served)
            if keep >= 0 and now - served.last_used >= keep:
                await self.unload(served.key)

    def keep_alive(self, served: ServedModel) -> float:
        return self.settings.keep_alive_s if served.keep_alive_s is None else served.keep_alive_s

    def expires_in(self, served: ServedModel) -> float | None:
        keep = self.keep_alive(served)
        if keep < 0:
            return None
        if served.in_flight:
            return keep
        return max(0.0, keep - (time.monotonic() - served.last_used))

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for key in list(self.loaded):
            await self.unload(key)


def not_for_chat(key: str, kind: str) -> ApiError:
    route = "/v1/embeddings, /api/embed" if kind == "embedding" else "/v1/rerank"
    return ApiError(400, f"{key} 是{'向量' if kind == 'embedding' else '重排序'}模型，不能对话或生成文本：用 {route} / {key} is "
                    f"an {kind} model and cannot chat or generate text: use {route}", param="model",
                    code="wrong_model_kind")


def load_served(key: str, resolved: Resolved, settings: ServerSettings, size: int) -> ServedModel:
    """Load weights (blocking): llama.cpp models get the batched engine, embedding models their own engine (its
    calls queue on its lock), others a one-at-a-time runner."""
    from danlu.server.runners import EmbeddingRunner, ThreadRunner

    spec = resolved.spec
    extra = {"trust_remote_code": settings.trust_remote_code}
    if resolved.backend == "llamacpp_embed":
        extra.update(embedding=True, rerank=loader.kind_of_resolved(resolved) == "rerank")
        plan = loader.make_plan(resolved, settings.base, settings.context, **extra)
        engine = loader.load_engine(spec, resolved.variant, plan, resolved.backend)
        return ServedModel(key, resolved, EmbeddingRunner(engine), engine, get_format("raw"), GenerationParams(), None,
                           size, gpu_layers=plan.gpu_layers)
    if resolved.backend == "llamacpp":
        from danlu.backends import llamacpp_batched

        extra.update(settings.kv_layout(), decode_threads=settings.base.threads_decode)
        plan = loader.make_plan(resolved, settings.base, settings.context, **extra)
        engine = runner = llamacpp_batched.load(spec, resolved.variant, plan)
    else:
        if resolved.adapters:
            extra["adapters"] = [str(path) for path in resolved.adapters]
        plan = loader.make_plan(resolved, settings.base, settings.context, **extra)
        engine = loader.load_engine(spec, resolved.variant, plan, resolved.backend)
        runner = ThreadRunner(engine, settings.parallel if resolved.backend == "remote" else 1)
    fmt = loader.choose_format(engine, spec, resolved.backend, resolved.path)
    return ServedModel(key, resolved, runner, engine, fmt, loader.default_params(spec),
                       spec.default_system if spec else None, size, gpu_layers=plan.gpu_layers)


def predicted_bytes(resolved: Resolved, settings: ServerSettings) -> int:
    """Fit's prediction for the model with this server's KV pool; file size × 1.2 when fit cannot say."""
    if resolved.backend == "remote":
        return 0
    if resolved.adapters:  # an fp32 transformers folder: about its size on disk, plus activations
        return int(_size_on_disk(resolved) * 1.2)
    cells, llama_kwargs = settings.fit_inputs() if resolved.backend == "llamacpp" else (settings.context, {"swa_full": True})
    if resolved.backend == "llamacpp_embed":  # one micro-batch holds a whole batch of texts
        llama_kwargs.update(n_ubatch=settings.context, embedding=True)
    if resolved.spec is not None:
        try:
            from danlu.fit import check_fits

            result = check_fits(resolved.spec, resolved.variant, n_ctx=cells, force=True, path=resolved.path,
                                llama_kwargs=llama_kwargs, settings=settings.base)
            if result.predicted_bytes > 0:
                return result.predicted_bytes
        except (DanluError, ImportError, OSError, ValueError) as exc:
            log.warning("fit could not predict %s: %s", resolved.label, exc)
    return int(_size_on_disk(resolved) * 1.2)


def _size_on_disk(resolved: Resolved) -> int:
    path = resolved.path
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _default_budget() -> int:
    """What fit allows on this machine: usable RAM plus usable VRAM, measured at server start."""
    try:
        from danlu.fit import Budget
        from danlu.hardware import detect

        budget = Budget.of(detect())
        return budget.ram + budget.vram
    except Exception as exc:  # noqa: BLE001 — hardware probing must not stop the server
        log.warning("no memory budget from fit (%s); assuming 8 GiB", exc)
        return 8 << 30
