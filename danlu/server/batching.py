"""How requests share a model: generation events, the prefix-cache slot table, one-at-a-time runners.

- `Event`: what a running request reports (a chunk with its tokens' logprobs, or an error).
- `SlotTable`: the prefix cache over llama.cpp sequence ids used by backends/llamacpp_batched.py. Each
  slot is a sequence id whose tokens stay in the KV cache after its request ends. A new request takes
  the slot sharing the longest token prefix with its prompt (its own conversation's last turn), or
  copies that prefix into a free slot (`seq_cp` shares the cells, it copies nothing) when continuing in
  place would throw most of a cache away; when KV cells run short the least recently used idle slot
  goes first (as vLLM's automatic prefix caching and llama.cpp's server slots).
- `ThreadRunner`: engines that stream one request at a time (transformers, RWKV, remote) behind the
  same `submit(ids, params, sink, options) -> handle` surface as the batched llama.cpp engine.
- `AsyncEvents`: the bridge from a decode thread to an asyncio consumer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from danlu.backends.base import Chunk, GenerationParams, Timings, common_prefix
from danlu.errors import DanluError
from danlu.streaming import TextStream

#: Continue a cached slot in place when at least this share of its tokens is reused; else copy the prefix.
REUSE_IN_PLACE = 0.5


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token's log-probability and the most likely alternatives (OpenAI `logprobs`)."""

    token: str
    token_bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass(frozen=True)
class Event:
    """What a request's sink receives: a chunk (with its tokens' logprobs), or an error that ends it."""

    chunk: Chunk | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    error: DanluError | None = None


@dataclass(frozen=True)
class SubmitOptions:
    """Per-request settings beyond GenerationParams."""

    logprobs: int | None = None  # None: off; n: the sampled token plus the n most likely
    logit_bias: dict[int, float] | None = None
    ignore_eos: bool = False  # benchmarks only: always generate max_tokens


Sink = Callable[[Event], None]


class Overloaded(DanluError):
    """The model cannot take the request now (KV cache full, being unloaded): retry later (503)."""


class EngineFault(DanluError):
    """A backend failed on a valid request: a bug or a broken runtime (500), never the caller's doing."""


@dataclass(eq=False)
class Request:
    """One generation in a batched engine; its decode thread owns everything but `cancelled`."""

    prompt: list[int]
    params: GenerationParams
    options: SubmitOptions
    sink: Sink
    budget: int  # most new tokens: max_tokens, or what the context has left
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    slot: "Slot | None" = None
    sampler: Any = None  # the engine's sampler chain
    text: TextStream | None = None
    next_token: int | None = None  # sampled, not yet in the KV cache
    out: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # tokens whose text is not out yet (half a character)
    pending_lp: list[TokenLogprob] = field(default_factory=list)
    cached: int = 0
    first: float | None = None

    @property
    def prefilling(self) -> bool:
        return self.next_token is None

    def timings(self) -> Timings:
        end, first = time.perf_counter(), self.first or time.perf_counter()
        ttft, new = first - self.submitted, len(self.prompt) - self.cached
        return Timings(prompt_tokens=len(self.prompt), cached_tokens=self.cached, completion_tokens=len(self.out),
                       ttft_s=ttft, prompt_tps=new / max(ttft, 1e-9),
                       decode_tps=max(len(self.out) - 1, 0) / max(end - first, 1e-9))


class SeqHandle:
    """The caller's side of a request: cancel it (a closed stream, a disconnected client)."""

    def __init__(self, request: Request, wake: Callable[[], None]):
        self._request, self._wake = request, wake

    def cancel(self) -> None:
        self._request.cancelled = True
        self._wake()


# ---------------------------------------------------------------- the prefix cache


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id and the tokens its KV cells hold (decoded tokens only)."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    request: Any = None  # the request decoding in it, None when it is only a cache

    def touch(self) -> None:
        self.last_used = time.monotonic()




