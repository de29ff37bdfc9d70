"""Speculative decoding for the single-stream llama.cpp engine (`danlu chat`, `danlu run`).

Each round: the last emitted token and k drafted tokens go to the target in one `llama_decode` batch with
logits for every position, so the target's weights are read once for k + 1 positions; the acceptance rule
(backends/acceptance.py) keeps a prefix of the draft and adds one token of the target's own; the KV cache
entries past the kept tokens are removed (`llama_memory_seq_rm`) in the target, and the drafter's cache
follows on its next call. Output is plain decoding's: the same tokens under greedy, the same distribution
under sampling. Streaming, stop ids, stop strings (UTF-8 safe, via TextStream), the token budget, the KV
prefix reuse across chat turns and Ctrl-C behave as in the plain loop of llamacpp.py.

How many tokens to draft is decided per round by `DraftLength`: it grows on full acceptance, shrinks to
just past the first rejection, and compares the measured seconds per emitted token with plain decoding's;
when drafting does not pay (low acceptance, a slow drafter), it decodes plainly for a while and then
tries again, so speculation is never much slower than plain decoding. It is off (plain decoding) for
constrained output (`GenerationParams.constraint`), beam search and negative temperatures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from danlu.streaming import TextStream

from . import acceptance
from .base import Chunk, GenerationParams, Timings
from .drafters import Draft, Drafter, NgramDrafter

#: A step's time is smoothed over the last few rounds (machine noise is large on a shared CPU).
EMA = 0.3
#: Plain steps before drafting is tried again after it did not pay; doubled each time it fails again.
COOLDOWN_START, COOLDOWN_MAX = 8, 128
#: Drafting rounds before the pay-off is judged (one unlucky round says little).
JUDGE_AFTER = 3


@dataclass
class DraftLength:
    """The adaptive draft length and the pay-off test that switches drafting off and on again."""

    k: int = 4
    k_min: int = 1
    k_max: int = 12
    start: int = 4
    plain_s: float | None = None  # seconds per token of a plain step (kept across generations)
    spec_s: float | None = None  # seconds per emitted token of the drafting rounds since the last (re)start
    tried: int = 0  # drafting rounds since the last (re)start
    cooldown: int = 0
    backoff: int = COOLDOWN_START

    def begin(self) -> None:
        """A new generation: its content may draft better or worse than the last one's."""
        self.k, self.spec_s, self.tried, self.cooldown, self.backoff = self.start, None, 0, 0, COOLDOWN_START

    def next(self, room: int) -> int:
        """How many tokens to draft now (0: a plain step); `room` caps it (budget, context)."""
        if self.plain_s is None or self.cooldown > 0:  # measure plain decoding first
            self.cooldown = max(self.cooldown - 1, 0)
            return 0
        return max(0, min(self.k, room))

    def record(self, drafted: int, accepted: int, seconds: float) -> None:
        """One round's outcome: `drafted` tokens proposed, `accepted` kept, `seconds` for the whole round."""
        if drafted == 0:
            self.plain_s = _ema(self.plain_s, seconds)
            return
        self.spec_s, self.tried = _ema(self.spec_s, seconds / (accepted + 1)), self.tried + 1
        full = accepted == drafted
        self.k = min(self.k_max, self.k + 2) if full else max(self.k_min, min(self.k - 1, accepted + 1))
        if self.plain_s is None or self.tried < JUDGE_AFTER:
            return
        if self.spec_s > self.plain_s:  # drafting costs more than it saves: decode plainly for a while
            self.cooldown, self.backoff = self.backoff, min(self.backoff * 2, COOLDOWN_MAX)
            self.k, self.spec_s, self.tried = self.start, None, 0
        elif self.spec_s < self.plain_s * 0.9:
            self.backoff = COOLDOWN_START  # paying again: a later slump starts with a short pause


def length_for(drafter) -> DraftLength:
    """Prompt lookup drafts for free, so it starts longer and may go further than a draft model."""
    if isinstance(drafter, NgramDrafter):
        return DraftLength(k=8, start=8, k_max=16)
    return DraftLength(k=4, start=4, k_max=10)


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1 - EMA) * old + EMA * new


