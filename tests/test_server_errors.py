"""Bad input and access rules over real HTTP, no weights needed: every malformed request is a 4xx with an
OpenAI error body whose message names what to change; never a 500, never a hang."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from danlu.server import ServerSettings
from test_server_harness import home_with, running_server

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "你好"}]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    settings = ServerSettings(base=home_with(tmp_path_factory.mktemp("empty-home"), None), max_body_bytes=1 << 20)
    with running_server(settings) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory):
    settings = ServerSettings(base=home_with(tmp_path_factory.mktemp("keyed-home"), None), api_key="s3cret")
    with running_server(settings) as base:
        yield base


def post(url: str, path: str, body: bytes | str | dict, **headers) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else None
    return httpx.post(url + path, content=content, json=None if content is not None else body, timeout=10,
                      headers={"content-type": "application/json", **headers})


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    return error


@pytest.mark.parametrize("body, says", [
    ("{not json", "not valid JSON"),
    ("", "body"),
    ('["a list"]', "body"),
    ({"model": "m"}, "`messages`"),
    ({"model": "m", "messages": []}, "at least 1"),
    ({"model": "m", "messages": "hi"}, "`messages`"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "image_url"),
    ({"model": "m", "messages": USER, "temperature": -0.5}, "`temperature`"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "`temperature`"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "`max_tokens`"),
    ({"model": "m", "messages": USER, "max_tokens": 1.5}, "`max_tokens`"),
    ({"model": "m", "messages": USER, "n": 3}, "`n`"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "`stream`"),
    ({"model": "m", "messages": USER, "stop": ["a"] * 17}, "stop"),
    ({"model": "m", "messages": USER, "tools": [{"type": "function"}]}, "tools"),
])
def test_malformed_chat_requests_are_400_naming_the_field(url, body, says):
    error = error_of(post(url, CHAT, body), 400)
    assert says in error["message"]


@pytest.mark.parametrize("model", ["no-such-model", "../../etc/passwd", "/etc/passwd", "gemma-3-270m:../x", "a" * 200])
def test_unknown_or_path_like_models_are_404(url, model):
    error = error_of(post(url, CHAT, {"model": model, "messages": USER}), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"


def test_a_catalog_model_not_pulled_says_how_to_pull(url):
    assert "danlu pull gemma-3-270m" in error_of(post(url, CHAT, {"model": "gemma-3-270m", "messages": USER}), 404)["message"]


def test_remote_code_models_are_refused_without_the_flag(url):
    error = error_of(post(url, CHAT, {"model": "chatglm3-6b", "messages": USER}), 403)
    assert "--trust-remote-code" in error["message"]


def test_completion_field_rules(url):
    assert "`prompt`" in error_of(post(url, "/v1/completions", {"model": "m"}), 400)["message"]
    assert "`logprobs`" in error_of(post(url, "/v1/completions", {"model": "m", "prompt": "x", "logprobs": 9}), 400)["message"]


def test_too_large_a_body_is_413(url):
    big = '{"model": "m", "messages": [{"role": "user", "content": "' + "x" * (2 << 20) + '"}]}'
    assert error_of(post(url, CHAT, big), 413)


def test_unknown_route_and_method_get_openai_errors(url):
    error_of(httpx.get(url + "/v1/nothing", timeout=10), 404)
    error_of(httpx.get(url + CHAT, timeout=10), 405)


def test_health_models_and_ps_answer_without_models(url):
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(url + "/v1/models", timeout=10).json()["object"] == "list"
    assert httpx.get(url + "/api/ps", timeout=10).json()["models"] == []


def test_api_key_is_required_on_v1_api_and_the_docs(keyed_url):
    for path in ("/v1/models", "/api/sessions", "/openapi.json", "/docs"):
        error = error_of(httpx.get(keyed_url + path, timeout=10), 401)
        assert "Authorization: Bearer" in error["message"]
    ollama = httpx.get(keyed_url + "/api/ps", timeout=10)  # Ollama's route: Ollama's error shape
    assert ollama.status_code == 401 and "Authorization: Bearer" in ollama.json()["error"]
    assert httpx.get(keyed_url + "/openapi.json", headers={"Authorization": "Bearer s3cret"}, timeout=10).json()["info"]
    error_of(httpx.get(keyed_url + "/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=10), 401)
    ok = httpx.get(keyed_url + "/v1/models", headers={"Authorization": "Bearer s3cret"}, timeout=10)
    assert ok.status_code == 200
    assert httpx.get(keyed_url + "/health", timeout=10).status_code == 200  # for load balancers


def test_the_openai_client_sees_auth_errors(keyed_url):
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed_url + "/v1", api_key="wrong", max_retries=0).models.list()
    models = openai.OpenAI(base_url=keyed_url + "/v1", api_key="s3cret", max_retries=0).models.list()
    assert models.object == "list"