class SlotTable:
    """Chooses a slot for each prompt and keeps the cells in use within `cells` (least recently used out)."""

    def __init__(self, n_slots: int, cells: int, forget: Callable[[int, int], bool],
                 copy_prefix: Callable[[int, int, int], None]):
        self.slots = [Slot(i) for i in range(n_slots)]
        self.cells = cells
        self._forget, self._copy = forget, copy_prefix

    def place(self, prompt: list[int], need: int, reserved: int) -> tuple[Slot, int] | None:
        """A slot ready to continue `prompt`, and how many of its tokens are already cached; None: no room now.

        `need` is the cells this request may fill in all (prompt + max new tokens), `reserved` what the
        active requests may still add."""
        target, source, common = self._choose(prompt)
        if target is None:
            return None
        keep = min(common, len(prompt) - 1)  # the last prompt token is decoded again for fresh logits
        while self.used(excluding=target) + need + reserved > self.cells:
            if not self.evict_idle(protect=(target, source)):
                return None
        return target, self._prepare(target, source, keep)

    def _choose(self, prompt: list[int]) -> tuple[Slot | None, Slot | None, int]:
        idle = [s for s in self.slots if s.request is None]
        if not idle:
            return None, None, 0
        best = max(self.slots, key=lambda s: common_prefix(s.tokens, prompt))
        common = common_prefix(best.tokens, prompt)
        if best.request is None and common and common >= REUSE_IN_PLACE * len(best.tokens):
            return best, best, common
        empty = [s for s in idle if not s.tokens]
        target = empty[0] if empty else min(idle, key=lambda s: s.last_used)
        return target, (best if common else None), common

    def _prepare(self, target: Slot, source: Slot | None, keep: int) -> int:
        """Make `target` hold exactly the first `keep` prompt tokens; returns how many it holds."""
        if source is target:
            if not self._forget(target.seq_id, keep):
                keep = 0  # this cache cannot be cut in the middle: start over
            del target.tokens[keep:]
            return keep
        self._forget(target.seq_id, 0)
        target.tokens = []
        if source is not None and keep:
            self._copy(source.seq_id, target.seq_id, keep)
            target.tokens = list(source.tokens[:keep])
        return len(target.tokens)

    def used(self, excluding: Slot | None = None) -> int:
        """Cells held by the slots (shared prefixes counted once per slot: an upper bound)."""
        return sum(len(s.tokens) for s in self.slots if s is not excluding)

    def evict_idle(self, protect: tuple[Slot | None, ...] = ()) -> bool:
        """Give up the least recently used idle cache; False when there is none."""
        idle = [s for s in self.slots if s.request is None and s.tokens and s not in protect]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        self._forget(victim.seq_id, 0)
        victim.tokens = []
        return True

    def info(self) -> dict:
        cached = sum(1 for s in self.slots if s.request is None and s.tokens)
        return {"slots": len(self.slots), "cached_slots": cached, "kv_cells": self.cells, "kv_cells_used": self.used()}


# ---------------------------------------------------------------- engines without batching


class CancelHandle:
    """Cancelling sets a flag the runner checks between chunks."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ThreadRunner:
    """Runs `engine.generate` in worker threads, `concurrency` requests at a time, the rest wait in order."""

    def __init__(self, engine: Any, concurrency: int = 1):
        self.engine, self.parallel = engine, concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="danlu-generate")
        self._lock = threading.Lock()
        self._active = 0
        self._waiting = 0

    def submit(self, ids: Sequence[int], params: GenerationParams, sink: Sink,
               options: SubmitOptions = SubmitOptions()) -> CancelHandle:
        handle = CancelHandle()
        with self._lock:
            self._waiting += 1
        self._pool.submit(self._run, list(ids), params, sink, handle)
        return handle

    def _run(self, ids: list[int], params: GenerationParams, sink: Sink, handle: CancelHandle) -> None:
        with self._lock:
            self._waiting, self._active = self._waiting - 1, self._active + 1
        stream = None
        try:
            if handle.cancelled:
                return
            stream = self.engine.generate(ids, params)
            for chunk in stream:
                if handle.cancelled:
                    return
                sink(Event(chunk=chunk))
        except DanluError as exc:
            sink(Event(error=exc))
        except Exception as exc:  # noqa: BLE001 — a backend bug must end the request, not hang it
            sink(Event(error=EngineFault(f"生成失败 / generation failed: {exc!r}")))
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()
            with self._lock:
                self._active -= 1

    def load_info(self) -> dict:
        return {"active": self._active, "waiting": self._waiting, "parallel": self.parallel}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


class AsyncEvents:
    """A sink that a decode thread calls and an asyncio task awaits."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def __call__(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            pass

    async def get(self) -> Event:
        return await self._queue.get()
