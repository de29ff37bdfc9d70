"""The generation loop the torch backends share: sampling, stop rules, streamed chunks, timings.

An engine describes one generation as a `Run` — the logits after the prompt, a `step(token)` that
feeds one token and returns the next logits, the stop ids, and how a token becomes bytes — and
`stream` does the rest, so a sampling setting means the same thing on transformers and RWKV.
Sampling follows llama.cpp's order (penalties, then top-k, top-p, min-p, temperature) so the three
backends can be compared; temperature 0 is greedy. A `Guide` (danlu/outputs/guide.py) on the Run keeps the
output to a grammar: the draw is checked against it, and only a refused draw is redone over masked logits.
What it does not do: beam search or batching.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from danlu.streaming import TextStream

from .base import Chunk, GenerationParams, Timings

if TYPE_CHECKING:
    from danlu.outputs.guide import Guide

#: The repetition penalty looks at this many recent tokens (llama.cpp's penalty_last_n); penalising
#: a whole long chat would push down every common Chinese character.
REPEAT_WINDOW = 64

Logits = torch.Tensor  # 1-D, one score per vocabulary entry


@dataclass
class Sampler:
    """Picks the next token from logits; remembers what it picked for the penalties."""

    params: GenerationParams
    recent: list[int] = field(default_factory=list)
    penalty_decay: float = 1.0  # ChatRWKV fades presence/frequency counts by 0.996 per token
    counts: dict[int, float] = field(default_factory=dict)
    _generator: torch.Generator | None = None

    def pick(self, logits: Logits) -> int:
        logits = self._penalised(logits.float().clone())
        if self.params.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(self._filtered(logits) / self.params.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._rng(probs.device)))

    def accept(self, token: int) -> None:
        self.recent.append(token)
        for t in self.counts:
            self.counts[t] *= self.penalty_decay
        self.counts[token] = self.counts.get(token, 0.0) + 1.0

    def _penalised(self, logits: Logits) -> Logits:
        p = self.params
        if p.repetition_penalty != 1.0 and self.recent:
            ids = torch.tensor(sorted(set(self.recent[-REPEAT_WINDOW:])), device=logits.device)
            seen = logits[ids]
            logits[ids] = torch.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and self.counts:
            ids = torch.tensor(list(self.counts), device=logits.device)
            counts = torch.tensor(list(self.counts.values()), device=logits.device)
            logits[ids] -= p.presence_penalty + counts * p.frequency_penalty
        return logits

    def _filtered(self, logits: Logits) -> Logits:
        p = self.params
        if 0 < p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            logits = _top_p(logits, p.top_p)
        if p.min_p > 0:
            probs = torch.softmax(logits, dim=-1)
            logits = logits.masked_fill(probs < p.min_p * probs.max(), float("-inf"))
        return logits

    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            seed = self.params.seed if self.params.seed is not None else random.randrange(2**63)
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator


def _top_p(logits: Logits, top_p: float) -> Logits:
    """Keep the smallest set of tokens whose probability adds up to top_p (at least one)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    drop[0] = False
    return logits.masked_fill(drop.scatter(0, order, drop), float("-inf"))


@dataclass
class Run:
    """One generation as an engine describes it to the loop."""

    prompt_tokens: int
    cached_tokens: int
    budget: int  # most tokens to generate (max_tokens, or what the context still holds)
    stop_ids: set[int]
    piece: Callable[[int], bytes]
    prefill: Callable[[], Logits]  # runs the uncached prompt tokens, returns the next-token logits
    step: Callable[[int], Logits]  # feeds one generated token, returns the next logits
    adjust: Callable[[int, Logits, list[int]], None] | None = None  # model rules (ChatRWKV newlines), in place
    penalty_decay: float = 1.0
    guide: "Guide | None" = None  # the constraint the output keeps to


