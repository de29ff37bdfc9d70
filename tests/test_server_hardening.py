"""What the security and reliability review found in the server, each pinned by a test: DNS rebinding (the Host
check), lone surrogates, unbounded stop strings, what /health and /api/ps tell during an anonymous battle, CORS
only for named origins, a thread-runner model released only once its worker stopped, and a clean shutdown
with a stream still open."""

from __future__ import annotations

import logging
import threading
import time

import httpx2 as httpx
import pytest

from danlu.backends.base import Chunk, GenerationParams
from danlu.errors import DanluError
from danlu.server import ServerSettings
from danlu.server.runners import ThreadRunner
from danlu.server.security import allowed_host, check_cors, host_name
from scripted import ScriptedEngine, scripted_server, template
from test_server_harness import home_with, running_server

USER = [{"role": "user", "content": "你好"}]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(ServerSettings(base=home_with(tmp_path_factory.mktemp("home"), None))) as base:
        yield base


def with_host(url: str, host: str, path: str = "/api/sessions", **headers) -> httpx.Response:
    return httpx.get(url + path, headers={"Host": host, **headers}, timeout=10)


# ---------------------------------------------------------------- DNS rebinding


def test_a_rebound_host_name_is_refused_with_421(url):
    port = url.rsplit(":", 1)[1]
    response = with_host(url, f"rebind.example:{port}")
    assert response.status_code == 421 and "DNS rebinding" in response.json()["error"]["message"]
    assert with_host(url, f"rebind.example:{port}", "/api/tags").json()["error"].startswith("不接受 Host")  # Ollama's shape


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.2",
                                  "app.localhost:{port}"])
def test_loopback_host_names_are_served(url, host):
    port = url.rsplit(":", 1)[1]
    assert with_host(url, host.format(port=port)).status_code == 200


def test_with_an_api_key_any_host_may_ask(tmp_path):
    settings = ServerSettings(base=home_with(tmp_path, None), api_key="k")
    with running_server(settings) as url:
        assert with_host(url, "danlu.lan:8000", Authorization="Bearer k").status_code == 200


def test_host_names_are_read_as_browsers_send_them():
    assert host_name("[::1]:8000") == "::1" and host_name("Example.COM.:80") == "example.com"
    assert allowed_host("::1", "127.0.0.1") and not allowed_host("evil.example", "127.0.0.1")
    assert allowed_host("192.168.1.5", "0.0.0.0") and not allowed_host("evil.example", "0.0.0.0")
    assert allowed_host("192.168.1.5", "192.168.1.5")


# ---------------------------------------------------------------- bad text and unbounded input


def test_a_lone_surrogate_is_a_400_not_a_500(url):
    body = '{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'
    response = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"},
                          timeout=10)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]
    ollama = httpx.post(url + "/api/chat", content=body, headers={"content-type": "application/json"}, timeout=10)
    assert ollama.status_code == 400 and "surrogate" in ollama.json()["error"]


@pytest.mark.parametrize("stop", [["x" * 300], ["y" * 250] * 9])
def test_long_stop_strings_are_refused_before_any_model_runs(url, stop):
    body = {"model": "gemma-3-270m", "messages": USER, "stop": stop}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400 and "stop" in response.json()["error"]["message"]
    ollama = httpx.post(url + "/api/chat", json={"model": "gemma-3-270m", "messages": USER, "options": {"stop": stop}},
                        timeout=10)
    assert ollama.status_code == 400


# ---------------------------------------------------------------- what an arena voter could read


def test_health_lists_no_models(tmp_path):
    engine = ScriptedEngine(template("qwen3.jinja"))
    with scripted_server(tmp_path, {"secret-model": engine}) as url:
        body = httpx.get(url + "/health", timeout=10).json()
        assert body == {"status": "ok"}


