"""The page's JSON routes (danlu/web): the page and its files, models with fit verdicts, the CLI's sessions,
battles whose names stay hidden until the vote, votes stored with both transcripts, the leaderboard, the
API key, and bad input answered with a 4xx that says what to change. FastAPI's TestClient for the routes
without weights; a real server on loopback with gemma-3-270m and qwen2.5-coder-1.5b-instruct for battles."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from danlu import catalog
from danlu.arena.store import ArenaStore
from danlu.config import Settings
from danlu.server import ServerSettings
from danlu.server.app import create_app
from danlu.server.errors import ApiError
from danlu.sessions import SessionStore
from danlu.web import STATIC_DIR, VENDOR_DIR
from danlu.web.battle_routes import _masker
from danlu.web.duel import hidden_error
from test_server_harness import home_with, models_dir_of, running_server

GEMMA, QWEN, QWEN05 = "gemma-3-270m", "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"
REAL = {GEMMA, QWEN, QWEN05}  # the arena draws two of the pulled ones (`make models` pulls all three)


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(base=Settings(home=tmp_path, threads=1))


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert message and "Traceback" not in message
    return message


def stored_battle(settings: ServerSettings, anonymous: bool = True, turns: int = 1) -> str:
    """A battle between two named models with `turns` finished turns, written straight to the database."""
    store = ArenaStore.open(settings.base.db_path)
    battle_id = store.create_battle("model-left", "model-right", anonymous)
    for n in range(turns):
        store.add_turn(battle_id, f"问题 {n}", f"左边的回答 {n}", f"右边的回答 {n}")
    store.close()
    return battle_id


# ---------------------------------------------------------------- the page


def test_the_page_and_its_files_are_served_at_the_root(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "丹炉" in page.text
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(path).status_code == 200, path
    assert "javascript" in client.get("/static/js/main.js").headers["content-type"]


def test_nothing_on_the_page_comes_from_the_network():
    """No CDN, no web fonts: every file the page loads is one of ours, so it works offline."""
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://", text), f"{path.name} refers to the network"
            assert "@import" not in text and "url(http" not in text


def test_the_page_and_its_libraries_are_package_data():
    """Every file under static/ and vendor/ is matched by pyproject's package-data, so a wheel has the page."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["danlu.web"]
    web = STATIC_DIR.parent
    packaged = {path for pattern in patterns for path in web.glob(pattern)}
    shipped = {p for folder in (STATIC_DIR, VENDOR_DIR) for p in folder.rglob("*") if p.is_file()}
    assert shipped and shipped <= packaged, sorted(str(p.relative_to(web)) for p in shipped - packaged)


def test_the_vendored_libraries_are_the_npm_releases_named_in_their_manifest():
    """marked, DOMPurify and highlight.js, byte for byte as published (their URLs are comments, XML namespaces
    and console warnings, not loads: the browser test checks that the page requests nothing from elsewhere)."""
    import hashlib

    manifest = json.loads((VENDOR_DIR / "vendor.json").read_text(encoding="utf-8"))
    named = {lib["npm"]: lib for lib in manifest["libraries"]}
    assert set(named) == {"marked", "dompurify", "@highlightjs/cdn-assets"}
    for lib in named.values():
        assert hashlib.sha256((VENDOR_DIR / lib["file"]).read_bytes()).hexdigest() == lib["sha256"], lib["file"]
        assert (VENDOR_DIR / lib["license_file"]).stat().st_size > 500
    files = {p.name for p in VENDOR_DIR.iterdir()}
    assert files == {"vendor.json", *(l["file"] for l in named.values()), *(l["license_file"] for l in named.values())}
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for lib in named.values():
        assert f"{lib['npm']} {lib['version']}" in readme and lib["license"] in readme


