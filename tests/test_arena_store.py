"""Battles and votes in SQLite (danlu/arena/store.py, migration m004_arena), the anonymous pair, the runnable
models, and `danlu leaderboard [--json]`."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest
from typer.testing import CliRunner

from danlu.arena.battles import NoPair, model_choices, pick_pair, runnable_names
from danlu.arena.store import ArenaStore, BattleClosed, BattleNotFound, NothingToJudge
from danlu.cli import app
from danlu.config import Settings, get_settings
from danlu.errors import DanluError
from danlu.sessions import MIGRATIONS, SessionStore


def test_m004_arena_applies_to_a_database_from_before_the_arena(tmp_path):
    names = [fn.__name__ for fn in MIGRATIONS]
    assert names[:4] == ["m001_sessions", "m002_session_state", "m003_eval_results", "m004_arena"]  # append-only
    db = sqlite3.connect(tmp_path / "old.db")  # a database from before the arena: three migrations ran
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for fn in MIGRATIONS[:3]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (fn.__name__,))
    db.commit()
    db.close()
    store = SessionStore(tmp_path / "old.db")
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"battles", "battle_messages", "votes", "sessions"} <= tables
    store.close()


def test_a_battle_keeps_each_turn_and_one_vote(tmp_path):
    store = ArenaStore.open(tmp_path / "danlu.db")
    battle_id = store.create_battle("x", "y", anonymous=True, params={"max_tokens": 8})
    with pytest.raises(NothingToJudge):
        store.record_vote(battle_id, "a")
    store.add_turn(battle_id, "你好", "甲", "乙", ({"tokens": 2, "reasoning": "想", "reasoning_tokens": 1}, None))
    assert store.transcript(battle_id, "b") == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "乙"}]
    assert store.transcript(battle_id, "a")[1] == {"role": "assistant", "content": "甲"}  # what the model sees again
    assert store.entries(battle_id, "a")[1]["meta"] == {"tokens": 2, "reasoning": "想", "reasoning_tokens": 1}
    assert store.battle(battle_id).public()["model_a"] is None
    with pytest.raises(DanluError):
        store.record_vote(battle_id, "left")
    battle = store.record_vote(battle_id, "both_bad")
    assert (battle.vote, battle.public()["model_a"], battle.params) == ("both_bad", "x", {"max_tokens": 8})
    with pytest.raises(BattleClosed):
        store.record_vote(battle_id, "a")
    with pytest.raises(BattleNotFound):
        store.battle("nope")
    assert store.votes()[0].outcome().score_a == 0.5
    store.close()


def test_an_anonymous_pair_is_two_distinct_models_in_random_order():
    pairs = {pick_pair(["x", "y", "z"], random.Random(seed)) for seed in range(40)}
    assert all(a != b for a, b in pairs) and ("x", "y") in pairs and ("y", "x") in pairs
    with pytest.raises(NoPair):
        pick_pair(["x", "x"])


def test_only_downloaded_models_that_fit_are_runnable(tmp_path):
    assert runnable_names(model_choices(Settings(home=tmp_path))) == []  # an empty store


@pytest.mark.weights
def test_the_pulled_models_are_runnable(home_with_models):
    choices = model_choices(Settings(home=home_with_models), n_ctx=512)
    assert {"gemma-3-270m", "qwen2.5-coder-1.5b-instruct"} <= set(runnable_names(choices))
    assert choices[0].runnable and not choices[-1].runnable  # runnable first


def votes_in_home(outcomes: list[tuple[str, str, str]], anonymous: bool = True) -> None:
    store = ArenaStore.open(get_settings().db_path)
    for model_a, model_b, vote in outcomes:
        battle_id = store.create_battle(model_a, model_b, anonymous)
        store.add_turn(battle_id, "q", "a", "b")
        store.record_vote(battle_id, vote)
    store.close()


def test_leaderboard_command_prints_json_with_ratings_and_eval_scores():
    votes_in_home([("alpha", "beta", "a"), ("alpha", "beta", "tie"), ("beta", "alpha", "b")])
    votes_in_home([("beta", "alpha", "a")], anonymous=False)
    result = CliRunner().invoke(app, ["leaderboard", "--json"])
    assert result.exit_code == 0, result.output
    board = json.loads(result.output)
    assert [r["model"] for r in board["arena"]] == ["alpha", "beta"]
    assert (board["n_votes"], board["n_named_votes"], board["bootstrap_rounds"]) == (3, 1, 100)
    assert board["arena"][0]["wins"] == 2 and board["arena"][0]["ties"] == 1
    assert {"ceval", "cmmlu"} == set(board["evals"]) and board["evals"]["ceval"][0]["kind"] in ("measured", "reference")


def test_leaderboard_command_prints_a_table_in_chinese_or_english():
    votes_in_home([("alpha", "beta", "a")])
    chinese = CliRunner().invoke(app, ["leaderboard"])
    assert chinese.exit_code == 0 and "竞技场排行榜" in chinese.output and "alpha" in chinese.output
    english = CliRunner().invoke(app, ["--lang", "en", "leaderboard"])
    assert english.exit_code == 0 and "Arena leaderboard" in english.output and "C-Eval" in english.output


def test_leaderboard_command_with_no_votes_says_how_to_get_some():
    result = CliRunner().invoke(app, ["leaderboard"])
    assert result.exit_code == 0 and "还没有匿名投票" in result.output


def test_a_fine_tuned_adapter_is_offered_under_its_own_id_when_its_base_is_runnable(tmp_path):
    """An adapter of a pulled base joins the picker (and anonymous battles) as BASE+NAME; one of a missing base does not."""
    import json

    from danlu.arena.battles import adapter_choices, catalog_choice
    from danlu import catalog

    settings = Settings(home=tmp_path)
    for name, base in (("shop", "gemma-3-270m"), ("other", "qwen-14b")):
        folder = settings.adapters_dir / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}), encoding="utf-8")
        (folder / "danlu.json").write_text(json.dumps({"base": base}), encoding="utf-8")
    base_row = catalog_choice(catalog.get("gemma-3-270m"), None, settings, False)
    rows = adapter_choices(settings, [base_row])
    assert [(r.id, r.kind, r.runnable) for r in rows] == [("gemma-3-270m+shop", "adapter", base_row.runnable)]
