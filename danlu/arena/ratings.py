"""Ratings from pairwise votes: Bradley–Terry with bootstrap intervals (the ranking), and online Elo (for comparison).

Chatbot Arena's recipe (lm-sys/FastChat `fastchat/serve/monitor/rating_systems.py`), in numpy only:

- Bradley–Terry: a logistic regression over the distinct (model_a, model_b, outcome) rows weighted by their
  counts; P(a beats b) = 1 / (1 + 10^(β_b − β_a)), i.e. α = ln 10; a tie (or "both bad") counts as half a win
  for each side. Ratings are 400·β + 1000. Fitted by Newton's method with a tiny L2 penalty: the likelihood
  alone does not change when every β moves by the same amount, and a model that won every game would run off
  to infinity; the penalty pins the mean of β at 0 (mean rating 1000) and keeps such a model finite, while
  moving ordinary estimates by far less than a rating point.
- Bootstrap: resample the outcome counts (multinomial over the distinct rows, as many draws as votes),
  100 rounds with a fixed seed, refit; the 2.5% and 97.5% quantiles are the 95% interval.
- Rank: 1 + the number of models whose lower bound is above this model's upper bound.
- Online Elo: K = 4, base 10, scale 400, start 1000, votes in the order they were cast; it depends on that
  order, which is why it is only shown beside the Bradley–Terry rating.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

ALPHA = math.log(10.0)
SCALE, INIT_RATING = 400.0, 1000.0
L2_PENALTY = 1e-3  # on β (log10 odds units): ~0.05 rating points on a 2-vote estimate, finite when separable
ELO_K = 4.0
BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED = 100, 0
NEWTON_MAX_STEPS, NEWTON_TOL = 100, 1e-10

SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}  # model_a's score for each vote


@dataclass(frozen=True)
class Outcome:
    """One vote: model_a's score against model_b (1 won, 0 lost, 0.5 tie or both bad)."""

    model_a: str
    model_b: str
    score_a: float


@dataclass(frozen=True)
class CountedOutcomes:
    """The distinct (a, b, score) rows with their counts, models as indices into `models`."""

    models: list[str]
    pairs: np.ndarray  # (k, 2) int: model indices a, b
    scores: np.ndarray  # (k,) a's score
    counts: np.ndarray  # (k,) how many votes had this row


@dataclass(frozen=True)
class Rating:
    """One model's row of the leaderboard."""

    model: str
    rating: float  # Bradley–Terry, 400·β + 1000
    lower: float  # 95% bootstrap interval
    upper: float
    rank: int
    elo: float  # online Elo, order-dependent
    votes: int
    wins: int
    losses: int
    ties: int

    def to_dict(self) -> dict:
        return asdict(self)


def outcome_of(model_a: str, model_b: str, vote: str) -> Outcome:
    """A stored vote ('a', 'b', 'tie', 'both_bad') as model_a's score."""
    if vote not in SCORES:
        raise ValueError(f"unknown vote {vote!r}: one of {', '.join(SCORES)}")
    return Outcome(model_a, model_b, SCORES[vote])


def count_outcomes(outcomes: Sequence[Outcome]) -> CountedOutcomes:
    """Group identical votes: the regression only needs each distinct row once, with its count."""
    models = sorted({m for o in outcomes for m in (o.model_a, o.model_b)})
    index = {m: i for i, m in enumerate(models)}
    rows: dict[tuple[int, int, float], int] = {}
    for o in outcomes:
        key = (index[o.model_a], index[o.model_b], float(o.score_a))
        rows[key] = rows.get(key, 0) + 1
    keys = sorted(rows)  # a canonical order: the fit cannot depend on the order votes were cast
    pairs = np.array([k[:2] for k in keys], dtype=np.int64).reshape(-1, 2)
    return CountedOutcomes(models, pairs, np.array([k[2] for k in keys]), np.array([rows[k] for k in keys], float))


# ---------------------------------------------------------------- Bradley–Terry


def _penalized_loss(beta: np.ndarray, pairs: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    z = ALPHA * (beta[pairs[:, 0]] - beta[pairs[:, 1]])
    log_p, log_q = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)  # log σ(z), log(1 − σ(z)), stable
    return float(-(weights * (scores * log_p + (1 - scores) * log_q)).sum() + 0.5 * L2_PENALTY * beta @ beta)


