"""Scheduling on gemma-3-270m: keep-alive unload, LRU eviction, the memory budget, the prefix cache over
interleaved conversations, and the batched engine's admission when KV cells run short."""

from __future__ import annotations

import threading
import time

import httpx2 as httpx
import openai
import pytest

from danlu.backends.base import GenerationParams, LoadPlan
from danlu.server import ServerSettings
from test_server_harness import GEMMA, home_with, models_dir_of, running_server

pytestmark = pytest.mark.weights


def loaded_names(url: str) -> list[str]:
    return [m["name"] for m in httpx.get(url + "/api/ps", timeout=10).json()["models"]]


def ask(url: str, model: str, content: str = "你好", **kwargs):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          **{"max_tokens": 2, "temperature": 0, **kwargs})


def test_least_recently_used_model_is_evicted_and_idle_ones_unload(tmp_path, gemma_path):
    base = home_with(tmp_path, models_dir_of(gemma_path))
    settings = ServerSettings(base=base, models=[str(gemma_path)], max_loaded=1, keep_alive_s=2, n_ctx=256)
    with running_server(settings) as url:
        alias = gemma_path.stem
        assert loaded_names(url) == [alias]  # --model loads at start, served under the file's name
        ask(url, GEMMA)
        assert loaded_names(url) == [f"{GEMMA}:q4_k_m"]  # room for one: the idle alias made way
        ask(url, alias)
        assert loaded_names(url) == [alias]
        deadline = time.monotonic() + 10
        while loaded_names(url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert loaded_names(url) == []  # unloaded after keep-alive


def test_a_model_over_the_memory_budget_is_refused_with_the_numbers(tmp_path, gemma_path):
    settings = ServerSettings(base=home_with(tmp_path, models_dir_of(gemma_path)), memory_budget_bytes=64 << 20)
    with running_server(settings) as url:
        with pytest.raises(openai.InternalServerError) as caught:
            ask(url, GEMMA)
        assert caught.value.status_code == 503 and "MiB" in caught.value.body["message"]


def test_four_interleaved_conversations_each_keep_their_cache(tmp_path, gemma_path):
    settings = ServerSettings(base=home_with(tmp_path, models_dir_of(gemma_path)), n_ctx=1024, keep_alive_s=-1)
    with running_server(settings) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        talks = [[{"role": "user", "content": f"第{i}个话题：" + "讲讲这个城市的历史。" * (i + 2)}] for i in range(4)]
        previous = [0] * 4
        for turn in range(3):
            for i, messages in enumerate(talks):
                reply = client.chat.completions.create(model=GEMMA, messages=messages, max_tokens=6, temperature=0)
                cached = reply.usage.prompt_tokens_details.cached_tokens
                if turn:
                    assert cached >= previous[i] - 2, (turn, i, cached, previous[i])  # its own last turn is cached
                previous[i] = reply.usage.prompt_tokens
                messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                             {"role": "user", "content": "继续。"}]


def test_requests_beyond_the_kv_cells_wait_for_room_instead_of_failing(gemma_path):
    from danlu.backends import llamacpp_batched

    extra = {"parallel": 4, "slots": 4, "kv_unified": True, "kv_cells": 256}  # one pooled buffer that runs short
    plan = LoadPlan(gemma_path, n_ctx=128, n_threads=1, extra=extra)
    engine = llamacpp_batched.load(None, None, plan)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        ids = engine.tokenize(f"<bos>Story {i}: once upon a time", special=True)
        chunks = list(engine.generate(ids, GenerationParams(max_tokens=100, temperature=0)))
        results[i] = chunks[-1].finish_reason

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        assert engine.load_info()["active"] <= 2  # each may need ~110 of the 256 cells: two at a time
        for t in threads:
            t.join(timeout=120)
        assert sorted(results) == [0, 1, 2, 3] and set(results.values()) <= {"stop", "length"}
    finally:
        engine.close()


def test_cancelling_a_waiting_request_never_runs_it(gemma_path):
    from danlu.backends import llamacpp_batched
    from danlu.backends.requests import Event

    engine = llamacpp_batched.load(None, None, LoadPlan(gemma_path, n_ctx=128, n_threads=1, extra={"parallel": 1}))
    events: list[Event] = []
    try:
        ids = engine.tokenize("<bos>1, 2, 3,", special=True)
        busy = engine.submit(ids, GenerationParams(max_tokens=60, temperature=0), lambda e: None)
        waiting = engine.submit(ids, GenerationParams(max_tokens=60, temperature=0), events.append)
        waiting.cancel()
        busy.cancel()
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events[-1].chunk.finish_reason == "cancelled" and events[-1].chunk.timings.completion_tokens == 0
    finally:
        engine.close()


def test_a_failing_decode_step_ends_its_requests_with_an_error_and_the_engine_goes_on(gemma_path, monkeypatch):
    from danlu.backends import llamacpp_batched
    from danlu.backends.requests import EngineFault

    engine = llamacpp_batched.load(None, None, LoadPlan(gemma_path, n_ctx=128, n_threads=1, extra={"parallel": 2}))
    ids = engine.tokenize("<bos>1, 2, 3,", special=True)
    real_step = engine._step

    def broken_once():
        monkeypatch.setattr(engine, "_step", real_step)
        raise RuntimeError("simulated llama.cpp failure")

    try:
        monkeypatch.setattr(engine, "_step", broken_once)
        with pytest.raises(EngineFault, match="simulated"):
            list(engine.generate(ids, GenerationParams(max_tokens=4, temperature=0)))
        chunks = list(engine.generate(ids, GenerationParams(max_tokens=4, temperature=0)))
        assert chunks[-1].finish_reason == "length"
    finally:
        engine.close()


