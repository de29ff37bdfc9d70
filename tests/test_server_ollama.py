"""Ollama's API, driven by the official `ollama` Python client against a real danlu server on loopback: list,
show, ps, chat and generate (streamed and not) on gemma-3-270m and qwen2.5-coder-1.5b-instruct, Ollama-style
names, real timing fields, a pull from a local source with progress, delete, and Ollama-shaped errors."""

from __future__ import annotations

import httpx2 as httpx
import ollama
import pytest

from danlu.server import ServerSettings
from test_server_harness import GEMMA, home_with, models_dir_of, running_server

pytestmark = pytest.mark.weights
QWEN = "qwen2.5-coder-1.5b-instruct"
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def url(tmp_path_factory, gemma_path, qwen_path):
    home = home_with(tmp_path_factory.mktemp("ollama-home"), models_dir_of(gemma_path))
    with running_server(ServerSettings(base=home, n_ctx=1024, keep_alive_s=-1)) as base:
        yield base


@pytest.fixture
def client(url) -> ollama.Client:
    return ollama.Client(host=url, timeout=300)


def test_list_shows_pulled_models_with_details(client):
    names = {m.model: m for m in client.list().models}
    gemma = names[f"{GEMMA}:q4_k_m"]
    assert gemma.details.format == "gguf" and gemma.details.quantization_level == "Q4_K_M" and gemma.size > 200 << 20
    assert f"{QWEN}:q4_k_m" in names


def test_show_gives_template_parameters_and_capabilities(client):
    shown = client.show(QWEN)
    assert "<|im_start|>" in shown.template and "tools" in shown.capabilities and "completion" in shown.capabilities
    assert "temperature" in shown.parameters and shown.modelinfo["general.architecture"] == "qwen2"
    assert "tools" not in client.show(GEMMA).capabilities  # a base model without a template


@pytest.mark.parametrize("model", [GEMMA, QWEN])
def test_chat_whole_and_streamed(client, model):
    # Not compared token for token: the second request reuses the first's cached prefix, and llama.cpp's CPU
    # kernels round differently for a one-token batch than for the whole prompt, which flips near-ties.
    messages = [{"role": "user", "content": "用一句话介绍长城"}]
    whole = client.chat(model=model, messages=messages, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.message.content and whole.eval_count >= 1
    assert whole.prompt_eval_duration > 0 and whole.total_duration >= whole.eval_duration > 0
    parts = list(client.chat(model=model, messages=messages, options=GREEDY, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) and parts[-1].eval_count >= 1


def test_generate_streams_and_answers_whole(client):
    whole = client.generate(model=QWEN, prompt="1+1=", options=GREEDY)
    assert whole.response and whole.done and whole.eval_count >= 1
    streamed = list(client.generate(model=GEMMA, prompt="从前有座山，", options=GREEDY, raw=True, stream=True))
    assert streamed[-1].done and "".join(p.response for p in streamed)


def test_ollama_style_names_and_latest_resolve(client):
    reply = client.chat(model="qwen2.5-coder:1.5b", messages=[{"role": "user", "content": "你好"}], options=GREEDY)
    assert reply.message.content
    assert client.chat(model=f"{GEMMA}:latest", messages=[{"role": "user", "content": "你好"}], options=GREEDY).done


def test_ps_lists_loaded_models_the_ollama_way(client):
    client.generate(model=GEMMA, prompt="你好", options=GREEDY)
    loaded = {m.model: m for m in client.ps().models}
    assert f"{GEMMA}:q4_k_m" in loaded and loaded[f"{GEMMA}:q4_k_m"].context_length == 1024


def test_an_empty_generate_only_loads_the_model(url):
    body = httpx.post(url + "/api/generate", json={"model": GEMMA}, timeout=120).json()
    assert body["done"] and body["done_reason"] == "load" and body["response"] == ""


def test_errors_come_in_ollamas_shape(client, url):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=GEMMA, messages=[{"role": "user", "content": "x", "images": ["aGk="]}])
    assert caught.value.status_code == 400 and "images" in caught.value.error
    bad = httpx.post(url + "/api/chat", json={"model": GEMMA, "messages": "hi"}, timeout=10)
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)


def test_pull_from_a_local_source_streams_progress_then_delete(tmp_path, gemma_path):
    with running_server(ServerSettings(base=home_with(tmp_path, None))) as url:
        client = ollama.Client(host=url, timeout=300)
        lines = _pull_lines(url, str(gemma_path))
        assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
        progress = [line for line in lines if "completed" in line]
        assert progress and progress[-1]["completed"] == progress[-1]["total"] == gemma_path.stat().st_size
        assert [m.model for m in client.list().models] == [f"{GEMMA}:q4_k_m"]
        client.delete(GEMMA)
        assert client.list().models == []
        with pytest.raises(ollama.ResponseError) as caught:
            client.delete(GEMMA)
        assert caught.value.status_code == 404


def _pull_lines(url: str, source: str) -> list[dict]:
    """The streamed pull, read line by line (the `source` field is a danlu extra the client cannot send)."""
    import json

    with httpx.stream("POST", url + "/api/pull", json={"model": GEMMA, "source": source}, timeout=300) as response:
        return [json.loads(line) for line in response.iter_lines() if line]


def test_pull_of_an_unknown_model_is_an_error_line_or_404(url):
    response = httpx.post(url + "/api/pull", json={"model": "no-such-model", "stream": False}, timeout=30)
    assert response.status_code == 404 and "no-such-model" in response.json()["error"]
