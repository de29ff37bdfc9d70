"""Sessions in SQLite: WAL, append-only migrations, nothing completed is lost on a kill."""

import subprocess
import sys

import pytest

from danlu.errors import DanluError
from danlu.sessions import MIGRATIONS, SessionStore


def test_database_uses_wal_and_runs_every_migration_once(tmp_path):
    path = tmp_path / "d.db"
    SessionStore(path).close()
    store = SessionStore(path)  # reopening must not re-run migrations
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS]


def test_messages_round_trip_in_order(tmp_path):
    store = SessionStore(tmp_path / "d.db")
    sid = store.create("m")
    for role, text in [("user", "你好"), ("assistant", "你好！有什么可以帮你？"), ("user", "<|im_end|>")]:
        store.add_message(sid, role, text)
    assert store.messages(sid)[-1] == ("user", "<|im_end|>")
    assert [r for r, _ in store.messages(sid)] == ["user", "assistant", "user"]


def test_named_session_is_found_and_name_moves(tmp_path):
    store = SessionStore(tmp_path / "d.db")
    a, b = store.create("m"), store.create("m")
    store.name(a, "工作")
    store.name(b, "工作")
    assert store.find("工作").id == b
    with pytest.raises(DanluError, match="没有名为"):
        store.find("不存在")


def test_completed_turn_survives_a_killed_process(tmp_path):
    path = tmp_path / "d.db"
    code = (
        "import os, sys; from danlu.sessions import SessionStore; s = SessionStore(__import__('pathlib').Path(sys.argv[1]));"
        "sid = s.create('m'); s.add_message(sid, 'user', '第一轮'); s.add_message(sid, 'assistant', '回答');"
        "print(sid, flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == -9
    sid = proc.stdout.strip()
    assert SessionStore(path).messages(sid) == [("user", "第一轮"), ("assistant", "回答")]


def test_replace_messages_rewrites_history_atomically(tmp_path):
    store = SessionStore(tmp_path / "d.db")
    sid = store.create("m")
    store.add_message(sid, "user", "q")
    store.add_message(sid, "assistant", "bad")
    store.replace_messages(sid, [("user", "q"), ("assistant", "good")])
    assert store.messages(sid) == [("user", "q"), ("assistant", "good")]