def test_with_an_api_key_the_page_loads_but_the_api_needs_the_bearer_key(tmp_path):
    keyed = ServerSettings(base=Settings(home=tmp_path), api_key="s3cret")
    with TestClient(create_app(keyed), base_url="http://127.0.0.1") as client:
        assert client.get("/").status_code == 200 and client.get("/static/js/api.js").status_code == 200
        error_of(client.get("/api/sessions"), 401)
        error_of(client.get("/api/leaderboard", headers={"Authorization": "Bearer wrong"}), 401)
        assert client.get("/api/sessions", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert "Authorization" in (STATIC_DIR / "js/api.js").read_text() and "localStorage" in (STATIC_DIR / "js/api.js").read_text()


# ---------------------------------------------------------------- models


def test_models_lists_every_catalog_model_with_its_fit_verdict(client):
    body = client.get("/api/models").json()
    rows = {m["id"]: m for m in body["models"]}
    assert set(rows) == {spec.id for spec in catalog.all_models()}
    gemma = rows[GEMMA]
    assert gemma["verdict"] in ("gpu", "partial", "cpu") and gemma["verdict_text"] and gemma["predicted_bytes"] > 0
    assert gemma["status_code"] == "not_downloaded" and gemma["runnable"] is False  # this home has no weights
    assert body["n_ctx"] == 4096 and body["loaded"] == []


# ---------------------------------------------------------------- sessions


def test_sessions_are_the_cli_sessions(client, settings):
    first = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"},
             {"role": "assistant", "content": "你好！"}]
    created = client.post("/api/sessions", json={"model": GEMMA, "params": {"temperature": 0.3}, "messages": first})
    assert created.status_code == 201
    session_id = created.json()["id"]
    turn = [{"role": "user", "content": "长城有多长？"}, {"role": "assistant", "content": "两万多公里。"}]
    assert client.post(f"/api/sessions/{session_id}/messages", json={"messages": turn}).json()["n_messages"] == 5
    listed = client.get("/api/sessions").json()["sessions"]
    assert [(s["id"], s["title"], s["model"]) for s in listed] == [(session_id, "你好", GEMMA)]
    assert client.patch(f"/api/sessions/{session_id}", json={"name": "长城"}).json()["name"] == "长城"
    store = SessionStore(settings.base.db_path)  # what `danlu chat --session 长城` reads
    assert store.find("长城").id == session_id
    assert store.messages(session_id) == [(m["role"], m["content"]) for m in first + turn]
    store.close()


def test_regenerate_rewrites_the_history(client):
    session_id = client.post("/api/sessions", json={"model": GEMMA, "messages": [
        {"role": "user", "content": "讲个笑话"}, {"role": "assistant", "content": "旧的回答"}]}).json()["id"]
    meta = {"tokens": 12, "seconds": 1.5, "first_token_s": 0.2, "finish_reason": "stop", "reasoning": "想一想",
            "reasoning_tokens": 3}
    again = [{"role": "user", "content": "讲个笑话", "meta": {}}, {"role": "assistant", "content": "新的回答", "meta": meta}]
    assert client.put(f"/api/sessions/{session_id}/messages", json={"messages": again}).status_code == 200
    assert client.get(f"/api/sessions/{session_id}").json()["messages"] == again  # the reply's line comes back


def test_sessions_are_searched_deleted_and_bad_metadata_is_refused(client):
    made = [client.post("/api/sessions", json={"model": GEMMA, "messages": [{"role": "user", "content": text}]}).json()["id"]
            for text in ("介绍长城", "故宫门票")]
    assert [s["id"] for s in client.get("/api/sessions", params={"q": "故宫"}).json()["sessions"]] == [made[1]]
    assert client.delete(f"/api/sessions/{made[1]}").status_code == 204
    assert [s["id"] for s in client.get("/api/sessions").json()["sessions"]] == [made[0]]
    error_of(client.delete(f"/api/sessions/{made[1]}"), 404)
    bad = {"messages": [{"role": "assistant", "content": "x", "meta": {"tokens": -1}}]}
    assert "tokens" in error_of(client.post(f"/api/sessions/{made[0]}/messages", json=bad), 400)
    odd = {"messages": [{"role": "assistant", "content": "x", "meta": {"script": "<b>"}}]}
    assert "script" in error_of(client.post(f"/api/sessions/{made[0]}/messages", json=odd), 400)


def test_models_name_the_default_chat_model_and_mark_base_models(client):
    body = client.get("/api/models").json()
    rows = {m["id"]: m for m in body["models"]}
    assert body["default_model"] == "qwen2.5-coder-1.5b-instruct" and rows[body["default_model"]]["chat"] is True
    assert rows[GEMMA]["chat"] is False and rows["qwen3-8b"]["thinking"] == "hybrid"
    assert rows[GEMMA]["context_length"] > 0


# ---------------------------------------------------------------- battles and votes


