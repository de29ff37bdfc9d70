"""The leaderboard: arena ratings from the stored votes, with C-Eval and CMMLU scores beside them.

Only anonymous battles are rated (the names were hidden while the person judged); votes cast side by side
with the names visible are counted separately and left out, as Chatbot Arena does. The evaluation scores
come from `danlu.evaluate.report.leaderboard`: runs measured on this machine first, else the catalog's
published score, each row labelled with its kind, source and protocol.
"""

from __future__ import annotations

from pathlib import Path

from danlu.arena.ratings import BOOTSTRAP_ROUNDS, rate
from danlu.arena.store import ArenaStore

SUITES = ("ceval", "cmmlu")
FEW_VOTES = 20  # below this the page and the CLI say the ratings are not to be trusted yet


def eval_rows(db_path: Path) -> dict[str, list[dict]]:
    """Per suite: measured runs and published scores, best first."""
    from danlu.evaluate.report import leaderboard as eval_leaderboard

    return {suite: eval_leaderboard(db_path, suite) for suite in SUITES}


def best_score(rows: list[dict], model: str) -> dict | None:
    """A model's measured score when there is one (the best run), else its published one."""
    mine = [r for r in rows if r["model"].split(":")[0] == model.split(":")[0]]
    measured = [r for r in mine if r["kind"] == "measured"]
    chosen = max(measured or mine, key=lambda r: r["score"], default=None)
    return {"score": chosen["score"], "kind": chosen["kind"], "source": chosen["source"]} if chosen else None


def arena_rows(store: ArenaStore, evals: dict[str, list[dict]], rounds: int = BOOTSTRAP_ROUNDS) -> list[dict]:
    """One row per rated model, best first: rating, interval, rank, votes, Elo and its evaluation scores."""
    ratings = rate([v.outcome() for v in store.votes(anonymous_only=True)], rounds=rounds)
    return [{**r.to_dict(), **{suite: best_score(evals[suite], r.model) for suite in SUITES}} for r in ratings]


def leaderboard(db_path: Path, rounds: int = BOOTSTRAP_ROUNDS) -> dict:
    """Everything the page and `danlu leaderboard` show."""
    store = ArenaStore.open(db_path)
    try:
        evals = eval_rows(db_path)
        all_votes = store.votes(anonymous_only=False)
        anonymous = sum(v.anonymous for v in all_votes)
        return {"arena": arena_rows(store, evals, rounds), "n_votes": anonymous, "few_votes": 0 < anonymous < FEW_VOTES,
                "n_named_votes": len(all_votes) - anonymous, "bootstrap_rounds": rounds, "evals": evals}
    finally:
        store.close()
