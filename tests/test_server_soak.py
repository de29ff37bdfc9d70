"""A bounded soak: 64 concurrent clients on loopback for two minutes (DANLU_SOAK_S to change it) against a real
server with gemma-3-270m, mixing streaming and whole chat completions, clients that hang up mid-stream, bad
requests and session writes. It ends with every request answered (200, a 4xx or 429), /health answering
throughout, and every session message that was acknowledged still in the database."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import httpx2 as httpx
import pytest

from danlu.server import ServerSettings
from danlu.sessions import SessionStore
from test_server_harness import GEMMA, home_with, models_dir_of, running_server

pytestmark = [pytest.mark.weights, pytest.mark.slow]
CLIENTS = 64
DURATION_S = float(os.environ.get("DANLU_SOAK_S", "120"))
CHAT = {"model": GEMMA, "messages": [{"role": "user", "content": "讲一个字"}], "max_tokens": 6, "temperature": 0.7}


async def stream(client: httpx.AsyncClient, hang_up: bool) -> int:
    async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        async for line in response.aiter_lines():
            if hang_up or line == "data: [DONE]":
                break
        return response.status_code


async def whole(client: httpx.AsyncClient) -> int:
    return (await client.post("/v1/chat/completions", json=CHAT)).status_code


async def bad(client: httpx.AsyncClient, rng: random.Random) -> int:
    bodies = ['{"model": ', {"model": GEMMA, "messages": []}, {"model": GEMMA, "messages": CHAT["messages"], "n": 2},
              {"model": "no-such-model", "messages": CHAT["messages"]}]
    body = rng.choice(bodies)
    if isinstance(body, str):
        return (await client.post("/v1/chat/completions", content=body,
                                  headers={"content-type": "application/json"})).status_code
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def write(client: httpx.AsyncClient, session_id: str, n: int, acknowledged: list) -> int:
    body = {"messages": [{"role": "user", "content": f"消息 {n}"}]}
    response = await client.post(f"/api/sessions/{session_id}/messages", json=body)
    if response.status_code == 200:
        acknowledged.append(session_id)
    return response.status_code


async def one_client(url: str, number: int, session_id: str, end: float, statuses: Counter, acknowledged: list):
    rng = random.Random(number)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        n = 0
        while time.monotonic() < end:
            n += 1
            kind = rng.choice(["stream", "stream", "whole", "hang_up", "bad", "write"])
            try:
                if kind in ("stream", "hang_up"):
                    status = await stream(client, kind == "hang_up")
                elif kind == "whole":
                    status = await whole(client)
                elif kind == "bad":
                    status = await bad(client, rng)
                else:
                    status = await write(client, session_id, n, acknowledged)
            except httpx.HTTPError as exc:
                status = f"{kind}: {type(exc).__name__}"
            statuses[status] += 1


async def watch_health(url: str, end: float, answers: list) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < end:
            try:
                answers.append((await client.get("/health")).status_code)
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)
            await asyncio.sleep(0.5)


def test_64_clients_for_two_minutes_are_all_answered(tmp_path, gemma_path):
    base = home_with(tmp_path, models_dir_of(gemma_path))
    settings = ServerSettings(base=base, n_ctx=512, keep_alive_s=-1, models=[GEMMA])
    with running_server(settings) as url:
        sessions = [httpx.post(url + "/api/sessions", json={"model": GEMMA}, timeout=30).json()["id"]
                    for _ in range(8)]
        statuses, acknowledged, health = Counter(), [], []

        async def run() -> None:
            end = time.monotonic() + DURATION_S
            await asyncio.gather(watch_health(url, end, health),
                                 *(one_client(url, i, sessions[i % 8], end, statuses, acknowledged)
                                   for i in range(CLIENTS)))

        asyncio.run(run())
    answered = {s for s in statuses if isinstance(s, int) and (s == 200 or 400 <= s < 500)}
    assert set(statuses) == answered, statuses  # nothing else: no 5xx, no dropped connection, no timeout
    assert statuses[200] > CLIENTS and any(400 <= s < 500 for s in statuses)
    assert health and all(h == 200 for h in health), Counter(health)
    store = SessionStore(base.db_path)
    for session_id in sessions:
        assert len(store.messages(session_id)) == acknowledged.count(session_id)
