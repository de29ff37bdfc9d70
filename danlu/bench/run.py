"""Speed of one model as `danlu serve` runs it: prefill and decode tokens/s and time to first token, for one
stream and for N concurrent streams.

The engine is built by the server's own `scheduler.load_served` (the batched llama.cpp engine, its KV pool,
threads and wait policy) and driven in this process through `submit`, so HTTP is left out. Every trial sends
fresh random token prompts (no prefix cache hit), greedy, `ignore_eos`, exactly `tg` new tokens per stream:
- prefill tokens/s: prompt tokens of all streams over the time until the last stream's first token;
- time to first token: the median over the streams;
- decode tokens/s: tokens produced while every stream is decoding, over that window (llama-batched-bench's
  S_TG); for one stream, the tokens after the first over the time they took.
Each figure is the median over `repeat` trials, after one short warm-up request.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass

from danlu.backends.base import GenerationParams
from danlu.backends.requests import SubmitOptions
from danlu.config import Settings, get_settings
from danlu.errors import DanluError


@dataclass(frozen=True)
class Row:
    """One line of the table: N streams together."""

    streams: int
    prefill_tps: float
    ttft_s: float
    decode_tps: float

    @property
    def per_stream_tps(self) -> float:
        return self.decode_tps / self.streams


@dataclass
class _Stream:
    """What one request saw: when it was sent, when each chunk of tokens came."""

    sent: float
    marks: list[tuple[float, int]]
    done: threading.Event
    error: Exception | None = None


def trial(engine, n: int, pp: int, tg: int, rng: random.Random) -> Row:
    """N requests sent together; their prefill, TTFT and decode figures."""
    params = GenerationParams(max_tokens=tg, temperature=0.0, top_k=1)
    high = max(min(engine.n_vocab, 30_000), 200)
    streams = []
    for _ in range(n):
        stream = _Stream(time.perf_counter(), [], threading.Event())
        engine.submit([rng.randrange(100, high) for _ in range(pp)], params, _sink(stream), SubmitOptions(ignore_eos=True))
        streams.append(stream)
    for stream in streams:
        stream.done.wait()
        if stream.error is not None:
            raise stream.error
    return _row(streams, pp)


def _sink(stream: _Stream):
    def sink(event) -> None:
        if event.chunk is not None and event.chunk.token_ids:
            stream.marks.append((time.perf_counter(), len(event.chunk.token_ids)))
        if event.error is not None:
            stream.error = event.error
        if event.error is not None or (event.chunk is not None and event.chunk.finish_reason):
            stream.done.set()
    return sink


def _row(streams: list[_Stream], pp: int) -> Row:
    sent = min(s.sent for s in streams)
    firsts = [s.marks[0][0] for s in streams]
    prefill = len(streams) * pp / max(max(firsts) - sent, 1e-9)
    return Row(len(streams), prefill, statistics.median(f - s.sent for f, s in zip(firsts, streams)),
               decode_window_tps([s.marks for s in streams]))


def decode_window_tps(marks: list[list[tuple[float, int]]]) -> float:
    """Tokens per second while every stream decodes (after each one's first token, until the first one ends)."""
    start, end = max(m[0][0] for m in marks), min(m[-1][0] for m in marks)
    if len(marks) == 1 or end <= start:
        tokens = sum(n for m in marks for _, n in m[1:])
        return tokens / max(max(m[-1][0] for m in marks) - min(m[0][0] for m in marks), 1e-9)
    return sum(n for m in marks for t, n in m if start < t <= end) / (end - start)


def median_row(rows: list[Row]) -> Row:
    return Row(rows[0].streams, *(statistics.median(getattr(r, k) for r in rows)
                                  for k in ("prefill_tps", "ttft_s", "decode_tps")))


def run(model: str, *, pp: int = 128, tg: int = 64, streams: tuple[int, ...] = (1, 4), repeat: int = 2,
        settings: Settings | None = None, seed: int = 0) -> dict:
    """Load `model` as the server does, measure every stream count `repeat` times, interleaved; the report."""
    if pp < 1 or tg < 2 or repeat < 1 or min(streams) < 1:
        raise DanluError("--pp ≥ 1、--tg ≥ 2、--repeat ≥ 1、并发数 ≥ 1 / need --pp ≥ 1, --tg ≥ 2, --repeat ≥ 1, streams ≥ 1")
    settings = settings or get_settings()
    served = _load(model, settings, max(streams), pp + tg + 16)
    engine, rng = served.runner, random.Random(seed)
    try:
        trial(engine, 1, 8, 4, rng)  # warm-up: the weights' pages, the compute buffers
        samples = {n: [] for n in streams}
        for _ in range(repeat):
            for n in streams:
                samples[n].append(trial(engine, n, pp, tg, rng))
    finally:
        served.runner.close()
    return _report(served, settings, pp, tg, repeat, [median_row(samples[n]) for n in streams])


def _load(model: str, settings: Settings, parallel: int, n_ctx: int):
    """The model as `danlu serve` loads it, with `parallel` decode lanes."""
    from danlu.loader import resolve
    from danlu.server import ServerSettings
    from danlu.server.scheduler import load_served

    server = ServerSettings(parallel=parallel, n_ctx=max(n_ctx, 256), base=settings)
    resolved = resolve(model, settings=settings)
    if resolved.backend != "llamacpp":
        raise DanluError(f"danlu bench 目前只测 GGUF（llama.cpp）模型，{resolved.label} 用 {resolved.backend} / danlu bench "
                         f"measures GGUF (llama.cpp) models; {resolved.label} runs on {resolved.backend}")
    return load_served(model, resolved, server, 0)


def _report(served, settings: Settings, pp: int, tg: int, repeat: int, rows: list[Row]) -> dict:
    from danlu.threads import USER_KNOBS

    return {"model": served.resolved.label, "path": str(served.resolved.path), "pp": pp, "tg": tg, "repeat": repeat,
            "threads": settings.threads, "decode_threads": settings.threads_decode,
            "omp": {k: os.environ[k] for k in USER_KNOBS if k in os.environ}, "cpu_count": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "rows": [{**asdict(r), "per_stream_tps": r.per_stream_tps} for r in rows]}
