"""Engines that stream one request at a time (transformers, RWKV, remote) behind the batched engine's surface.

- `ThreadRunner`: runs `engine.generate` in worker threads, `concurrency` at a time, behind the same
  `submit(ids, params, sink, options) -> handle` surface as backends/llamacpp_batched.py.
- `EmbeddingRunner`: an embedding or rerank engine's calls, off the event loop.
- `AsyncEvents`: the bridge from a decode thread to an asyncio consumer.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from danlu.backends.base import GenerationParams
from danlu.backends.requests import EngineFault, Event, Overloaded, Sink, SubmitOptions
from danlu.errors import DanluError


class CancelHandle:
    """Cancelling sets a flag the runner checks between chunks; `when_done` waits for the worker to stop."""

    def __init__(self) -> None:
        self.cancelled = False
        self._lock = threading.Lock()
        self._done = False
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        self.cancelled = True

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the worker thread, or now) once the worker has stopped for this request."""
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback()

    @property
    def is_done(self) -> bool:
        return self._done

    def finished(self) -> None:
        with self._lock:
            self._done, callbacks, self._callbacks = True, self._callbacks, []
        for callback in callbacks:
            callback()


class ThreadRunner:
    """Runs `engine.generate` in worker threads, `concurrency` requests at a time, the rest wait in order."""

    def __init__(self, engine: Any, concurrency: int = 1):
        self.engine, self.parallel = engine, concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="danlu-generate")
        self._lock = threading.Lock()
        self._active = 0
        self._waiting = 0
        self._open: dict[CancelHandle, Sink] = {}  # requests not finished yet, to end them at close

    def submit(self, ids: Sequence[int], params: GenerationParams, sink: Sink,
               options: SubmitOptions = SubmitOptions()) -> CancelHandle:
        handle = CancelHandle()
        with self._lock:
            self._waiting += 1
            self._open[handle] = sink
        try:
            self._pool.submit(self._run, list(ids), params, sink, handle)
        except RuntimeError:  # the pool was shut down (the model is unloading)
            with self._lock:
                self._waiting -= 1
            handle.finished()
            sink(Event(error=Overloaded("模型已卸载，请重试 / the model was unloaded: retry")))
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
                self._open.pop(handle, None)
            handle.finished()

    def load_info(self) -> dict:
        return {"active": self._active, "waiting": self._waiting, "parallel": self.parallel}

    def close(self) -> None:
        """Stop every request (running ones at their next chunk), wait for the workers, then free the engine."""
        with self._lock:
            still_open = list(self._open.items())
        for handle, _ in still_open:
            handle.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for handle, sink in still_open:  # those that never started: answered and released here
            if not handle.is_done:
                sink(Event(error=Overloaded("模型已卸载，请重试 / the model was unloaded: retry")))
                handle.finished()
        self.engine.close()


class EmbeddingRunner:
    """An embedding engine behind the scheduler: its calls (embed, rerank) run in worker threads and queue on the
    engine's own lock; `submit` is refused, as such a model generates no text."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._lock = threading.Lock()
        self._active = 0

    async def call(self, method: str, *args, **kwargs) -> Any:
        with self._lock:
            self._active += 1
        try:
            return await asyncio.to_thread(getattr(self.engine, method), *args, **kwargs)
        finally:
            with self._lock:
                self._active -= 1

    def load_info(self) -> dict:
        return {"active": self._active, "waiting": 0, "parallel": 1}

    def close(self) -> None:
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
