"""The page and its JSON routes: `/` (the page), `/api/models` (every model with its fit verdict, the default
chat model), the saved chat sessions (the CLI's SQLite sessions: list and search, open, save each message
with its metadata, rewrite after a regenerate or an edit, rename, delete) and `/api/leaderboard`. Battles and
votes are in battle_routes.py; downloads go through Ollama's `/api/pull` of the same server.

Chat itself goes through `/v1/chat/completions` like any other client; the page saves each finished turn
here. The database is the one `danlu chat` uses (Settings.db_path), opened once per app; the handlers are
async and SQLite calls are short, so they run on the event loop, one at a time.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request, Response
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
    scheduler = request.app.state.scheduler
    loaded = [key.split(":")[0] for key in scheduler.loaded]
    rows = [c.to_dict() for c in choices]
    known = {row["id"] for row in rows}
    rows += [_served_row(name) for name in scheduler.resolver.aliases if name not in known]
    return {"models": rows, "loaded": loaded, "n_ctx": settings.context, "default_model": settings.base.default_model}


def _served_row(name: str) -> dict:
    """A model this server was started with by path (`danlu serve --model PATH --name NAME`): ready to chat."""
    return {"id": name, "name": name, "kind": "served", "params_b": None, "variant": None, "size_bytes": None,
            "status_code": "ready", "status": "", "verdict": "remote", "verdict_text": "服务器已加载 / served here",
            "predicted_bytes": 0, "speed": "-", "reason": "", "runnable": True, "chat": True, "thinking": "never",
            "context_length": None, "task": "chat"}


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
async def list_sessions(request: Request, q: str = Query("", max_length=200)) -> dict:
    """The newest sessions, or those whose name or messages contain `q`."""
    store = session_store(request)
    found = store.search(q.strip(), SESSIONS_LISTED) if q.strip() else store.list(SESSIONS_LISTED)
    return {"sessions": [_session_row(store, s) for s in found], "query": q.strip()}


@router.post("/api/sessions", status_code=201)
async def create_session(body: NewSession, request: Request) -> dict:
    """A new session (with its first finished turn, if given)."""
    store = session_store(request)
    session_id = store.create(body.model, body.params.given())
    for m in body.messages:
        store.add_message(session_id, m.role, m.content, m.meta_dict())
    return _session_row(store, _find(store, session_id))


@router.get("/api/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict:
    store = session_store(request)
    info = _find(store, session_id)
    return {**_session_row(store, info), "messages": store.entries(info.id)}


@router.post("/api/sessions/{session_id}/messages")
async def add_messages(session_id: str, body: SessionMessages, request: Request) -> dict:
    """Append messages (the user's as it is sent, the reply when it ends), each committed on its own."""
    store = session_store(request)
    info = _find(store, session_id)
    for m in body.messages:
        store.add_message(info.id, m.role, m.content, m.meta_dict())
    return _session_row(store, _find(store, info.id))


@router.put("/api/sessions/{session_id}/messages")
async def replace_messages(session_id: str, body: SessionMessages, request: Request) -> dict:
    """Rewrite the whole history (after a regenerate, an edit or a new system prompt), in one transaction."""
    store = session_store(request)
    info = _find(store, session_id)
    store.replace_messages(info.id, [(m.role, m.content, m.meta_dict()) for m in body.messages])
    return _session_row(store, _find(store, info.id))


@router.patch("/api/sessions/{session_id}")
async def rename_session(session_id: str, body: SessionRename, request: Request) -> dict:
    """Name a session (as /save NAME in `danlu chat`; `danlu chat --session NAME` resumes it)."""
    store = session_store(request)
    info = _find(store, session_id)
    store.name(info.id, body.name)
    return _session_row(store, _find(store, info.id))


@router.delete("/api/sessions/{session_id}", status_code=204)
async def delete_session(session_id: str, request: Request) -> Response:
    """Delete a session and its messages (the page waits a few seconds first, so that its undo can cancel)."""
    store = session_store(request)
    store.delete(_find(store, session_id).id)
    return Response(status_code=204)


# ---------------------------------------------------------------- leaderboard


@router.get("/api/leaderboard")
async def leaderboard(request: Request) -> dict:
    """Arena ratings (anonymous votes), vote counts, online Elo and C-Eval/CMMLU scores."""
    from danlu.arena.leaderboard import leaderboard as build

    return await asyncio.to_thread(build, request.app.state.settings.base.db_path)