@dataclass
class SpeculationStats:
    """Totals over an engine's life (for `/api/ps`-style reports); the last generation's are in Timings."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


class Speculator:
    """Speculative decoding for one LlamaCppEngine (the target) with one drafter."""

    def __init__(self, engine, drafter: Drafter, length: DraftLength | None = None):
        self.engine, self.drafter = engine, drafter
        self.length = length or DraftLength()
        self.stats = SpeculationStats()

    @staticmethod
    def applies(params: GenerationParams) -> bool:
        """Speculation keeps output unchanged only for the sampling it reproduces (spec_sampling)."""
        return params.constraint is None and params.num_beams <= 1 and params.temperature >= 0

    def describe(self) -> dict:
        """What a status report shows: the drafter and the acceptance so far."""
        rate = self.stats.acceptance_rate
        return {"draft": self.drafter.name, "drafted_tokens": self.stats.drafted, "accepted_tokens": self.stats.accepted,
                "acceptance_rate": round(rate, 4) if rate is not None else None}

    def generate(self, ids: Sequence[int], params: GenerationParams) -> Iterator[Chunk]:
        """Stream chunks as LlamaCppEngine.generate does; the final chunk's timings carry the acceptance."""
        engine, ids = self.engine, list(ids)
        engine._check_room(ids, params)
        start, cached = time.perf_counter(), engine.common_prefix(ids)
        rng = np.random.default_rng(params.seed)
        out = _Output(engine, params, min(params.max_tokens, engine.n_ctx - len(ids)))
        self.length.begin()
        tally = SpeculationStats()
        try:
            engine._sync(ids)
            token = acceptance.pick_token(_last_row(engine), [], params, rng)
            first = time.perf_counter()
            yield from out.emit([token])
            while not out.finish:
                verdict, draft = self._round(ids + out.tokens, token, out, params, rng, tally)
                yield from out.emit([*draft.tokens[: verdict.accepted], verdict.token])
                token = verdict.token
        finally:  # also on Ctrl-C: the next plain generate must re-decode, not trust this loop's logits
            engine.llm._requires_eval = True
            self._add(tally)
        timings = _timings(len(ids), cached, len(out.tokens), start, first, tally.drafted, tally.accepted)
        yield Chunk(out.tail(), out.take_pending(), finish_reason=out.finish, timings=timings)

    def _round(self, seq: list[int], token: int, out: "_Output", params: GenerationParams,
               rng: np.random.Generator, tally: SpeculationStats) -> tuple[acceptance.Verdict, Draft]:
        """Draft after `seq` (whose last token, `token`, is not in the target yet), verify, adapt k."""
        began = time.perf_counter()
        draft = self._draft(seq, out, params, rng)
        verdict = self._verify(token, draft, out.tokens, params, rng)
        self.length.record(len(draft.tokens), verdict.accepted, time.perf_counter() - began)
        if draft.tokens:
            tally.rounds, tally.drafted, tally.accepted = tally.rounds + 1, tally.drafted + len(draft.tokens), \
                tally.accepted + verdict.accepted
        return verdict, draft

    def _add(self, tally: SpeculationStats) -> None:
        s = self.stats
        s.rounds, s.drafted, s.accepted = s.rounds + tally.rounds, s.drafted + tally.drafted, s.accepted + tally.accepted

    def _draft(self, seq: list[int], out: "_Output", params: GenerationParams, rng: np.random.Generator) -> Draft:
        """Up to k tokens, fewer near the end of the budget or the context (the pending token needs room too)."""
        room = min(out.budget - len(out.tokens) - 1, self.engine.n_ctx - len(seq) - 1)
        k = self.length.next(room)
        return self.drafter.propose(seq, k, out.tokens, params, rng) if k > 0 else Draft([])

    def _verify(self, token: int, draft: Draft, recent: list[int], params: GenerationParams,
                rng: np.random.Generator) -> acceptance.Verdict:
        """Decode [token, *draft] on the target in one batch; keep the accepted prefix in its KV cache."""
        engine = self.engine
        keep = engine.llm.n_tokens + 1
        rows = _decode_rows(engine, [token, *draft.tokens])
        verdict = acceptance.verify(rows, draft.tokens, draft.proposals, recent, params, rng)
        if verdict.accepted < len(draft.tokens):
            engine._truncate(keep + verdict.accepted)  # llama_memory_seq_rm past the kept tokens
        return verdict

    def close(self) -> None:
        self.drafter.close()


def _decode_rows(engine, tokens: list[int]) -> np.ndarray:
    """One batch after the cached tokens, logits for every position (a view valid until the next decode)."""
    llm = engine.llm
    llm._batch.set_batch(batch=tokens, n_past=llm.n_tokens, logits_all=True)
    llm._ctx.decode(llm._batch)  # raises RuntimeError on failure
    llm.input_ids[llm.n_tokens : llm.n_tokens + len(tokens)] = tokens
    llm.n_tokens += len(tokens)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(tokens), llm.n_vocab()))


def _last_row(engine) -> np.ndarray:
    llm = engine.llm
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))


class _Output:
    """The emitted tokens and their text: stop ids, stop strings, budget — as the plain loop applies them."""

    def __init__(self, engine, params: GenerationParams, budget: int):
        self.engine, self.budget = engine, budget
        self.stream = TextStream(stop=list(params.stop))
        self.stops = engine.eos_token_ids() | set(params.stop_token_ids)
        self.tokens: list[int] = []
        self.pending: list[int] = []  # tokens whose text is held (half a character, a possible stop prefix)
        self.finish: str | None = None
        self.ready = ""

    def emit(self, tokens: list[int]) -> Iterator[Chunk]:
        """Emit tokens in order until one ends the output; a chunk carries the text ready after them."""
        for token in tokens:
            self._push(token)
            if self.finish:
                break
        if self.ready:
            text, self.ready = self.ready, ""
            yield Chunk(text, self.take_pending())

    def _push(self, token: int) -> None:
        if token in self.stops or self.engine.is_end_of_generation(token):  # a stop id ends it, unshown
            self.finish = "stop"
            return
        self.tokens.append(token)
        self.pending.append(token)
        piece = self.stream.feed(self.engine.token_to_piece(token))
        self.ready += piece.text
        if piece.stopped:
            self.finish = "stop"
        elif len(self.tokens) >= self.budget:
            self.finish = "length"

    def take_pending(self) -> list[int]:
        ids, self.pending = self.pending, []
        return ids

    def tail(self) -> str:
        held = self.stream.flush() if self.finish == "length" else ""  # as the plain loop: a stop drops held text
        return self.ready + held


def _timings(n_prompt: int, cached: int, n_out: int, start: float, first: float, drafted: int,
             accepted: int) -> Timings:
    end = time.perf_counter()
    ttft = first - start
    return Timings(prompt_tokens=n_prompt, cached_tokens=cached, completion_tokens=n_out, ttft_s=ttft,
                   prompt_tps=(n_prompt - cached) / max(ttft, 1e-9),
                   decode_tps=max(n_out - 1, 0) / max(end - first, 1e-9),
                   drafted_tokens=drafted, accepted_tokens=accepted)