def test_ps_hides_which_model_of_a_battle_is_busy(tmp_path):
    from danlu.server.ollama.models import ps_row

    engine = ScriptedEngine(template("qwen3.jinja"))
    with scripted_server(tmp_path, {"a-model": engine}) as url:
        rows = httpx.get(url + "/api/ps", timeout=10).json()["models"]
        assert "in_flight" in rows[0]["danlu"]
    from danlu.server.app import create_app
    from scripted import serve

    app = create_app(ServerSettings(base=home_with(tmp_path / "x", None)))
    serve(app, "a-model", engine)
    scheduler = app.state.scheduler
    scheduler.masked["a-model"] = 1
    row = ps_row(scheduler, scheduler.loaded["a-model"])
    assert not {"in_flight", "active", "waiting", "expires_in_s"} & set(row["danlu"])


# ---------------------------------------------------------------- CORS


def test_cors_answers_named_origins_only(tmp_path):
    settings = ServerSettings(base=home_with(tmp_path, None), cors_origins=["http://app.example"])
    with running_server(settings) as url:
        asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        ok = httpx.options(url + "/v1/chat/completions", headers={"Origin": "http://app.example", **asked}, timeout=10)
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"
        bad = httpx.options(url + "/v1/chat/completions", headers={"Origin": "http://evil.example", **asked}, timeout=10)
        assert "access-control-allow-origin" not in bad.headers
        plain = httpx.get(url + "/api/tags", headers={"Origin": "http://evil.example"}, timeout=10)
        assert "access-control-allow-origin" not in plain.headers
        allowed = httpx.get(url + "/api/tags", headers={"Origin": "http://app.example"}, timeout=10)
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        port = url.rsplit(":", 1)[1]
        rebound = httpx.get(url + "/api/tags", headers={"Origin": "http://app.example", "Host": f"x.example:{port}"},
                            timeout=10)
        assert rebound.status_code == 421  # the host check holds with CORS on


def test_cors_for_every_origin_needs_an_api_key():
    with pytest.raises(DanluError, match="api-key"):
        check_cors(["*"], None)
    check_cors(["*"], "key")


# ---------------------------------------------------------------- a model is released once its worker stops


class SlowEngine:
    """Streams a chunk, then waits to be let go; records whether it was closed mid-generation."""

    spec, n_ctx = None, 64

    def __init__(self):
        self.release, self.generating, self.closed_while_generating = threading.Event(), False, False

    def generate(self, ids, params):
        self.generating = True
        try:
            yield Chunk("一", [1])
            self.release.wait(10)
            yield Chunk("二", [2])
        finally:
            self.generating = False

    def close(self):
        self.closed_while_generating = self.generating


def test_a_cancelled_request_is_done_only_when_its_worker_stops():
    engine = SlowEngine()
    runner = ThreadRunner(engine)
    events, done = [], threading.Event()
    handle = runner.submit([1], GenerationParams(), events.append)
    while not events:
        time.sleep(0.01)
    handle.cancel()
    handle.when_done(done.set)
    assert not done.wait(0.3)  # still inside generate: the model must not be released yet
    engine.release.set()
    assert done.wait(5)
    runner.close()
    assert not engine.closed_while_generating


def test_closing_a_runner_waits_for_its_worker_before_freeing_the_engine():
    engine = SlowEngine()
    runner = ThreadRunner(engine)
    events = []
    runner.submit([1], GenerationParams(), events.append)
    queued = []
    runner.submit([1], GenerationParams(), queued.append)  # waits behind the first
    while not events:
        time.sleep(0.01)
    threading.Timer(0.3, engine.release.set).start()
    runner.close()
    assert not engine.closed_while_generating
    assert queued and queued[-1].error is not None and "unloaded" in str(queued[-1].error)


def test_shutdown_with_a_stream_open_logs_no_traceback(tmp_path, caplog):
    engine = ScriptedEngine(template("qwen3.jinja"), [["字"] * 400], delay_s=0.05)
    caplog.set_level(logging.DEBUG)
    with scripted_server(tmp_path, {"m": engine}) as url:
        stream = httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                              json={"model": "m", "messages": USER, "stream": True, "max_tokens": 400})
        response = stream.__enter__()
        next(response.iter_lines())
    stream.__exit__(None, None, None)
    assert "CancelledError" not in caplog.text and "Traceback" not in caplog.text


def test_the_default_queue_holds_64_waiting_requests():
    assert ServerSettings().max_queue >= 64
