"""The arena's routes: start a battle, stream a turn to both models at once, vote, read a battle back.

    POST /api/battles                 {"mode": "anonymous"} or {"mode": "side_by_side", "model_a", "model_b"}
    GET  /api/battles/{id}            the battle and both transcripts (names hidden until an anonymous vote)
    POST /api/battles/{id}/turns      {"content": "…"} → one SSE stream carrying both replies (duel.py)
    POST /api/battles/{id}/vote       {"vote": "a" | "b" | "tie" | "both_bad"} → the battle, names revealed

An anonymous battle draws two distinct runnable models (downloaded and fitting) and shows them as
"A" and "B"; nothing the page receives names them until the vote is stored — error messages included.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from danlu.arena.battles import NoPair, model_choices, pick_pair, runnable_names
from danlu.arena.store import SIDES, ArenaStore, Battle, BattleClosed, BattleNotFound, NothingToJudge
from danlu.errors import DanluError
from danlu.server.errors import ApiError
from danlu.server.openai.routes import SSE_HEADERS
from danlu.server.security import require_api_key
from danlu.web.duel import Side, duel_stream, hidden_error, open_both, open_side
from danlu.web.routes import session_store
from danlu.web.schemas import BattleTurn, BattleVote, NewBattle

router = APIRouter(dependencies=[Depends(require_api_key)])
ANONYMOUS_LABELS = {"a": "模型 A / model A", "b": "模型 B / model B"}


def arena_store(request: Request) -> ArenaStore:
    return ArenaStore(session_store(request))


def _battle(store: ArenaStore, battle_id: str, *, open_only: bool = False) -> Battle:
    try:
        return store.open_battle(battle_id) if open_only else store.battle(battle_id)
    except BattleNotFound as exc:
        raise ApiError(404, str(exc), param="battle_id", code="battle_not_found") from None
    except BattleClosed as exc:
        raise ApiError(409, str(exc), param="battle_id", code="battle_closed") from None


def _view(store: ArenaStore, battle: Battle) -> dict:
    return {**battle.public(), "transcripts": {side: store.entries(battle.id, side) for side in SIDES}}


def _masker(battle: Battle):
    """Replaces the models' names with "model A/B" in text an anonymous battle sends before its vote."""
    def hide(text: str) -> str:
        if battle.anonymous and battle.vote is None:
            for side, name in (("a", battle.model_a), ("b", battle.model_b)):
                text = text.replace(name, ANONYMOUS_LABELS[side])
        return text
    return hide


# ---------------------------------------------------------------- starting


async def _pair(request: Request, body: NewBattle) -> tuple[str, str]:
    if body.mode == "anonymous":
        if body.model_a or body.model_b:
            raise ApiError(400, "匿名对战由服务器随机选模型，不要传 model_a/model_b / an anonymous battle draws its "
                           "models at random: omit model_a and model_b (or use mode side_by_side)", param="mode")
        settings = request.app.state.settings
        choices = await asyncio.to_thread(model_choices, settings.base, settings.context, settings.trust_remote_code)
        try:
            return pick_pair(runnable_names(choices), random.SystemRandom())
        except NoPair as exc:
            raise ApiError(409, str(exc), param="mode", code="not_enough_models") from None
    if not body.model_a or not body.model_b or body.model_a == body.model_b:
        raise ApiError(400, "并排对比需要两个不同的模型 model_a 和 model_b / side by side needs two different models, "
                       "model_a and model_b", param="model_a" if not body.model_a else "model_b")
    for name in (body.model_a, body.model_b):
        request.app.state.scheduler.resolve(name)  # an unknown or not downloaded model is a 404 now, not mid-turn
    return body.model_a, body.model_b


@router.post("/api/battles", status_code=201)
async def create_battle(body: NewBattle, request: Request) -> dict:
    model_a, model_b = await _pair(request, body)
    store = arena_store(request)
    battle_id = store.create_battle(model_a, model_b, body.mode == "anonymous", body.params.given())
    return _view(store, store.battle(battle_id))