def test_names_stay_hidden_until_the_vote_then_the_vote_keeps_both_transcripts(client, settings):
    battle_id = stored_battle(settings, turns=2)
    before = client.get(f"/api/battles/{battle_id}")
    assert before.json()["model_a"] is None and before.json()["model_b"] is None
    assert "model-left" not in before.text and "model-right" not in before.text
    assert before.json()["transcripts"]["a"][1]["content"] == "左边的回答 0" and before.json()["n_turns"] == 2
    voted = client.post(f"/api/battles/{battle_id}/vote", json={"vote": "b"}).json()
    assert (voted["model_a"], voted["model_b"], voted["vote"]) == ("model-left", "model-right", "b")
    store = ArenaStore.open(settings.base.db_path)
    transcript_a, transcript_b = store.vote_transcripts(battle_id)
    assert [m["content"] for m in transcript_b] == ["问题 0", "右边的回答 0", "问题 1", "右边的回答 1"]
    assert [m["role"] for m in transcript_a] == ["user", "assistant"] * 2
    assert [(v.model_a, v.model_b, v.vote, v.anonymous) for v in store.votes()] == [("model-left", "model-right", "b", True)]
    store.close()
    error_of(client.post(f"/api/battles/{battle_id}/vote", json={"vote": "a"}), 409)  # one vote per battle
    error_of(client.post(f"/api/battles/{battle_id}/turns", json={"content": "再来"}), 409)  # and it is closed


def test_the_leaderboard_rates_anonymous_votes_only(client, settings):
    for vote in ("a", "a", "tie"):
        client.post(f"/api/battles/{stored_battle(settings)}/vote", json={"vote": vote})
    client.post(f"/api/battles/{stored_battle(settings, anonymous=False)}/vote", json={"vote": "b"})
    board = client.get("/api/leaderboard").json()
    assert (board["n_votes"], board["n_named_votes"]) == (3, 1)
    rows = {r["model"]: r for r in board["arena"]}
    assert rows["model-left"]["rating"] > rows["model-right"]["rating"] and rows["model-left"]["rank"] == 1
    assert (rows["model-left"]["wins"], rows["model-left"]["ties"], rows["model-left"]["votes"]) == (2, 1, 3)
    assert rows["model-left"]["lower"] <= rows["model-left"]["rating"] <= rows["model-left"]["upper"]
    assert rows["model-left"]["elo"] > 1000 > rows["model-right"]["elo"]
    assert board["evals"]["ceval"] and board["evals"]["cmmlu"]  # the catalog's published scores


def test_error_messages_of_an_anonymous_battle_do_not_name_its_models():
    from danlu.arena.store import Battle

    battle = Battle("x", True, GEMMA, QWEN, {}, 0.0, 0, None)
    error = ApiError(429, f"模型 {GEMMA}:q4_k_m 排队已满 / the queue for {QWEN} is full", code="queue_full")
    hidden = hidden_error(error, _masker(battle))
    assert GEMMA not in hidden.message and QWEN not in hidden.message
    assert hidden.status == 429 and hidden.code == "queue_full" and "model A" in hidden.message
    named = Battle("x", False, GEMMA, QWEN, {}, 0.0, 0, None)
    assert GEMMA in hidden_error(error, _masker(named)).message


