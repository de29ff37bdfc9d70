"""The client side of bench/vs_llama_server.py: the same OpenAI-API calls, made the same way, to either server.

Every request streams (so time to first token is seen), is greedy with no penalties, and names the sampling
in full so neither server fills in defaults of its own (danlu: the catalog's; llama-server: its CLI's):
`temperature` 0, `top_p` 1, `top_k` 1, repetition penalty 1 (both spellings), presence/frequency 0. Time to
first token is to the first chunk with text; end-to-end is to the end of the stream.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from openai import OpenAI

from bench.chat_turns import QUESTIONS

#: Ordinary ids in every vocabulary danlu ships (past the special tokens at the start), as bench/serve_batch.py.
TOKEN_RANGE = (1000, 30000)
GREEDY = {"temperature": 0.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
GREEDY_EXTRA = {"top_k": 1, "repetition_penalty": 1.0, "repeat_penalty": 1.0, "min_p": 0.0}


def client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=1800)


def random_prompt(n: int, rng: random.Random) -> list[int]:
    """Fresh ids for every request, so no request finds another's prefix cached."""
    return [rng.randrange(*TOKEN_RANGE) for _ in range(n)]


def completion(api: OpenAI, model: str, prompt: list[int], max_tokens: int) -> dict:
    """One streamed /v1/completions request of exactly `max_tokens` tokens (ignore_eos)."""
    sent, first, usage, chunks = time.perf_counter(), None, None, 0
    stream = api.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, stream=True,
                                    stream_options={"include_usage": True}, **GREEDY,
                                    extra_body={"ignore_eos": True, **GREEDY_EXTRA})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = first or time.perf_counter()
            chunks += 1
        usage = chunk.usage or usage
    end = time.perf_counter()
    tokens = usage.completion_tokens if usage else chunks
    return {"ttft_s": (first or end) - sent, "e2e_s": end - sent, "tokens": tokens}


def clients_level(api: OpenAI, model: str, clients: int, requests: int, prompt: int, gen: int,
                  rng: random.Random) -> dict:
    """`clients` threads sending `requests` requests in all, each thread one after another; totals and tails."""
    prompts = [random_prompt(prompt, rng) for _ in range(requests)]
    lock, queue = threading.Lock(), list(prompts)

    def worker(_):
        done = []
        while True:
            with lock:
                if not queue:
                    return done
                ids = queue.pop()
            done.append(completion(api, model, ids, gen))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for part in pool.map(worker, range(clients)) for r in part]
    wall = time.perf_counter() - start
    return summarize_level(clients, results, wall)


def summarize_level(clients: int, results: list[dict], wall: float) -> dict:
    ttft, e2e = [r["ttft_s"] for r in results], [r["e2e_s"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "wall_s": wall,
            "decode_tps": tokens / wall, "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99),
            "e2e_p50_s": pct(e2e, 50), "e2e_p99_s": pct(e2e, 99), "ttft_s": ttft, "e2e_s": e2e}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def chat_turn(api: OpenAI, model: str, messages: list[dict], max_tokens: int) -> tuple[float, str, int]:
    """(time to first content, the reply, prompt tokens) of one streamed chat completion."""
    sent, first, parts, usage = time.perf_counter(), None, [], None
    stream = api.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, stream=True,
                                         stream_options={"include_usage": True}, **GREEDY, extra_body=GREEDY_EXTRA)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    return (first or time.perf_counter()) - sent, "".join(parts), usage.prompt_tokens if usage else 0


def conversations(api: OpenAI, model: str, n: int, turns: int, max_tokens: int, offset: int = 0) -> list[dict]:
    """`n` conversations taking turns (1A, 1B, …, 2A, …), the whole history each time (the API is stateless);
    per turn the mean time to first token and prompt length over the conversations."""
    talks: list[list[dict]] = [[] for _ in range(n)]
    rows = []
    for turn in range(turns):
        samples = []
        for c, messages in enumerate(talks):
            messages.append({"role": "user", "content": QUESTIONS[(turn + 5 * c + offset) % len(QUESTIONS)]})
            ttft, reply, prompt_tokens = chat_turn(api, model, messages, max_tokens)
            messages.append({"role": "assistant", "content": reply})
            samples.append((ttft, prompt_tokens))
        rows.append({"turn": turn + 1, "ttft_s": statistics.mean(s[0] for s in samples),
                     "ttft_max_s": max(s[0] for s in samples),
                     "prompt_tokens": statistics.mean(s[1] for s in samples)})
    return rows


def long_prompt(api: OpenAI, model: str, n_tokens: int, rng: random.Random) -> dict:
    """Time to first token of one fresh `n_tokens` prompt, nothing else running."""
    return completion(api, model, random_prompt(n_tokens, rng), 2)
