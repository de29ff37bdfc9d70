"""Speculative decoding for the single-stream llama.cpp engine (`danlu chat`, `danlu run`).

Each round: the last emitted token and k drafted tokens go to the target in one `llama_decode` batch with
logits for every position, so the target's weights are read once for k + 1 positions; the acceptance rule
(backends/acceptance.py) keeps a prefix of the draft and adds one token of the target's own; the KV cache
entries past the kept tokens are removed (`llama_memory_seq_rm`) in the target, and the drafter's cache
follows on its next call. Output is plain decoding's: the same tokens under greedy, the same distribution
under sampling. Streaming, stop ids, stop strings (UTF-8 safe, via TextStream), the token budget, the KV
prefix reuse across chat turns and Ctrl-C behave as in the plain loop of llamacpp.py.

How many tokens to draft is decided per round by `DraftLength` (backends/draft_length.py) from the
measured acceptance and costs: longer drafts while they are accepted, shorter after rejections, and plain
decoding (with an occasional probe) where drafting does not pay, so speculation is never much slower than
plain decoding. It is off (plain decoding) for constrained output (`GenerationParams.constraint`), beam
search and negative temperatures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from danlu.streaming import TextStream

from . import acceptance
from .base import Chunk, GenerationParams, Timings
from .draft_length import DraftLength
from .drafters import Draft, Drafter, NgramDrafter


def length_for(drafter) -> DraftLength:
    """Prompt lookup drafts for free and copies long runs, so it may go further than a draft model."""
    if isinstance(drafter, NgramDrafter):
        return DraftLength(k_max=32, alpha_prior=0.6, draft_guess=0.0)
    return DraftLength(k_max=10, alpha_prior=0.7, costly_probe=True)


@dataclass
class SpeculationStats:
    """Totals over an engine's life (for `/api/ps`-style reports); the last generation's are in Timings."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def add(self, rounds: int, drafted: int, accepted: int) -> None:
        self.rounds, self.drafted, self.accepted = self.rounds + rounds, self.drafted + drafted, self.accepted + accepted


class Speculator:
    """Speculative decoding for one LlamaCppEngine (the target) with one drafter."""

    def __init__(self, engine, drafter: Drafter, length: DraftLength | None = None):
        self.engine, self.drafter = engine, drafter
        self.length = length or length_for(drafter)
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
            self.stats.add(tally.rounds, tally.drafted, tally.accepted)
        timings = _timings(len(ids), cached, len(out.tokens), start, first, tally.drafted, tally.accepted)
        yield Chunk(out.tail(), out.take_pending(), finish_reason=out.finish, timings=timings)

    def _round(self, seq: list[int], token: int, out: "_Output", params: GenerationParams,
               rng: np.random.Generator, tally: SpeculationStats) -> tuple[acceptance.Verdict, Draft]:
        """Draft after `seq` (whose last token, `token`, is not in the target yet), verify, adapt k."""
        began = time.perf_counter()
        draft = self._draft(seq, out, params, rng)
        drafted = time.perf_counter()
        verdict = self._verify(token, draft, out.tokens, params, rng)
        self.length.record(len(draft.tokens), verdict.accepted, drafted - began, time.perf_counter() - drafted)
        if draft.tokens:
            tally.add(1, len(draft.tokens), verdict.accepted)
        return verdict, draft

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