BAD_REQUESTS = [
    ("POST", "/api/battles", {"mode": "anonymous"}, 409, "at least two"),
    ("POST", "/api/battles", {"mode": "duel"}, 400, "mode"),
    ("POST", "/api/battles", {"mode": "anonymous", "model_a": GEMMA}, 400, "omit model_a"),
    ("POST", "/api/battles", {"mode": "side_by_side", "model_a": GEMMA}, 400, "two different models"),
    ("POST", "/api/battles", {"mode": "side_by_side", "model_a": GEMMA, "model_b": GEMMA}, 400, "two different"),
    ("POST", "/api/battles", {"mode": "side_by_side", "model_a": GEMMA, "model_b": "no-such-model"}, 404, "pull"),
    ("POST", "/api/battles", {"params": {"temperature": 5}}, 400, "temperature"),
    ("POST", "/api/battles", {"params": {"max_tokens": 0}}, 400, "max_tokens"),
    ("POST", "/api/battles", {"colour": "red"}, 400, "colour"),
    ("POST", "/api/battles/nope/turns", {"content": "你好"}, 404, "no battle"),
    ("POST", "/api/battles/nope/vote", {"vote": "a"}, 404, "no battle"),
    ("GET", "/api/battles/nope", None, 404, "no battle"),
    ("GET", "/api/sessions/nope", None, 404, "no session"),
    ("POST", "/api/sessions", {"messages": []}, 400, "model"),
    ("POST", "/api/sessions", {"model": GEMMA, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("POST", "/api/sessions/nope/messages", {"messages": [{"role": "user", "content": "x"}]}, 404, "no session"),
    ("PUT", "/api/sessions/nope/messages", {"messages": []}, 400, "messages"),
    ("PATCH", "/api/sessions/nope", {"name": ""}, 400, "name"),
]


@pytest.mark.parametrize("method,path,body,status,says", BAD_REQUESTS, ids=lambda v: str(v)[:40])
def test_bad_input_is_a_4xx_that_says_what_to_change(client, method, path, body, status, says):
    assert says.lower() in error_of(client.request(method, path, json=body), status).lower()


def test_bad_votes_and_turns_on_a_real_battle(client, settings):
    fresh = stored_battle(settings, turns=0)
    assert "nothing to judge" in error_of(client.post(f"/api/battles/{fresh}/vote", json={"vote": "a"}), 409)
    assert "vote" in error_of(client.post(f"/api/battles/{fresh}/vote", json={"vote": "left"}), 400)
    assert "blank" in error_of(client.post(f"/api/battles/{fresh}/turns", json={"content": "  \n"}), 400)
    assert "JSON" in error_of(client.post(f"/api/battles/{fresh}/vote", content=b"{oops",
                                          headers={"content-type": "application/json"}), 400)


# ---------------------------------------------------------------- a real battle over loopback


@pytest.fixture(scope="module")
def served(tmp_path_factory, gemma_path, qwen_path):
    base = home_with(tmp_path_factory.mktemp("web-home"), models_dir_of(gemma_path))
    settings = ServerSettings(base=base, n_ctx=512, parallel=2, keep_alive_s=-1)
    with running_server(settings) as url:
        yield url, settings


def turn(url: str, battle_id: str, content: str) -> tuple[list[dict], str]:
    """One battle turn over HTTP: its SSE payloads and the raw bytes as text."""
    with httpx.stream("POST", f"{url}/api/battles/{battle_id}/turns", json={"content": content}, timeout=300) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    payloads = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]], raw


@pytest.mark.weights
def test_an_anonymous_battle_streams_both_models_hides_their_names_and_is_rated(served):
    url, settings = served
    created = httpx.post(f"{url}/api/battles", json={"mode": "anonymous", "params": {"max_tokens": 6, "temperature": 0}},
                         timeout=60)
    assert created.status_code == 201 and not any(name in created.text for name in REAL)
    battle_id = created.json()["id"]
    for n, question in enumerate(["用一句话介绍长城。", "再说说故宫。"], start=1):
        events, raw = turn(url, battle_id, question)
        assert not any(name in raw for name in REAL)  # nothing in the stream names them
        assert {e["side"] for e in events if e.get("delta")} == {"a", "b"}
        assert {e["side"] for e in events if e.get("finish_reason")} == {"a", "b"}
        assert events[-1] == {"saved": True, "n_turns": n}
    shown = httpx.get(f"{url}/api/battles/{battle_id}", timeout=10)
    assert shown.json()["model_a"] is None and not any(name in shown.text for name in REAL)
    assert [m["role"] for m in shown.json()["transcripts"]["b"]] == ["user", "assistant"] * 2
    voted = httpx.post(f"{url}/api/battles/{battle_id}/vote", json={"vote": "tie"}, timeout=10).json()
    pair = {voted["model_a"], voted["model_b"]}
    assert len(pair) == 2 and pair <= REAL
    store = ArenaStore.open(settings.base.db_path)
    assert [m["content"] for m in store.vote_transcripts(battle_id)[0]][::2] == ["用一句话介绍长城。", "再说说故宫。"]
    store.close()
    board = httpx.get(f"{url}/api/leaderboard", timeout=30).json()
    assert {r["model"] for r in board["arena"]} == pair
    assert all(r["rating"] == pytest.approx(1000.0) for r in board["arena"])  # a tie: equal ratings


