"""Which drafted tokens the target keeps: the standard rule of speculative decoding.

Given the target's logits at every drafted position (one batch) and the drafter's proposal:
- greedy: accept while the target's own pick (penalised argmax) equals the drafted token; the first
  disagreement is replaced by the target's pick, so the output is plain greedy decoding, token for token;
- sampling (Leviathan et al. 2023, Chen et al. 2023): accept drafted token x with probability
  min(1, p(x) / q(x)); on rejection, draw from norm(max(0, p − q)). Each emitted token is then distributed
  exactly as the target's p, whatever the drafter proposed. A drafter without probabilities (prompt
  lookup) proposes with certainty: q is a point mass.
After all drafted tokens are accepted, one more token comes free from the last row (the "bonus").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import spec_sampling
from .base import GenerationParams
from .spec_sampling import Distribution


@dataclass(frozen=True)
class Verdict:
    """How many drafted tokens were accepted, and the token the target adds after them."""

    accepted: int
    token: int


def verify(rows: np.ndarray, drafted: Sequence[int], proposals: Sequence[Distribution] | None,
           recent: Sequence[int], params: GenerationParams, rng: np.random.Generator) -> Verdict:
    """`rows[i]` are the target's logits for the token after drafted[:i] (len(drafted) + 1 rows); `recent`
    are the tokens generated before the draft (for the penalties); `proposals` the drafter's q per token."""
    history = list(recent)
    for i, token in enumerate(drafted):
        if params.temperature <= 0:
            pick = spec_sampling.greedy(rows[i], history, params)
            if pick != token:
                return Verdict(i, pick)
        else:
            p = spec_sampling.distribution(rows[i], history, params)
            q = proposals[i] if proposals else spec_sampling.point_mass(token)
            kept, replacement = accept_or_resample(p, q, token, rng)
            if not kept:
                return Verdict(i, replacement)
        history.append(token)
    return Verdict(len(drafted), pick_token(rows[len(drafted)], history, params, rng))


def pick_token(logits: np.ndarray, recent: Sequence[int], params: GenerationParams, rng: np.random.Generator) -> int:
    """One token from the target as plain decoding would choose it."""
    if params.temperature <= 0:
        return spec_sampling.greedy(logits, recent, params)
    return spec_sampling.distribution(logits, recent, params).sample(rng)


def accept_or_resample(p: Distribution, q: Distribution, token: int, rng: np.random.Generator) -> tuple[bool, int]:
    """The rejection step for one drafted token: (True, token) if kept, else (False, a draw from the residual)."""
    p_x, q_x = p.prob(token), q.prob(token)
    if q_x <= 0:  # not drawn from q after all: p alone decides
        return False, p.sample(rng)
    if rng.random() * q_x < p_x:  # accept with probability min(1, p(x)/q(x))
        return True, token
    return False, residual(p, q).sample(rng)


def residual(p: Distribution, q: Distribution) -> Distribution:
    """norm(max(0, p − q)) over p's support (outside it the difference is never positive)."""
    q_on_p = _probs_at(q, p.ids)
    left = np.maximum(p.probs - q_on_p, 0.0)
    total = left.sum()
    if total <= 0:  # p == q: rejection had probability 0; p itself is the right answer
        return p
    return Distribution(p.ids, left / total)


def _probs_at(d: Distribution, ids: np.ndarray) -> np.ndarray:
    """d's probabilities at `ids` (0 where d does not reach)."""
    order = np.argsort(d.ids)
    sorted_ids = d.ids[order]
    where = np.clip(np.searchsorted(sorted_ids, ids), 0, max(sorted_ids.size - 1, 0))
    found = sorted_ids[where] == ids if sorted_ids.size else np.zeros(ids.shape, dtype=bool)
    return np.where(found, d.probs[order][where], 0.0)