def stream(run: Run, params: GenerationParams, prompt: Sequence[int]) -> Iterator[Chunk]:
    """Sample until a stop id, a stop string or the budget; the last chunk carries finish and timings."""
    start = time.perf_counter()
    logits = run.prefill()
    prefilled = time.perf_counter()
    sampler = Sampler(params, recent=list(prompt[-REPEAT_WINDOW:]), penalty_decay=run.penalty_decay)
    text, out, pending = TextStream(stop=list(params.stop)), [], []
    first, finish = None, "length"
    while len(out) < run.budget:
        if run.adjust:
            logits = logits.clone()  # the engine keeps its logits for save_state; adjust a copy
            run.adjust(len(out), logits, out)
        token = _pick(sampler, logits, run.guide)
        first = first or time.perf_counter()
        if token in run.stop_ids:
            finish = "stop"
            break
        out.append(token)
        pending.append(token)
        sampler.accept(token)
        if run.guide is not None:
            run.guide.accept(token)
        piece = text.feed(run.piece(token))
        if piece.text:  # held tokens (half a character, a possible stop prefix) ride on the next chunk
            yield Chunk(piece.text, pending)
            pending = []
        if piece.stopped:
            finish = "stop"
            break
        if run.guide is not None and run.guide.complete:  # the grammar takes nothing more: the reply is whole
            finish = "grammar"
            break
        if len(out) < run.budget:
            logits = run.step(token)
    tail = text.flush() if finish in ("length", "grammar") else ""
    finish = "stop" if finish == "grammar" else finish
    timings = _timings(run, len(out), start, prefilled, first or time.perf_counter())
    yield Chunk(tail, pending, finish_reason=finish, timings=timings)


def _pick(sampler: Sampler, logits: Logits, guide: "Guide | None") -> int:
    """Draw freely; when a grammar refuses the draw, draw again from the tokens it allows."""
    token = sampler.pick(logits)
    if guide is None or guide.allows(token):
        return token
    allowed = torch.from_numpy(guide.allowed_mask(logits.shape[-1])).to(logits.device)
    return sampler.pick(logits.masked_fill(~allowed, float("-inf")))


def _timings(run: Run, n_out: int, start: float, prefilled: float, first: float) -> Timings:
    end = time.perf_counter()
    new_prompt = run.prompt_tokens - run.cached_tokens
    return Timings(
        prompt_tokens=run.prompt_tokens, cached_tokens=run.cached_tokens, completion_tokens=n_out,
        ttft_s=first - start, prompt_tps=new_prompt / max(prefilled - start, 1e-9),
        decode_tps=max(n_out - 1, 0) / max(end - first, 1e-9),
    )


def log_softmax_sum(rows: torch.Tensor, targets: Sequence[int]) -> float:
    """Sum of log p(target) over rows of logits (one row per target)."""
    logp = torch.log_softmax(rows.double(), dim=-1)
    return float(logp[torch.arange(len(targets)), torch.tensor(list(targets))].sum())


class CachedPrefixEngine:
    """Prefill and evaluation shared by the torch engines. A subclass keeps a cache (KV or recurrent
    state) and provides `_sync(ids) -> (next-token logits, ids already cached)` and
    `_feed(ids, all_logits=True) -> logits of every fed position`."""

    def _prefill(self, run: Run, ids: list[int]) -> torch.Tensor:
        logits, run.cached_tokens = self._sync(ids)
        return logits

    def next_token_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (float32, vocabulary) for the token after `ids`, reusing the cached prefix."""
        return self._sync(list(ids))[0].float().cpu().numpy()

    def loglikelihood(self, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
        """Sum of log p(continuation | context): the context's cache is reused, then one pass over the
        continuation keeps every position's logits."""
        context_ids, continuation_ids = list(context_ids), list(continuation_ids)
        if not context_ids or not continuation_ids:
            raise ValueError("loglikelihood needs a non-empty context and continuation")
        rows = [self._sync(context_ids)[0][None, :]]
        if len(continuation_ids) > 1:
            rows.append(self._feed(continuation_ids[:-1], all_logits=True))
        return log_softmax_sum(torch.cat([r.float().cpu() for r in rows]), continuation_ids)
