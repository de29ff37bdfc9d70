"""Beam search (and beam sampling) for one prompt, with transformers 5's rules, over any decoder step.

An engine describes the search as a `BeamRun` — the logits after the decoder start, a `step(tokens,
parents)` that continues each beam (`parents[i]` is the beam that row i extends, so the engine reorders
its cache) and returns their next logits, the stop ids and the budget — and `beam_search` does the rest.
The rules are those of transformers' `GenerationMixin._beam_search` (batch of one, early_stopping=False):
per step, log-softmax, the logits processors (repetition penalty, banned tokens), with sampling the
temperature / top-k / top-p warpers on the log-probs; add each beam's score; keep the top 2·K candidates
(sampled without replacement from their softmax when sampling); a candidate ending in a stop id, or at
the length limit, is a finished hypothesis scored sum_logprobs / generated_length ** length_penalty;
the best K unfinished go on; stop when no running beam can beat the worst finished one (transformers'
heuristic: its current score at its current length) or nothing can continue. The tensor operations are
the same ones, in the same order, so ties break the same way and the output is token for token the same.
What it does not do: stream (the best hypothesis is known only at the end), batches, early_stopping=True.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .base import GenerationParams

NEG = -1.0e9  # transformers' "cannot be chosen" score


@dataclass
class BeamRun:
    """One beam search as an engine describes it."""

    start: int  # the decoder start token: the first element of every hypothesis
    first_logits: Callable[[], torch.Tensor]  # [vocab] after the start token
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (last tokens [K], parent rows [K]) -> [K, vocab]
    stop_ids: set[int]
    budget: int  # most tokens to generate
    banned: Callable[[list[int]], Sequence[int]] | None = None  # model rules: tokens that may not follow a history


@dataclass(frozen=True)
class BeamResult:
    tokens: list[int]  # the best hypothesis after the start token, its stop token removed
    stopped: bool  # it ended with a stop id (else it ran into the budget)


class _Scorer:
    """Per-step log-probs: processors, then (sampling) warpers, as transformers orders them."""

    def __init__(self, run: BeamRun, params: GenerationParams, sampling: bool):
        self.run, self.params, self.sampling = run, params, sampling
        self.keep_at_least = len(run.stop_ids) + 1  # warpers leave a non-stop token to explore

    def __call__(self, histories: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
        scores = torch.log_softmax(logits.float().cpu(), dim=-1)  # the bookkeeping lives on the CPU
        scores = self._penalised(histories, scores)
        if self.run.banned:
            for row, history in enumerate(histories):
                scores[row, list(self.run.banned(history))] = -math.inf
        return self._warped(scores) if self.sampling else scores

    def _penalised(self, histories: list[list[int]], scores: torch.Tensor) -> torch.Tensor:
        penalty = self.params.repetition_penalty
        if penalty == 1.0:
            return scores
        seen = torch.tensor(histories, device=scores.device)
        picked = torch.gather(scores, 1, seen)
        picked = torch.where(picked < 0, picked * penalty, picked / penalty)
        return scores.scatter(1, seen, picked)

    def _warped(self, scores: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.temperature != 1.0:
            scores = scores / p.temperature
        if p.top_k:
            k = min(max(p.top_k, self.keep_at_least), scores.shape[-1])
            scores = scores.masked_fill(scores < torch.topk(scores, k)[0][..., -1, None], -math.inf)
        if p.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - p.top_p)
            drop[..., -self.keep_at_least:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
        return scores


@dataclass
class _Beams:
    """Running and finished hypotheses; scores are [1, K] tensors as in transformers."""

    running: list[list[int]]
    running_scores: torch.Tensor
    finished: list[list[int]]
    finished_scores: torch.Tensor
    finished_flags: torch.Tensor
    improvable: bool = True

    @classmethod
    def start(cls, start: int, k: int) -> "_Beams":
        scores = torch.zeros((1, k))
        scores[:, 1:] = NEG  # only the first beam spreads at the first step: the rest are its copies
        return cls([[start]] * k, scores, [[start]] * k, torch.full((1, k), NEG), torch.zeros((1, k), dtype=torch.bool))


def beam_search(run: BeamRun, params: GenerationParams) -> BeamResult:
    """The best hypothesis under transformers' beam search (temperature 0) or beam sampling (temperature > 0)."""
    k, sampling = params.num_beams, params.temperature > 0
    keep = max(2, 1 + len(run.stop_ids)) * k
    max_length = 1 + run.budget  # transformers' max_length counts the decoder start
    scorer, generator = _Scorer(run, params, sampling), _generator(params) if sampling else None
    beams, logits = _Beams.start(run.start, k), run.first_logits()[None, :].expand(k, -1)
    cur_len = 1
    while True:
        acc = (scorer(beams.running, logits) + beams.running_scores.view(k, 1)).view(1, -1)
        values, indices = _top(acc, keep, generator)
        vocab = acc.shape[-1] // k
        parents, tokens = indices // vocab, indices % vocab
        candidates = [beams.running[int(p)] + [int(t)] for p, t in zip(parents[0], tokens[0])]
        hits = torch.tensor([[t in run.stop_ids or cur_len + 1 >= max_length for t in tokens[0].tolist()]])
        order = _advance(beams, candidates, values, hits, parents, k)
        _finish(beams, candidates, values, hits, k, cur_len, params.length_penalty)
        cur_len += 1
        _check_improvable(beams, cur_len, params.length_penalty)
        if not beams.improvable or bool(hits.all()):
            break
        logits = run.step(torch.tensor([h[-1] for h in beams.running]), order)
    best = beams.finished[0][1:]
    stopped = bool(best) and best[-1] in run.stop_ids
    return BeamResult(best[:-1] if stopped else best, stopped)


