"""What a request to an engine carries and reports: options, events, errors, the batched request record.

- `SubmitOptions`: per-request settings beyond GenerationParams (logprobs, logit bias, ...).
- `Event`: what a running request reports to its sink (a chunk with its tokens' logprobs, or an error).
- `Overloaded` / `EngineFault`: capacity (retry later) and backend failures (a bug), as opposed to the
  caller's own mistakes (plain DanluError).
- `Request` / `SeqHandle`: one generation inside a batched engine, and the caller's handle to cancel it.

Every engine that serves several callers (backends/llamacpp_batched.py, server/runners.py) speaks these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from danlu.backends.base import Chunk, GenerationParams, Timings
from danlu.errors import DanluError
from danlu.streaming import TextStream

if TYPE_CHECKING:
    from danlu.backends.slots import Slot


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

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the engine no longer works for this request: at once, since a batched engine's
        memory is its own fixed pool and closing it ends every request it holds."""
        callback()
