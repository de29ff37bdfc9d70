"""The leaderboard: arena ratings from the stored votes, with C-Eval and CMMLU scores beside them.

Only anonymous battles are rated (the names were hidden while the person judged); votes cast side by side
with the names visible are counted separately and left out, as Chatbot Arena does. The evaluation scores
come from `danlu.evaluate.report.leaderboard`, one row per model and benchmark (`pick_score`): a run measured
on this machine comes first; else one published score, chosen by the rule in PUBLISHED_RULE; the scores not
chosen travel with the row (the page shows them in a tooltip). Each row has a note in both languages.
"""

from __future__ import annotations

from pathlib import Path

from danlu.arena.ratings import BOOTSTRAP_ROUNDS, rate
from danlu.arena.store import ArenaStore
from danlu.errors import DanluError

SUITES = ("ceval", "cmmlu")
FEW_VOTES = 20  # below this the page and the CLI say the ratings are not to be trusted yet


PUBLISHED_RULE = ("发布的成绩按此顺序选一个：与本条目同为对话版或基础版的、测试集优于验证集、目录中先列的 / one published "
                  "score is chosen in this order: the same variant as the entry (chat or base), the test split before "
                  "val, the one the catalog lists first")
SPLIT_ZH = {"test": "测试集", "val": "验证集", "dev": "开发集"}


def eval_rows(db_path: Path) -> dict[str, list[dict]]:
    """Per suite: one row per model (a measured run first, else the chosen published score), best first."""
    from danlu.evaluate.report import leaderboard as eval_leaderboard

    tables = {}
    for suite in SUITES:
        rows = eval_leaderboard(db_path, suite)
        models = dict.fromkeys(_base_id(r["model"]) for r in rows)
        tables[suite] = sorted((pick_score(rows, m) for m in models), key=lambda r: -r["score"])
    return tables


def _base_id(model: str) -> str:
    return model.split(":")[0]


def _published_order(row: dict, is_chat: bool) -> tuple:
    variant = row.get("variant")
    same_variant = variant is None or (variant == "chat") == is_chat
    return (not same_variant, row.get("split") != "test", row["order"])


def pick_score(rows: list[dict], model: str) -> dict:
    """The row shown for `model`: its best measured run, else the published score PUBLISHED_RULE picks;
    the others under "others"."""
    mine = [dict(r, order=n) for n, r in enumerate(rows) if _base_id(r["model"]) == _base_id(model)]
    measured = sorted((r for r in mine if r["kind"] == "measured"), key=lambda r: -r["score"])
    is_chat = _is_chat(_base_id(model))
    published = sorted((r for r in mine if r["kind"] != "measured"), key=lambda r: _published_order(r, is_chat))
    chosen, *others = measured + published
    return {**_with_note(chosen), "model": _base_id(model),
            "others": [_with_note(r) for r in others]}


def _is_chat(model: str) -> bool:
    from danlu import catalog

    try:
        return catalog.get(model).chat
    except DanluError:
        return True  # not a catalog model (a path, a remote): take it as a chat model


def _with_note(row: dict) -> dict:
    """The row with `note`: who measured it and how, as "中文 / English"."""
    shown = {k: v for k, v in row.items() if k != "order"}
    if row["kind"] == "measured":
        return {**shown, "note": f"本机测得（{row['protocol']}）/ measured here ({row['protocol']})"}
    split = row.get("split")
    shots = row.get("shots")
    zh = [f"{row['source']} 公布"] + ([SPLIT_ZH.get(split, split)] if split else []) + ([f"{shots} 样例"] if shots is not None else [])
    en = [f"published in {row['source']}"] + ([split] if split else []) + ([f"{shots}-shot"] if shots is not None else [])
    if row.get("variant") == "base":
        zh.append("基础版的成绩")
        en.append("the base model's score")
    return {**shown, "note": f"{'，'.join(zh)} / {', '.join(en)}"}


def best_score(rows: list[dict], model: str) -> dict | None:
    """A model's score as its leaderboard row shows it (`pick_score`), or None when it has none."""
    if not any(_base_id(r["model"]) == _base_id(model) for r in rows):
        return None
    chosen = pick_score(rows, model)
    return {"score": chosen["score"], "kind": chosen["kind"], "source": chosen["source"], "note": chosen["note"]}


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
                "n_named_votes": len(all_votes) - anonymous, "bootstrap_rounds": rounds, "evals": evals,
                "score_rule": PUBLISHED_RULE}
    finally:
        store.close()