def _gradient_and_hessian(beta: np.ndarray, pairs: np.ndarray, scores: np.ndarray,
                          weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, (a, b) = len(beta), pairs.T
    p = 1.0 / (1.0 + np.exp(-ALPHA * (beta[a] - beta[b])))
    g = ALPHA * weights * (p - scores)
    gradient = np.bincount(a, g, n) - np.bincount(b, g, n) + L2_PENALTY * beta
    h = ALPHA**2 * weights * p * (1 - p)
    hessian = L2_PENALTY * np.eye(n)
    np.add.at(hessian, (a, a), h)
    np.add.at(hessian, (b, b), h)
    np.add.at(hessian, (a, b), -h)
    np.add.at(hessian, (b, a), -h)
    return gradient, hessian


def fit_bradley_terry(pairs: np.ndarray, scores: np.ndarray, weights: np.ndarray, n_models: int) -> np.ndarray:
    """β maximising the penalized likelihood: Newton steps, halved until the loss goes down (it is convex)."""
    beta = np.zeros(n_models)
    loss = _penalized_loss(beta, pairs, scores, weights)
    for _ in range(NEWTON_MAX_STEPS):
        gradient, hessian = _gradient_and_hessian(beta, pairs, scores, weights)
        step, t = np.linalg.solve(hessian, gradient), 1.0
        while t > 1e-8 and _penalized_loss(beta - t * step, pairs, scores, weights) > loss - 1e-4 * t * gradient @ step:
            t /= 2
        beta = beta - t * step
        loss = _penalized_loss(beta, pairs, scores, weights)
        if np.abs(t * step).max() < NEWTON_TOL:
            break
    return beta


def to_rating(beta: np.ndarray) -> np.ndarray:
    return SCALE * beta + INIT_RATING


def bradley_terry(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """Each model's rating (400·β + 1000) from all votes."""
    counted = count_outcomes(outcomes)
    beta = fit_bradley_terry(counted.pairs, counted.scores, counted.counts, len(counted.models))
    return dict(zip(counted.models, to_rating(beta).tolist()))


def bootstrap_ratings(counted: CountedOutcomes, rounds: int = BOOTSTRAP_ROUNDS,
                      seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(rounds, n_models) ratings, each refitted on outcome counts resampled from the observed ones."""
    total = int(counted.counts.sum())
    draws = np.random.default_rng(seed).multinomial(total, counted.counts / total, size=rounds)
    n = len(counted.models)
    return np.array([to_rating(fit_bradley_terry(counted.pairs, counted.scores, w.astype(float), n)) for w in draws])


def interval_ranks(lower: Iterable[float], upper: Iterable[float]) -> list[int]:
    """1 + the number of models whose lower bound is above this model's upper bound."""
    lower, upper = np.asarray(list(lower)), np.asarray(list(upper))
    return [1 + int((lower > u).sum()) for u in upper]


# ---------------------------------------------------------------- online Elo


def online_elo(outcomes: Iterable[Outcome], k: float = ELO_K) -> dict[str, float]:
    """Elo updated vote by vote, in the order given (base 10, scale 400, start 1000)."""
    ratings: dict[str, float] = {}
    for o in outcomes:
        ra, rb = ratings.get(o.model_a, INIT_RATING), ratings.get(o.model_b, INIT_RATING)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / SCALE))
        ratings[o.model_a] = ra + k * (o.score_a - expected_a)
        ratings[o.model_b] = rb + k * ((1.0 - o.score_a) - (1.0 - expected_a))
    return ratings


# ---------------------------------------------------------------- the table


def _record(outcomes: Sequence[Outcome], model: str) -> tuple[int, int, int]:
    """(wins, losses, ties-or-both-bad) of one model."""
    scores = [o.score_a if o.model_a == model else 1 - o.score_a for o in outcomes if model in (o.model_a, o.model_b)]
    return sum(s == 1 for s in scores), sum(s == 0 for s in scores), sum(s == 0.5 for s in scores)


def rate(outcomes: Sequence[Outcome], rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> list[Rating]:
    """Every model's Bradley–Terry rating, 95% interval, rank, Elo and record, best first."""
    if not outcomes:
        return []
    counted = count_outcomes(outcomes)
    point = to_rating(fit_bradley_terry(counted.pairs, counted.scores, counted.counts, len(counted.models)))
    samples = bootstrap_ratings(counted, rounds, seed)
    lower, upper = np.quantile(samples, 0.025, axis=0), np.quantile(samples, 0.975, axis=0)
    ranks, elo = interval_ranks(lower, upper), online_elo(outcomes)
    rows = [Rating(m, float(point[i]), float(lower[i]), float(upper[i]), ranks[i], elo[m],
                   sum(m in (o.model_a, o.model_b) for o in outcomes), *_record(outcomes, m))
            for i, m in enumerate(counted.models)]
    return sorted(rows, key=lambda r: (r.rank, -r.rating, r.model))