@pytest.mark.weights
def test_a_turn_decodes_on_both_models_at_once(served):
    url, _ = served

    def side_by_side(max_tokens: int) -> str:
        return httpx.post(f"{url}/api/battles", json={"mode": "side_by_side", "model_a": GEMMA, "model_b": QWEN, "params": {
            "max_tokens": max_tokens, "temperature": 0}}, timeout=60).json()["id"]

    turn(url, side_by_side(1), "你好")  # both loaded first: a model loading is not a model decoding
    events, _ = turn(url, side_by_side(64), "写一首关于秋天的诗。")
    sides = "".join(e["side"] for e in events if "side" in e)
    assert sides.count("a") > 1 and sides.count("b") > 1
    assert re.search("a+b+a", sides) or re.search("b+a+b", sides), f"the two streams did not interleave: {sides}"
    assert events[-1]["saved"] is True


@pytest.mark.weights
def test_one_turn_at_a_time_and_leaving_mid_turn_frees_both_models_and_saves_nothing(served):
    url, _ = served
    battle_id = httpx.post(f"{url}/api/battles", json={"mode": "side_by_side", "model_a": GEMMA, "model_b": QWEN,
                                                       "params": {"max_tokens": 400}}, timeout=60).json()["id"]
    with httpx.Client(timeout=120) as streaming, httpx.Client(timeout=30) as other:  # two connections
        with streaming.stream("POST", f"{url}/api/battles/{battle_id}/turns", json={"content": "讲一个很长的故事。"}) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the response, and the server sees us leave
            assert r.status_code == 200 and next(lines).startswith("data: ")  # both are generating
            second = other.post(f"{url}/api/battles/{battle_id}/turns", json={"content": "还有吗？"})
            assert "still answering" in error_of(second, 409)  # one turn at a time
            vote = other.post(f"{url}/api/battles/{battle_id}/vote", json={"vote": "a"})
            assert "still answering" in error_of(vote, 409)  # and whole turns are judged; now hang up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = [m for m in httpx.get(f"{url}/api/ps", timeout=10).json()["models"] if m["danlu"]["in_flight"]]
        if not busy:
            break
        time.sleep(0.2)
    assert not busy, f"still generating after the client left: {busy}"
    assert httpx.get(f"{url}/api/battles/{battle_id}", timeout=10).json()["n_turns"] == 0


def test_the_leaderboard_has_one_score_per_model_and_benchmark_a_measured_one_first(client, settings):
    board = client.get("/api/leaderboard").json()
    for suite in ("ceval", "cmmlu"):
        models = [r["model"] for r in board["evals"][suite]]
        assert len(models) == len(set(models)), suite
    qwen14 = next(r for r in board["evals"]["ceval"] if r["model"] == "qwen-14b-chat")
    assert qwen14["variant"] == "chat" and [o["variant"] for o in qwen14["others"]] == ["base"]  # the rule: same variant
    assert " / " in qwen14["note"] and "基础版" in qwen14["others"][0]["note"]  # both languages
    assert "对话版或基础版" in board["score_rule"]

    store = SessionStore(settings.base.db_path)  # a local `danlu eval` run of the same model
    with store.db:
        store.db.execute("INSERT INTO eval_results (run_key, model, suite, split, protocol, shots, n_questions, average,"
                         " micro_average, results, data, created) VALUES ('k', 'qwen-14b-chat:q4_k_m', 'ceval', 'val',"
                         " 'ao', 5, 260, 61.5, 60.0, '{}', 'data', 0)")
    store.close()
    board = client.get("/api/leaderboard").json()
    qwen14 = next(r for r in board["evals"]["ceval"] if r["model"] == "qwen-14b-chat")
    assert (qwen14["kind"], qwen14["score"], len(qwen14["others"])) == ("measured", 61.5, 2)


def test_the_pages_context_length_bounds_a_chat_request(tmp_path):
    """The page's 上下文长度 travels as `num_ctx` (Ollama's name): a prompt longer than it is a 400 that says so."""
    from scripted import ScriptedEngine, scripted_server, template

    with scripted_server(tmp_path, {"scripted": ScriptedEngine(template("qwen3.jinja"))}) as url:
        ask = {"model": "scripted", "messages": [{"role": "user", "content": "长" * 300}], "max_tokens": 8}
        assert httpx.post(url + "/v1/chat/completions", json=ask, timeout=60).status_code == 200
        refused = httpx.post(url + "/v1/chat/completions", json={**ask, "num_ctx": 256}, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
