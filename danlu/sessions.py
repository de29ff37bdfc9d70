"""SQLite persistence (WAL) for chat sessions, messages, arena votes and evaluation results.

Each finished message is committed on its own, so a killed process loses no completed turn.
Migrations are named, append-only functions (as in simonw/llm's migrations.py): a database
records which ones ran, and a new one is added at the end, never edited.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from danlu.errors import DanluError
from danlu.private import private_file, tighten

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
_APPLIED = "_migrations"  # the table that records which migrations ran


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_sessions(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT UNIQUE, model TEXT NOT NULL,"
        " params TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL"
        " REFERENCES sessions(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,"
        " created REAL NOT NULL)"
    )
    db.execute("CREATE INDEX messages_session ON messages(session_id, id)")


@migration
def m002_session_state(db: sqlite3.Connection) -> None:
    """Recurrent state (RWKV) or other backend state saved with a session."""
    db.execute("ALTER TABLE sessions ADD COLUMN state BLOB")


def _meta_json(meta: dict | None) -> str | None:
    return json.dumps(meta, ensure_ascii=False) if meta else None


@dataclass(frozen=True)
class SessionInfo:
    id: str
    name: str | None
    model: str
    updated: float
    n_messages: int


class SessionStore:
    """Sessions and messages in one SQLite file; safe to open from several processes."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)  # chats are private; SQLite gives the -wal and -shm files the database's mode
        for sidecar in ("-wal", "-shm"):
            tighten(path.with_name(path.name + sidecar))  # left readable by an older danlu
        self.db = sqlite3.connect(path, timeout=10, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        """Each pending migration runs with its `_migrations` row in one `BEGIN IMMEDIATE` transaction.

        Python's sqlite3 runs DDL outside any transaction unless told otherwise, so a crash (or a second
        process) between a CREATE TABLE and its row used to leave a database every later open refused.
        In autocommit mode the transaction is ours: the write lock is taken first, the applied set is read
        again under it, and the DDL and the row commit together or not at all.
        """
        level, self.db.isolation_level = self.db.isolation_level, None
        try:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {_APPLIED} (name TEXT PRIMARY KEY, applied REAL)")
            for fn in MIGRATIONS:
                if fn.__name__ not in self._applied():  # a cheap read first: a migrated database takes no lock
                    self._apply(fn)
        finally:
            self.db.isolation_level = level

    def _applied(self) -> set[str]:
        return {row[0] for row in self.db.execute(f"SELECT name FROM {_APPLIED}")}

    def _apply(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if fn.__name__ not in self._applied():  # another process may have applied it while we waited
                fn(self.db)
                self.db.execute(f"INSERT INTO {_APPLIED} VALUES (?, ?)", (fn.__name__, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def create(self, model: str, params: dict | None = None) -> str:
        sid = uuid.uuid4().hex[:12]
        now = time.time()
        with self.db:
            self.db.execute(
                "INSERT INTO sessions (id, model, params, created, updated) VALUES (?, ?, ?, ?, ?)",
                (sid, model, json.dumps(params or {}), now, now),
            )
        return sid

    def add_message(self, session_id: str, role: str, content: str, meta: dict | None = None) -> None:
        """Append one message; `meta` is what the page shows beside it (tokens, speed, thinking, interrupted)."""
        now = time.time()
        with self.db:
            self.db.execute(
                "INSERT INTO messages (session_id, role, content, created, meta) VALUES (?, ?, ?, ?, ?)",
                (session_id, role, content, now, _meta_json(meta)),
            )
            self.db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def messages(self, session_id: str) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT role, content FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        return [(r, c) for r, c in rows]

    def entries(self, session_id: str) -> list[dict]:
        """Every message with its metadata: {"role", "content", "meta"} (meta {} when none was stored)."""
        rows = self.db.execute("SELECT role, content, meta FROM messages WHERE session_id = ? ORDER BY id", (session_id,))
        return [{"role": r, "content": c, "meta": json.loads(m) if m else {}} for r, c, m in rows]

    def replace_messages(self, session_id: str, messages: list[tuple]) -> None:
        """Rewrite a session's history (after /retry, truncation or /reset) in one transaction; each message is
        (role, content) or (role, content, meta)."""
        now = time.time()
        with self.db:
            self.db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            self.db.executemany(
                "INSERT INTO messages (session_id, role, content, created, meta) VALUES (?, ?, ?, ?, ?)",
                [(session_id, m[0], m[1], now, _meta_json(m[2] if len(m) > 2 else None)) for m in messages],
            )
            self.db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def delete(self, session_id: str) -> None:
        """Remove a session and its messages."""
        with self.db:
            self.db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def search(self, query: str, limit: int = 50) -> list[SessionInfo]:
        """Sessions whose name or any message contains `query` (case-insensitive for ASCII), newest first."""
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        ids = self.db.execute(
            "SELECT s.id FROM sessions s WHERE s.name LIKE ?1 ESCAPE '\\' OR s.id IN (SELECT session_id FROM messages"
            " WHERE role != 'system' AND content LIKE ?1 ESCAPE '\\') ORDER BY s.updated DESC LIMIT ?2", (pattern, limit))
        return [self._info(r[0]) for r in ids.fetchall()]

    def name(self, session_id: str, name: str) -> None:
        """Give a session a name; a name already taken by another session moves to this one."""
        with self.db:
            self.db.execute("UPDATE sessions SET name = NULL WHERE name = ?", (name,))
            self.db.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session_id))

    def find(self, name_or_id: str) -> SessionInfo:
        row = self.db.execute(
            "SELECT id FROM sessions WHERE name = ? OR id = ?", (name_or_id, name_or_id)
        ).fetchone()
        if row is None:
            raise DanluError(f"没有名为 {name_or_id!r} 的会话 / no session named {name_or_id!r}: see `danlu sessions`")
        return self._info(row[0])

    def _info(self, sid: str) -> SessionInfo:
        row = self.db.execute(
            "SELECT s.id, s.name, s.model, s.updated, COUNT(m.id) FROM sessions s "
            "LEFT JOIN messages m ON m.session_id = s.id WHERE s.id = ? GROUP BY s.id", (sid,)
        ).fetchone()
        return SessionInfo(*row)

    def list(self, limit: int = 50) -> list[SessionInfo]:
        ids = self.db.execute("SELECT id FROM sessions ORDER BY updated DESC LIMIT ?", (limit,))
        return [self._info(r[0]) for r in ids.fetchall()]

    def save_state(self, session_id: str, state: bytes | None) -> None:
        with self.db:
            self.db.execute("UPDATE sessions SET state = ? WHERE id = ?", (state, session_id))

    def load_state(self, session_id: str) -> bytes | None:
        row = self.db.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.db.close()


@migration
def m003_eval_results(db: sqlite3.Connection) -> None:
    """One row per evaluation run (danlu eval), read by the leaderboard beside the catalog's reference scores."""
    db.execute(
        "CREATE TABLE eval_results (run_key TEXT PRIMARY KEY, model TEXT NOT NULL, suite TEXT NOT NULL,"
        " split TEXT NOT NULL, protocol TEXT NOT NULL, shots INTEGER NOT NULL, n_questions INTEGER NOT NULL,"
        " average REAL NOT NULL, micro_average REAL NOT NULL, results TEXT NOT NULL, data TEXT NOT NULL,"
        " created REAL NOT NULL)"
    )


@migration
def m004_arena(db: sqlite3.Connection) -> None:
    """Arena battles (two models, the same user turns), both transcripts, and one vote per battle (danlu/arena)."""
    db.execute(
        "CREATE TABLE battles (id TEXT PRIMARY KEY, anonymous INTEGER NOT NULL, model_a TEXT NOT NULL,"
        " model_b TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL)"
    )
    db.execute(
        "CREATE TABLE battle_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, battle_id TEXT NOT NULL"
        " REFERENCES battles(id) ON DELETE CASCADE, side TEXT NOT NULL CHECK (side IN ('a', 'b')),"
        " role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL)"
    )
    db.execute("CREATE INDEX battle_messages_battle ON battle_messages(battle_id, side, id)")
    db.execute(
        "CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, battle_id TEXT NOT NULL UNIQUE"
        " REFERENCES battles(id), model_a TEXT NOT NULL, model_b TEXT NOT NULL,"
        " vote TEXT NOT NULL CHECK (vote IN ('a', 'b', 'tie', 'both_bad')), anonymous INTEGER NOT NULL,"
        " transcript_a TEXT NOT NULL, transcript_b TEXT NOT NULL, created REAL NOT NULL)"
    )


@migration
def m005_eval_thinking(db: sqlite3.Connection) -> None:
    """The thinking mode of a `gen` run on a hybrid model ("on" / "off"; NULL: the template's default)."""
    db.execute("ALTER TABLE eval_results ADD COLUMN thinking TEXT")


@migration
def m006_message_meta(db: sqlite3.Connection) -> None:
    """What the page shows beside a message (tokens, speed, the model's thinking, an interrupted reply), as JSON."""
    db.execute("ALTER TABLE messages ADD COLUMN meta TEXT")


@migration
def m007_battle_message_meta(db: sqlite3.Connection) -> None:
    """The same for the arena's replies: thinking text and tokens, reply tokens, first-token wait, speed."""
    db.execute("ALTER TABLE battle_messages ADD COLUMN meta TEXT")
