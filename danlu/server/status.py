"""`GET /health`: liveness for load balancers and client apps, open without the API key.

It says only that the server answers: which models are loaded is in /api/ps, behind the key, so nothing
reachable without it (or during an anonymous battle) tells anyone which model is which.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}