@router.get("/api/battles/{battle_id}")
async def get_battle(battle_id: str, request: Request) -> dict:
    store = arena_store(request)
    return _view(store, _battle(store, battle_id))


# ---------------------------------------------------------------- a turn and the vote


def _refuse_if_answering(request: Request, battle_id: str) -> set[str]:
    """The ids of battles whose turn is streaming now; a 409 when `battle_id` is one of them."""
    answering: set[str] | None = getattr(request.app.state, "battles_answering", None)
    if answering is None:
        answering = request.app.state.battles_answering = set()
    if battle_id in answering:
        raise ApiError(409, "这场对战还在回答上一句 / this battle is still answering the previous message: wait for it",
                       param="battle_id", code="turn_in_progress")
    return answering


def _claim_turn(request: Request, battle: Battle) -> Callable[[], None]:
    """One turn at a time per battle (two at once would interleave its transcripts); returns the release. While
    an anonymous battle answers, /api/ps shows nothing that tells its two models apart."""
    answering = _refuse_if_answering(request, battle.id)
    answering.add(battle.id)
    masked = request.app.state.scheduler.masked
    names = _mask_names(request, battle) if battle.anonymous and battle.vote is None else []
    for key in names:
        masked[key] = masked.get(key, 0) + 1
    released = []

    def release() -> None:
        if released:
            return
        released.append(True)
        answering.discard(battle.id)
        for key in names:
            masked[key] -= 1
    return release


def _mask_names(request: Request, battle: Battle) -> list[str]:
    """The scheduler keys of the battle's two models."""
    keys = []
    for name in (battle.model_a, battle.model_b):
        try:
            keys.append(request.app.state.scheduler.resolve(name)[0])
        except ApiError:
            pass
    return keys


async def _start_turn(request: Request, store: ArenaStore, battle: Battle, content: str) -> list[Side]:
    """Both sides started on their transcripts plus the new message; errors name no anonymous model."""
    openers = [open_side(request, side, model, [*store.transcript(battle.id, side), {"role": "user", "content": content}],
                         battle.params) for side, model in zip(SIDES, (battle.model_a, battle.model_b))]
    try:
        return await open_both(request, openers)
    except ApiError as exc:
        raise hidden_error(exc, _masker(battle)) from None


@router.post("/api/battles/{battle_id}/turns")
async def battle_turn(battle_id: str, body: BattleTurn, request: Request) -> StreamingResponse:
    """Send the user's message to both models at once; one SSE stream carries both replies."""
    store = arena_store(request)
    battle = _battle(store, battle_id, open_only=True)
    release = _claim_turn(request, battle)
    try:
        sides = await _start_turn(request, store, battle, body.content)
    except BaseException:
        release()
        raise

    def save(finished: list[Side]) -> int:
        store.add_turn(battle.id, body.content, finished[0].text, finished[1].text,
                       (finished[0].meta(), finished[1].meta()))
        return store.battle(battle.id).n_turns

    async def close_all() -> None:  # when the stream never ran (the client left first); a no-op otherwise
        for side in sides:
            side.close()
        release()

    return StreamingResponse(duel_stream(sides, save, _masker(battle), release), media_type="text/event-stream",
                             headers=SSE_HEADERS, background=BackgroundTask(close_all))


@router.post("/api/battles/{battle_id}/vote")
async def vote(battle_id: str, body: BattleVote, request: Request) -> dict:
    """Store the vote with both transcripts; the answer names both models."""
    store = arena_store(request)
    _battle(store, battle_id)
    _refuse_if_answering(request, battle_id)  # judge whole turns only
    try:
        battle = store.record_vote(battle_id, body.vote)
    except BattleClosed as exc:
        raise ApiError(409, str(exc), param="battle_id", code="battle_closed") from None
    except NothingToJudge as exc:
        raise ApiError(409, str(exc), param="vote", code="nothing_to_judge") from None
    except DanluError as exc:
        raise ApiError(400, str(exc), param="vote") from None
    return _view(store, battle)
