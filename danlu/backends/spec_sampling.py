"""The target's next-token distribution, in numpy, as llama.cpp's sampler chain defines it.

Speculative decoding needs the probabilities themselves (the acceptance rule compares p and q), not
only a sampled token, so this repeats the chain llama-cpp-python builds for `Llama.generate`
(`_init_sampler`): penalties over the last 64 generated tokens, then top-k, top-p, min-p, temperature,
softmax. Penalties use llama.cpp's float32 arithmetic, so the greedy pick (penalised argmax, the first
of equal maxima) is the very token plain decoding picks from the same logits. Typical-p, mirostat and
logit biases are not used by danlu and are not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import GenerationParams

#: llama-cpp-python's `last_n_tokens_size`: the penalties see this many of the tokens generated so far
#: (only generated ones: `Llama.generate` never feeds the prompt to its sampler).
PENALTY_WINDOW = 64


@dataclass(frozen=True)
class Distribution:
    """Probabilities over the tokens that survive the filters (the rest have probability 0)."""

    ids: np.ndarray  # int64, the kept tokens, most likely first
    probs: np.ndarray  # float64, sums to 1

    def prob(self, token: int) -> float:
        hit = np.nonzero(self.ids == token)[0]
        return float(self.probs[hit[0]]) if hit.size else 0.0

    def sample(self, rng: np.random.Generator) -> int:
        return int(self.ids[_draw(self.probs, rng)])

    def top(self) -> tuple[int, float]:
        """The most likely token and its probability."""
        return int(self.ids[0]), float(self.probs[0])


def point_mass(token: int) -> Distribution:
    """A proposal that is certain (prompt lookup proposes tokens, not distributions)."""
    return Distribution(np.array([token], dtype=np.int64), np.array([1.0]))


def penalised(logits: np.ndarray, recent: Sequence[int], params: GenerationParams) -> np.ndarray:
    """A float32 copy of `logits` with llama.cpp's repeat, frequency and presence penalties applied."""
    out = np.array(logits, dtype=np.float32)
    window = list(recent)[-PENALTY_WINDOW:]
    repeat, freq, present = (np.float32(params.repetition_penalty), np.float32(params.frequency_penalty),
                             np.float32(params.presence_penalty))
    if not window or (repeat == 1 and freq == 0 and present == 0):
        return out
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    seen = out[ids]
    seen = np.where(seen <= 0, seen * repeat, seen / repeat)
    out[ids] = seen - (counts.astype(np.float32) * freq + present)
    return out


def greedy(logits: np.ndarray, recent: Sequence[int], params: GenerationParams) -> int:
    """What plain greedy decoding picks: the penalised argmax."""
    return int(np.argmax(penalised(logits, recent, params)))


def distribution(logits: np.ndarray, recent: Sequence[int], params: GenerationParams) -> Distribution:
    """The sampling distribution: penalties, top-k, top-p, min-p, temperature, softmax (llama.cpp's order)."""
    scores = penalised(logits, recent, params).astype(np.float64)
    ids = _top_k(scores, params.top_k)
    kept = scores[ids]
    order = np.argsort(-kept, kind="stable")
    ids, kept = ids[order], kept[order]
    n = _top_p_count(kept, params.top_p)
    ids, kept = ids[:n], kept[:n]
    if params.min_p > 0:
        keep = kept >= kept[0] + np.log(params.min_p)
        ids, kept = ids[keep], kept[keep]
    return Distribution(ids, _softmax(kept / params.temperature))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= scores.size:
        return np.arange(scores.size)
    return np.argpartition(-scores, k - 1)[:k]


def _top_p_count(sorted_scores: np.ndarray, top_p: float) -> int:
    """How many of the sorted tokens top-p keeps: up to and including the one whose cumulative
    probability reaches p (probabilities before temperature, as in llama.cpp)."""
    if top_p >= 1.0:
        return sorted_scores.size
    cumulative = np.cumsum(_softmax(sorted_scores))
    return int(min(np.searchsorted(cumulative, top_p) + 1, sorted_scores.size))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Inverse-CDF sampling (one uniform per draw, so a seed fixes the whole run)."""
    cumulative = np.cumsum(probs)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"), probs.size - 1))
