"""The browser UI at `/` of `danlu serve`: chat, the side-by-side arena with votes, and the leaderboard.

Static vanilla HTML/CSS/JS under `static/` (no build step, nothing fetched from the network), served by the
same FastAPI app as the OpenAI API. Three npm libraries, byte for byte as published, live apart under `vendor/`
(served at /vendor/): marked (Markdown), DOMPurify (sanitizing what marked makes of a model's reply) and
highlight.js (code); `vendor/vendor.json` names each with its version, license and sha256. The page chats through `/v1/chat/completions` (streaming), like any other
client, and uses the JSON routes in `routes.py` (models with their fit verdict, saved sessions, leaderboard)
and `battle_routes.py` (battles, their two concurrent streams, votes). `install(app)` wires both in.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = Path(__file__).parent / "vendor"


def install(app) -> None:
    """Add the page, its static files and its /api routes to a danlu FastAPI app."""
    from fastapi.staticfiles import StaticFiles

    from danlu.web.battle_routes import router as battle_router
    from danlu.web.routes import router

    app.include_router(router)
    app.include_router(battle_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR_DIR), name="vendor")
