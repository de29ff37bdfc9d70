"""Engines that stream one request at a time (transformers, RWKV, remote) behind the batched engine's surface.

- `ThreadRunner`: runs `engine.generate` in worker threads, `concurrency` at a time, behind the same
  `submit(ids, params, sink, options) -> handle` surface as backends/llamacpp_batched.py.
- `AsyncEvents`: the bridge from a decode thread to an asyncio consumer.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from danlu.backends.base import GenerationParams
from danlu.backends.requests import EngineFault, Event, Sink, SubmitOptions
from danlu.errors import DanluError


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
