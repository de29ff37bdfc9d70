"""Battles, their two transcripts and the votes, in the sessions database (tables from `m004_arena`).

A battle is two models (a: left, b: right) answering the same user turns. Each finished turn is written at
once (the user's message and both replies, one transaction), like chat sessions. A battle takes one vote
('a', 'b', 'tie', 'both_bad'); the vote row keeps both transcripts as they were, so it stands on its own,
and the battle is closed after it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from danlu.arena.ratings import SCORES, Outcome, outcome_of
from danlu.errors import DanluError
from danlu.sessions import SessionStore

VOTES = tuple(SCORES)
SIDES = ("a", "b")


class BattleNotFound(DanluError):
    """No battle with that id (404)."""


class BattleClosed(DanluError):
    """The battle already has its vote: no more turns, no second vote (409)."""


class NothingToJudge(DanluError):
    """A vote before any finished turn (409)."""


@dataclass(frozen=True)
class Battle:
    id: str
    anonymous: bool
    model_a: str
    model_b: str
    params: dict
    created: float
    n_turns: int
    vote: str | None

    def public(self) -> dict:
        """What a client may see: an anonymous battle's names stay hidden until it has its vote."""
        hidden = self.anonymous and self.vote is None
        return {"id": self.id, "anonymous": self.anonymous, "model_a": None if hidden else self.model_a,
                "model_b": None if hidden else self.model_b, "params": self.params, "n_turns": self.n_turns,
                "vote": self.vote, "created": self.created}


@dataclass(frozen=True)
class Vote:
    battle_id: str
    model_a: str
    model_b: str
    vote: str
    anonymous: bool
    created: float

    def outcome(self) -> Outcome:
        return outcome_of(self.model_a, self.model_b, self.vote)


class ArenaStore:
    """Battles and votes over a SessionStore's connection (which has run the migrations)."""

    def __init__(self, sessions: SessionStore):
        self.db = sessions.db

    @classmethod
    def open(cls, db_path: Path) -> "ArenaStore":
        return cls(SessionStore(db_path))

    def close(self) -> None:
        self.db.close()

    def create_battle(self, model_a: str, model_b: str, anonymous: bool, params: dict | None = None) -> str:
        battle_id, now = uuid.uuid4().hex[:12], time.time()
        with self.db:
            self.db.execute("INSERT INTO battles VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (battle_id, int(anonymous), model_a, model_b, json.dumps(params or {}), now, now))
        return battle_id

    def battle(self, battle_id: str) -> Battle:
        row = self.db.execute(
            "SELECT b.id, b.anonymous, b.model_a, b.model_b, b.params, b.created,"
            " (SELECT COUNT(*) FROM battle_messages m WHERE m.battle_id = b.id AND m.side = 'a' AND m.role = 'user'),"
            " v.vote FROM battles b LEFT JOIN votes v ON v.battle_id = b.id WHERE b.id = ?", (battle_id,)).fetchone()
        if row is None:
            raise BattleNotFound(f"没有这场对战 / no battle {battle_id!r}: start one with POST /api/battles")
        bid, anonymous, model_a, model_b, params, created, n_turns, vote = row
        return Battle(bid, bool(anonymous), model_a, model_b, json.loads(params), created, n_turns, vote)

    def open_battle(self, battle_id: str) -> Battle:
        """The battle, refusing one that already has its vote."""
        battle = self.battle(battle_id)
        if battle.vote is not None:
            raise BattleClosed(f"这场对战已经投过票 / battle {battle_id} already has its vote: start a new battle")
        return battle

    def transcript(self, battle_id: str, side: str) -> list[dict]:
        rows = self.db.execute("SELECT role, content FROM battle_messages WHERE battle_id = ? AND side = ? ORDER BY id",
                               (battle_id, side))
        return [{"role": role, "content": content} for role, content in rows]

    def entries(self, battle_id: str, side: str) -> list[dict]:
        """One side's messages with what the page shows beside them (thinking, tokens): {"role", "content", "meta"}."""
        rows = self.db.execute("SELECT role, content, meta FROM battle_messages WHERE battle_id = ? AND side = ?"
                               " ORDER BY id", (battle_id, side))
        return [{"role": r, "content": c, "meta": json.loads(m) if m else {}} for r, c, m in rows]

    def add_turn(self, battle_id: str, user: str, reply_a: str, reply_b: str,
                 metas: tuple[dict | None, dict | None] = (None, None)) -> None:
        """One finished turn: the user's message and each side's reply (with its meta: thinking, tokens),
        together or not at all."""
        now = time.time()
        rows = [(battle_id, side, role, text, now, json.dumps(meta, ensure_ascii=False) if meta and role == "assistant"
                 else None) for side, reply, meta in zip(SIDES, (reply_a, reply_b), metas)
                for role, text in (("user", user), ("assistant", reply))]
        with self.db:
            self.db.executemany("INSERT INTO battle_messages (battle_id, side, role, content, created, meta)"
                                " VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("UPDATE battles SET updated = ? WHERE id = ?", (now, battle_id))

    def record_vote(self, battle_id: str, vote: str) -> Battle:
        """Store the vote with both transcripts; the battle is closed afterwards."""
        if vote not in VOTES:
            raise DanluError(f"投票必须是 {' / '.join(VOTES)} 之一 / `vote` must be one of {', '.join(VOTES)}, got {vote!r}")
        battle = self.open_battle(battle_id)
        if battle.n_turns == 0:
            raise NothingToJudge("还没有完成的回合，无从评判 / nothing to judge yet: finish at least one turn first")
        transcripts = [json.dumps(self.transcript(battle_id, side), ensure_ascii=False) for side in SIDES]
        with self.db:
            self.db.execute("INSERT INTO votes (battle_id, model_a, model_b, vote, anonymous, transcript_a,"
                            " transcript_b, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (battle_id, battle.model_a, battle.model_b, vote, int(battle.anonymous), *transcripts,
                             time.time()))
        return self.battle(battle_id)

    def votes(self, anonymous_only: bool = True) -> list[Vote]:
        """Votes in the order they were cast (online Elo depends on it)."""
        where = " WHERE anonymous = 1" if anonymous_only else ""
        rows = self.db.execute(f"SELECT battle_id, model_a, model_b, vote, anonymous, created FROM votes{where} ORDER BY id")
        return [Vote(bid, a, b, v, bool(anon), created) for bid, a, b, v, anon, created in rows]

    def vote_transcripts(self, battle_id: str) -> tuple[list[dict], list[dict]]:
        """Both transcripts as stored with the vote."""
        row = self.db.execute("SELECT transcript_a, transcript_b FROM votes WHERE battle_id = ?", (battle_id,)).fetchone()
        if row is None:
            raise BattleNotFound(f"对战 {battle_id} 没有投票 / battle {battle_id} has no vote")
        return json.loads(row[0]), json.loads(row[1])
