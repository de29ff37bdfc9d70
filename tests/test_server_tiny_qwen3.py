"""The tiny random Qwen3, converted to GGUF by llama.cpp's converter, served by danlu's batched engine: the thinking
switch reaches the GGUF's own template (the prompt grows by exactly the empty think block), the reply is split by
the "think" parser, and tools render through the template."""

from __future__ import annotations

import openai
import pytest

from danlu.config import Settings
from danlu.server import ServerSettings
from test_server_harness import running_server

EMPTY_THINK = "<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_qwen3_gguf):
    settings = ServerSettings(base=Settings(home=tmp_path_factory.mktemp("qwen3-home"), threads=1), n_ctx=512,
                              models=[str(tiny_qwen3_gguf)], keep_alive_s=-1)
    with running_server(settings) as url:
        yield url, tiny_qwen3_gguf.stem


def ask(url: str, model: str, **kwargs):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "你好"}], max_tokens=4,
                                          temperature=0, **kwargs)


def test_the_thinking_switch_changes_the_prompt_as_the_template_says(served, tiny_qwen3_gguf):
    from danlu.backends.llamacpp import load
    from danlu.backends.base import LoadPlan

    url, model = served
    on, off = ask(url, model), ask(url, model, reasoning_effort="none")
    engine = load(None, None, LoadPlan(tiny_qwen3_gguf, n_ctx=64, n_threads=1))
    try:
        extra = len(engine.tokenize(EMPTY_THINK, special=True))
    finally:
        engine.close()
    assert off.usage.prompt_tokens - on.usage.prompt_tokens == extra
    assert on.choices[0].finish_reason in ("stop", "length")


def test_tools_render_through_the_ggufs_template(served):
    url, model = served
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    without, with_tools = ask(url, model), ask(url, model, tools=[tool])
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 20  # the "# Tools" system turn