def collect(engine, ids, params) -> list:
    """Submit and wait for the request's last event."""
    events: list = []
    engine.submit(ids, params, events.append)
    deadline = time.monotonic() + 60
    while not (events and (events[-1].error or events[-1].chunk.finish_reason)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return events


def test_one_requests_failure_ends_that_request_only(gemma_path, monkeypatch):
    """A request whose sampler fails mid-reply, and one whose start fails after it left the queue, each get
    their own error; the requests decoding beside them finish normally."""
    from danlu.backends import llamacpp_batched
    from danlu.backends.requests import EngineFault

    engine = llamacpp_batched.load(None, None, LoadPlan(gemma_path, n_ctx=256, n_threads=1, extra={"parallel": 3}))
    ids = engine.tokenize("<bos>1, 2, 3,", special=True)
    real_sample, real_make = llamacpp_batched.sample, llamacpp_batched.make_sampler

    def sample(sampler, ctx, index):
        if getattr(sampler, "doomed", False):
            raise RuntimeError("a broken sampler")
        return real_sample(sampler, ctx, index)

    def make_sampler(params, options, n_vocab):
        if params.seed == 14:
            raise RuntimeError("cannot start")
        chain = real_make(params, options, n_vocab)
        chain.doomed = params.seed == 13
        return chain

    monkeypatch.setattr(llamacpp_batched, "sample", sample)
    monkeypatch.setattr(llamacpp_batched, "make_sampler", make_sampler)
    results: dict[int, list] = {}
    try:
        threads = [threading.Thread(target=lambda s=seed: results.__setitem__(s, collect(
            engine, ids, GenerationParams(max_tokens=8, temperature=0.5, seed=s)))) for seed in (12, 13, 14)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert isinstance(results[13][-1].error, EngineFault) and "broken sampler" in str(results[13][-1].error)
        assert isinstance(results[14][-1].error, EngineFault) and "cannot start" in str(results[14][-1].error)
        assert results[12][-1].chunk.finish_reason == "length" and results[12][-1].chunk.timings.completion_tokens == 8
        after = collect(engine, ids, GenerationParams(max_tokens=4, temperature=0, seed=1))
        assert after[-1].chunk.finish_reason == "length"  # the engine goes on
    finally:
        engine.close()


def first_token(engine, ids: list[int]) -> tuple[dict[str, float], int]:
    """The top-5 log-probabilities of the first new token, and how many prompt tokens came from the cache."""
    from danlu.backends.requests import SubmitOptions

    events: list = []
    engine.submit(ids, GenerationParams(max_tokens=1, temperature=0), events.append, SubmitOptions(logprobs=5))
    deadline = time.monotonic() + 60
    while not any(e.chunk and e.chunk.finish_reason for e in events) and time.monotonic() < deadline:
        time.sleep(0.01)
    first = next(e for e in events if e.logprobs).logprobs[0]
    return {token: logprob for token, _, logprob in first.top}, events[-1].chunk.timings.cached_tokens


@pytest.mark.parametrize("unified", [False, True], ids=["stream-per-slot", "unified"])
def test_a_prefix_copied_from_another_conversation_gives_the_same_next_token_distribution(gemma_path, unified):
    """Compared through logprobs, not greedy text: llama.cpp's kernels differ slightly between batch shapes (no
    batch invariance), so reading a prompt in two parts moves gemma-270m's logprobs by up to ~0.3 even within
    one slot; a wrong copy (other cells, wrong positions) would change the distribution altogether."""
    from danlu.backends import llamacpp_batched

    def engine():
        extra = {"parallel": 1, "slots": 3, "kv_unified": unified}
        return llamacpp_batched.load(None, None, LoadPlan(gemma_path, n_ctx=256, n_threads=1, extra=extra))

    shared = "<bos>以下是一段关于中国历史的长篇介绍，请仔细阅读。" * 3
    cached, fresh = engine(), engine()
    try:
        long_ids = cached.tokenize(shared + "秦朝统一了六国，建立了中央集权的国家。" * 4, special=True)
        list(cached.generate(long_ids, GenerationParams(max_tokens=4, temperature=0)))  # another conversation
        ids = cached.tokenize(shared + "唐朝的首都是", special=True)
        reused, from_cache = first_token(cached, ids)
        assert from_cache >= len(cached.tokenize(shared, special=True)) - 1
        assert cached.load_info()["cached_slots"] == 2  # the long conversation kept its own slot
        expected, _ = first_token(fresh, ids)
        assert max(reused, key=reused.get) == max(expected, key=expected.get)
        assert len(reused.keys() & expected.keys()) >= 3
        assert all(abs(reused[t] - expected[t]) < 0.5 for t in reused.keys() & expected.keys()), (reused, expected)
    finally:
        cached.close()
        fresh.close()
