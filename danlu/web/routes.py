"""The page and its JSON routes: `/` (the page), `/api/models` (every model with its fit verdict), the saved
chat sessions (the CLI's SQLite sessions: list, open, save each finished turn, rewrite after a regenerate,
rename) and `/api/leaderboard`. Battles and votes are in battle_routes.py.

Chat itself goes through `/v1/chat/completions` like any other client; the page saves each finished turn
here. The database is the one `danlu chat` uses (Settings.db_path), opened once per app; the handlers are
async and SQLite calls are short, so they run on the event loop, one at a time.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from danlu.errors import DanluError
from danlu.server.errors import ApiError
from danlu.server.security import require_api_key
from danlu.sessions import SessionInfo, SessionStore
from danlu.web import STATIC_DIR
from danlu.web.schemas import NewSession, SessionMessages, SessionRename

router = APIRouter(dependencies=[Depends(require_api_key)])
TITLE_CHARS = 40
SESSIONS_LISTED = 100


def session_store(request: Request) -> SessionStore:
    """The app's connection to the sessions database, opened on first use."""
    state = request.app.state
    if getattr(state, "web_sessions", None) is None:
        state.web_sessions = SessionStore(state.settings.base.db_path)
    return state.web_sessions


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------- models


@router.get("/api/models")
async def models(request: Request) -> dict:
    """Catalog models (default variant) with availability and the fit verdict at this server's context, and remotes."""
    from danlu.arena.battles import model_choices

    settings = request.app.state.settings
    choices = await asyncio.to_thread(model_choices, settings.base, settings.context, settings.trust_remote_code)
    loaded = [key.split(":")[0] for key in request.app.state.scheduler.loaded]
    return {"models": [c.to_dict() for c in choices], "loaded": loaded, "n_ctx": settings.context}


# ---------------------------------------------------------------- sessions


def _find(store: SessionStore, session_id: str) -> SessionInfo:
    try:
        return store.find(session_id)
    except DanluError as exc:
        raise ApiError(404, str(exc), param="session_id", code="session_not_found") from None


def _title(store: SessionStore, info: SessionInfo) -> str:
    first = next((c for r, c in store.messages(info.id) if r == "user"), "")
    return info.name or (first[:TITLE_CHARS] + ("…" if len(first) > TITLE_CHARS else ""))


def _session_row(store: SessionStore, info: SessionInfo) -> dict:
    return {"id": info.id, "name": info.name, "model": info.model, "updated": info.updated,
            "n_messages": info.n_messages, "title": _title(store, info)}


@router.get("/api/sessions")
async def list_sessions(request: Request) -> dict:
    store = session_store(request)
    return {"sessions": [_session_row(store, s) for s in store.list(SESSIONS_LISTED)]}


@router.post("/api/sessions", status_code=201)
async def create_session(body: NewSession, request: Request) -> dict:
    """A new session (with its first finished turn, if given)."""
    store = session_store(request)
    session_id = store.create(body.model, body.params.given())
    for m in body.messages:
        store.add_message(session_id, m.role, m.content)
    return _session_row(store, _find(store, session_id))


@router.get("/api/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict:
    store = session_store(request)
    info = _find(store, session_id)
    messages = [{"role": r, "content": c} for r, c in store.messages(info.id)]
    return {**_session_row(store, info), "messages": messages}


@router.post("/api/sessions/{session_id}/messages")
async def add_messages(session_id: str, body: SessionMessages, request: Request) -> dict:
    """Append a finished turn (the user's message and the reply), each message committed on its own."""
    store = session_store(request)
    info = _find(store, session_id)
    for m in body.messages:
        store.add_message(info.id, m.role, m.content)
    return _session_row(store, _find(store, info.id))


@router.put("/api/sessions/{session_id}/messages")
async def replace_messages(session_id: str, body: SessionMessages, request: Request) -> dict:
    """Rewrite the whole history (after a regenerate or a new system prompt), in one transaction."""
    store = session_store(request)
    info = _find(store, session_id)
    store.replace_messages(info.id, [(m.role, m.content) for m in body.messages])
    return _session_row(store, _find(store, info.id))


@router.patch("/api/sessions/{session_id}")
async def rename_session(session_id: str, body: SessionRename, request: Request) -> dict:
    """Name a session (as /save NAME in `danlu chat`; `danlu chat --session NAME` resumes it)."""
    store = session_store(request)
    info = _find(store, session_id)
    store.name(info.id, body.name)
    return _session_row(store, _find(store, info.id))


# ---------------------------------------------------------------- leaderboard


@router.get("/api/leaderboard")
async def leaderboard(request: Request) -> dict:
    """Arena ratings (anonymous votes), vote counts, online Elo and C-Eval/CMMLU scores."""
    from danlu.arena.leaderboard import leaderboard as build

    return await asyncio.to_thread(build, request.app.state.settings.base.db_path)
