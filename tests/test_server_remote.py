"""The "remote" backend against a second `danlu serve` on loopback: one danlu server (gemma-3-270m) is
registered with `danlu remote add` in another DANLU_HOME, then used through the loader (as chat, arena and
eval use models) and served again by a second danlu server to the openai client."""

from __future__ import annotations

import openai
import pytest

from danlu import loader, remotes
from danlu.backends.base import GenerationParams, complete
from danlu.config import Settings
from danlu.server import ServerSettings
from test_server_harness import GEMMA, home_with, models_dir_of, running_server

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, gemma_path):
    base = home_with(tmp_path_factory.mktemp("upstream-home"), models_dir_of(gemma_path))
    with running_server(ServerSettings(base=base, n_ctx=512, api_key="up-key")) as url:
        yield url


@pytest.fixture
def registered(upstream, danlu_home):
    """The upstream server registered as `far-gemma` in this test's (empty) DANLU_HOME."""
    remotes.add("far-gemma", upstream + "/v1", model=GEMMA, api_key="up-key")
    return "far-gemma"


def test_a_remote_loads_and_chats_like_a_local_model(registered):
    loaded = loader.load(registered)
    assert loaded.resolved.backend == "remote" and loaded.engine.capabilities.exact_tokens is False
    chunks = list(loaded.conversation(GenerationParams(max_tokens=6, temperature=0)).send("你好"))
    assert "".join(c.text for c in chunks)
    timings = chunks[-1].timings
    assert chunks[-1].finish_reason == "length" and timings.completion_tokens == 6  # the remote's real count
    text, last = complete(loaded.engine, loaded.engine.tokenize("The capital of France is"),
                          GenerationParams(max_tokens=4, temperature=0))
    assert text and last.timings.prompt_tokens < len("The capital of France is")  # real tokens, not characters
    loaded.engine.close()


def test_a_remote_error_is_a_danlu_error(upstream, danlu_home):
    from danlu.errors import DanluError

    remotes.add("wrong-key", upstream + "/v1", model=GEMMA, api_key="nope")
    engine = loader.load("wrong-key").engine
    with pytest.raises(DanluError, match="401"):
        complete(engine, engine.tokenize("hi"), GenerationParams(max_tokens=2))


def test_a_second_danlu_serves_the_remote_to_the_openai_client(registered, danlu_home):
    settings = ServerSettings(base=Settings(home=danlu_home, threads=1))  # where the remote is registered
    with running_server(settings) as front:
        client = openai.OpenAI(base_url=front + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert registered in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model=registered, messages=[{"role": "user", "content": "你好"}],
                                               max_tokens=5, temperature=0)
        assert reply.choices[0].message.content and reply.usage.completion_tokens == 5
        stream = client.chat.completions.create(model=registered, messages=[{"role": "user", "content": "你好"}],
                                                max_tokens=5, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="logprobs"):
            client.chat.completions.create(model=registered, messages=[{"role": "user", "content": "x"}], logprobs=True)