def _top(acc: torch.Tensor, keep: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    if generator is None:
        return torch.topk(acc, k=keep)
    indices = torch.multinomial(torch.softmax(acc, dim=-1), num_samples=keep, generator=generator)
    values, order = torch.gather(acc, 1, indices).sort(dim=-1, descending=True)
    return values, indices.gather(dim=-1, index=order)


def _advance(beams: _Beams, candidates: list[list[int]], values: torch.Tensor, hits: torch.Tensor,
             parents: torch.Tensor, k: int) -> torch.Tensor:
    """The best K candidates that did not finish run on; returns the beam each one extends."""
    open_scores = values + hits.to(torch.float32) * NEG
    chosen = torch.topk(open_scores, k=k)[1]
    beams.running = [candidates[int(i)] for i in chosen[0]]
    beams.running_scores = torch.gather(open_scores, 1, chosen)
    return torch.gather(parents, 1, chosen)[0]


def _finish(beams: _Beams, candidates: list[list[int]], values: torch.Tensor, hits: torch.Tensor, k: int,
            cur_len: int, length_penalty: float) -> None:
    """Candidates among the top K that finished join the finished list if they beat its worst."""
    top_k = torch.zeros(values.shape[-1], dtype=torch.bool)
    top_k[:k] = True
    just_finished = hits & top_k[None, :]
    scores = values / (cur_len ** length_penalty)  # cur_len + 1 - 1: generated tokens, the stop included
    scores = scores + float(not beams.improvable) * NEG
    scores = scores + (~just_finished) * NEG
    merged = torch.cat((beams.finished_scores, scores), dim=1)
    chosen = torch.topk(merged, k=k)[1]
    pool = beams.finished + candidates
    beams.finished = [pool[int(i)] for i in chosen[0]]
    beams.finished_scores = torch.gather(merged, 1, chosen)
    beams.finished_flags = torch.gather(torch.cat((beams.finished_flags, just_finished), dim=1), 1, chosen)


def _check_improvable(beams: _Beams, cur_len: int, length_penalty: float) -> None:
    """transformers' heuristic for early_stopping=False: the best running beam at its current length."""
    best_possible = beams.running_scores[:, :1] / ((cur_len - 1) ** length_penalty)
    worst = torch.where(beams.finished_flags, torch.min(beams.finished_scores, dim=1, keepdim=True)[0], NEG)
    beams.improvable = beams.improvable and bool(torch.any(best_possible > worst))


def _generator(params: GenerationParams) -> torch.Generator:
    import random

    seed = params.seed if params.seed is not None else random.randrange(2**63)
    return torch.Generator().manual_seed(seed)
