"""Sessions in SQLite: WAL, append-only migrations, nothing completed is lost on a kill."""

import os
import sqlite3
import stat
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


# ---------------------------------------------------------------- migrations are atomic

def test_a_crash_between_a_migrations_ddl_and_its_record_leaves_a_database_the_next_open_migrates(tmp_path, monkeypatch):
    from danlu import sessions

    def m999_crashes_after_its_ddl(db):
        db.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")
        raise RuntimeError("killed between the DDL and the _migrations row")

    monkeypatch.setattr(sessions, "MIGRATIONS", [*MIGRATIONS, m999_crashes_after_its_ddl])
    path = tmp_path / "d.db"
    with pytest.raises(RuntimeError, match="killed"):
        SessionStore(path)

    def m999_crashes_after_its_ddl(db):  # noqa: F811 - the same migration, on a run that does not crash
        db.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(sessions, "MIGRATIONS", [*MIGRATIONS, m999_crashes_after_its_ddl])
    store = SessionStore(path)
    names = [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS] + ["m999_crashes_after_its_ddl"]
    store.create("m")  # and the store works as before (the connection's own transactions are back)
    assert len(store.list()) == 1


def test_a_process_killed_inside_a_migration_leaves_a_database_the_next_open_migrates(tmp_path):
    path = tmp_path / "d.db"
    code = (
        "import os, sys, pathlib; from danlu import sessions\n"
        "first = sessions.MIGRATIONS[0]\n"
        "def killed(db):\n"
        "    first(db); os.kill(os.getpid(), 9)\n"
        "killed.__name__ = first.__name__\n"
        "sessions.MIGRATIONS[0] = killed\n"
        "sessions.SessionStore(pathlib.Path(sys.argv[1]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    store = SessionStore(path)
    assert [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")] == [m.__name__ for m in MIGRATIONS]


SLOW_OPEN = (  # open a database when told to, with every migration slowed down (the race made wide)
    "import sys, time, pathlib; from danlu import sessions\n"
    "def slow(fn):\n"
    "    def run(db):\n"
    "        fn(db); time.sleep(0.2)\n"
    "    run.__name__ = fn.__name__\n"
    "    return run\n"
    "sessions.MIGRATIONS[:] = [slow(f) for f in sessions.MIGRATIONS]\n"
    "go = pathlib.Path(sys.argv[2])\n"
    "while not go.exists(): time.sleep(0.005)\n"
    "store = sessions.SessionStore(pathlib.Path(sys.argv[1])); store.create('m'); print('ok')\n"
)


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path):
    """The CLI and the server opening a fresh danlu.db together: each migration is applied once, by one of them."""
    path, go = tmp_path / "d.db", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_OPEN, str(path), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    store = SessionStore(path)
    assert [r[0] for r in store.db.execute("SELECT name FROM _migrations ORDER BY rowid")] == [m.__name__ for m in MIGRATIONS]
    assert len(store.list()) == 3


# ---------------------------------------------------------------- private files

@pytest.fixture
def loose_umask():
    """The common umask (022): without care, new files would be readable by every local user."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only(tmp_path, loose_umask):
    path = tmp_path / "danlu.db"
    store = SessionStore(path)
    store.add_message(store.create("m"), "user", "私密的话")
    for file in (path, tmp_path / "danlu.db-wal", tmp_path / "danlu.db-shm"):
        assert file.exists() and mode(file) == 0o600, file.name
    store.close()


def test_a_database_an_older_danlu_left_readable_is_tightened_on_open(tmp_path, loose_umask):
    path = tmp_path / "danlu.db"
    SessionStore(path).close()
    os.chmod(path, 0o644)
    SessionStore(path).close()
    assert mode(path) == 0o600


def test_a_database_from_before_message_meta_keeps_its_messages_and_gains_meta(tmp_path):
    db = sqlite3.connect(tmp_path / "old.db")  # a database from before m005: four migrations ran, one message
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for fn in MIGRATIONS[:4]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (fn.__name__,))
    db.execute("INSERT INTO sessions VALUES ('s1', NULL, 'm', '{}', 0, 0, NULL)")
    db.execute("INSERT INTO messages (session_id, role, content, created) VALUES ('s1', 'user', '旧消息', 0)")
    db.commit()
    db.close()
    store = SessionStore(tmp_path / "old.db")
    assert store.entries("s1") == [{"role": "user", "content": "旧消息", "meta": {}}]
    store.add_message("s1", "assistant", "答", {"tokens": 3, "interrupted": True})
    assert store.entries("s1")[1] == {"role": "assistant", "content": "答", "meta": {"tokens": 3, "interrupted": True}}
    assert store.messages("s1") == [("user", "旧消息"), ("assistant", "答")]  # what the model sees: no meta
    store.close()


def test_search_finds_sessions_by_name_or_content_and_delete_removes_one(tmp_path):
    store = SessionStore(tmp_path / "danlu.db")
    great_wall, palace = store.create("m"), store.create("m")
    store.add_message(great_wall, "system", "长城专家")
    store.add_message(great_wall, "user", "介绍长城")
    store.add_message(palace, "user", "故宫 100% 好看_吗")
    store.name(palace, "旅行")
    assert [s.id for s in store.search("长城")] == [great_wall]
    assert [s.id for s in store.search("旅行")] == [palace]
    assert [s.id for s in store.search("100%")] == [palace] and store.search("0_%") == []  # wildcards are text
    assert store.search("专家") == []  # the system prompt is not what a person searches for
    store.replace_messages(palace, [("user", "新的", {"tokens": 1}), ("assistant", "好")])
    assert store.entries(palace)[0]["meta"] == {"tokens": 1}
    store.delete(great_wall)
    assert [s.id for s in store.list()] == [palace] and store.entries(great_wall) == []
    store.close()
