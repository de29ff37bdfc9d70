"""The arena's math (danlu/arena/ratings.py) against what it must do: recover known strengths, ignore the
order of votes, count a tie as half a win, give bootstrap intervals around the estimate, rank by the
interval rule, and update Elo exactly as the hand computation says."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from danlu.arena.ratings import (INIT_RATING, Outcome, bootstrap_ratings, bradley_terry, count_outcomes,
                                 interval_ranks, online_elo, outcome_of, rate)

STRENGTHS = {"weak": -0.4, "fair": -0.1, "good": 0.2, "best": 0.5}  # β in log10-odds units


def simulated_votes(n: int, seed: int = 7, tie_rate: float = 0.15) -> list[Outcome]:
    """Votes between random pairs; a wins with P = 1 / (1 + 10^(β_b − β_a)), some votes are ties."""
    rng = random.Random(seed)
    names, votes = list(STRENGTHS), []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        if rng.random() < tie_rate:
            votes.append(Outcome(a, b, 0.5))
            continue
        p_a = 1 / (1 + 10 ** (STRENGTHS[b] - STRENGTHS[a]))
        votes.append(Outcome(a, b, 1.0 if rng.random() < p_a else 0.0))
    return votes


def test_votes_drawn_from_known_strengths_recover_their_order_and_spacing():
    with_ties = bradley_terry(simulated_votes(3000))
    assert sorted(with_ties, key=with_ties.get) == ["weak", "fair", "good", "best"]
    ratings = bradley_terry(simulated_votes(3000, tie_rate=0.0))  # exactly the Bradley–Terry model
    for model, beta in STRENGTHS.items():  # the true ratings (mean 1000) within 40 points
        assert ratings[model] == pytest.approx(400 * beta + INIT_RATING - 400 * np.mean(list(STRENGTHS.values())), abs=40)


def test_bradley_terry_does_not_depend_on_the_order_of_the_votes():
    votes = simulated_votes(400)
    shuffled = votes[:]
    random.Random(1).shuffle(shuffled)
    assert bradley_terry(shuffled) == pytest.approx(bradley_terry(votes), abs=1e-9)
    assert [r.to_dict() | {"elo": 0} for r in rate(shuffled)] == [r.to_dict() | {"elo": 0} for r in rate(votes)]


def test_only_ties_give_equal_ratings():
    ratings = bradley_terry([Outcome("x", "y", 0.5)] * 5 + [Outcome("y", "x", 0.5)] * 3)
    assert ratings["x"] == pytest.approx(1000.0) and ratings["y"] == pytest.approx(1000.0)


def test_a_tie_counts_as_half_a_win():
    # one win and one tie: x scores 1.5 of 2, so P(x beats y) = 0.75 and the gap is 400·log10(3) ≈ 190.8
    with_tie = bradley_terry([Outcome("x", "y", 1.0), Outcome("x", "y", 0.5)])
    assert with_tie["x"] - with_tie["y"] == pytest.approx(400 * math.log10(3), abs=0.5)
    # the same scores as three wins and one loss (a tie is exactly a half win and a half loss)
    as_wins = bradley_terry([Outcome("x", "y", 1.0)] * 3 + [Outcome("x", "y", 0.0)])
    assert with_tie["x"] - with_tie["y"] == pytest.approx(as_wins["x"] - as_wins["y"], abs=0.5)
    # and a lone win, with nothing against it, puts x much further ahead than a win plus a tie
    alone = bradley_terry([Outcome("x", "y", 1.0)])
    assert alone["x"] - alone["y"] > with_tie["x"] - with_tie["y"] + 300


def test_both_bad_counts_as_a_tie():
    assert outcome_of("x", "y", "both_bad").score_a == 0.5 == outcome_of("x", "y", "tie").score_a
    assert outcome_of("x", "y", "a").score_a == 1.0 and outcome_of("x", "y", "b").score_a == 0.0
    with pytest.raises(ValueError):
        outcome_of("x", "y", "left")


def test_ratings_are_centred_on_1000_and_finite_when_one_model_wins_everything():
    ratings = bradley_terry([Outcome("champ", "other", 1.0)] * 10 + [Outcome("other", "third", 0.5)] * 4)
    assert np.mean(list(ratings.values())) == pytest.approx(1000.0, abs=1e-6)
    assert all(math.isfinite(r) for r in ratings.values()) and ratings["champ"] > ratings["other"]


def test_bootstrap_is_seeded_and_its_intervals_contain_the_estimate():
    votes = simulated_votes(600)
    counted = count_outcomes(votes)
    assert np.array_equal(bootstrap_ratings(counted), bootstrap_ratings(counted))  # deterministic
    assert bootstrap_ratings(counted).shape == (100, 4)
    for row in rate(votes):
        assert row.lower <= row.rating <= row.upper
        assert row.upper - row.lower < 150  # 600 votes: the intervals are informative


def test_bootstrap_resamples_outcome_counts_keeping_the_total():
    counted = count_outcomes(simulated_votes(200))
    draws = np.random.default_rng(0).multinomial(200, counted.counts / 200, size=100)
    assert (draws.sum(axis=1) == 200).all() and draws.shape[1] == len(counted.counts)


def test_rank_is_one_plus_the_models_whose_lower_bound_beats_this_upper_bound():
    lower, upper = [1100, 1050, 900, 880], [1200, 1150, 1000, 1090]
    # model 0: nobody's lower bound is above 1200 → 1; model 1: 1100 > 1150? no → 1;
    # model 2: 1100 and 1050 are above 1000 → 3; model 3: only 1100 is above 1090 → 2
    assert interval_ranks(lower, upper) == [1, 1, 3, 2]


def test_the_table_is_sorted_by_rank_and_counts_each_models_record():
    votes = [Outcome("x", "y", 1.0), Outcome("y", "x", 0.5), Outcome("z", "x", 0.0), Outcome("y", "z", 1.0)]
    rows = {r.model: r for r in rate(votes)}
    assert (rows["x"].wins, rows["x"].losses, rows["x"].ties, rows["x"].votes) == (2, 0, 1, 3)
    assert (rows["z"].wins, rows["z"].losses, rows["z"].ties, rows["z"].votes) == (0, 2, 0, 2)
    ordered = rate(votes)
    assert [r.rank for r in ordered] == sorted(r.rank for r in ordered)
    assert rate([]) == []


def test_online_elo_matches_a_hand_computed_case():
    # vote 1: both at 1000, expected 0.5, a wins: a = 1000 + 4·0.5 = 1002, b = 998
    # vote 2: b (998) beats a (1002): expected for b = 1/(1 + 10^(4/400)) = 0.4942438;
    #         b = 998 + 4·(1 − 0.4942438) = 1000.0230248, a = 1002 − 4·(1 − 0.4942438) = 999.9769752
    # vote 3: a tie between a and a newcomer c at 1000: expected for a = 1/(1 + 10^(0.0230248/400)) = 0.4999669;
    #         a = 999.9769752 + 4·(0.5 − 0.4999669) = 999.9771077, c = 1000 − 4·(0.5 − 0.4999669) = 999.9998675
    elo = online_elo([Outcome("a", "b", 1.0), Outcome("b", "a", 1.0), Outcome("a", "c", 0.5)])
    expected_b = 1 / (1 + 10 ** (4 / 400))
    assert elo["b"] == pytest.approx(998 + 4 * (1 - expected_b), abs=1e-9) == pytest.approx(1000.0230248, abs=1e-6)
    assert elo["a"] == pytest.approx(999.9771077, abs=1e-6)
    assert elo["c"] == pytest.approx(999.9998675, abs=1e-6)


def test_online_elo_depends_on_the_order_bradley_terry_does_not():
    votes = [Outcome("a", "b", 1.0)] * 5 + [Outcome("a", "b", 0.0)] * 5
    assert online_elo(votes)["a"] != pytest.approx(online_elo(votes[::-1])["a"], abs=1e-3)
    assert bradley_terry(votes)["a"] == pytest.approx(bradley_terry(votes[::-1])["a"]) == pytest.approx(1000.0)
