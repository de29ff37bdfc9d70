"""Where a decoded token's time goes in danlu's llama.cpp backend, layer by layer, in one process.

llama-bench's `tg` test only decodes (it feeds random tokens and never samples). A generation also
samples each token and streams its text. On danlu's own `Llama` object, this times per token:
- `eval_ms`: `Llama.eval([token])` alone — llama_decode through ctypes plus llama-cpp-python's
  bookkeeping (batch fill, logits row copy): the part comparable to llama-bench's tg;
- `eval_sample_ms`: the same plus greedy sampling with llama.cpp's sampler chain (a candidates array
  over the whole vocabulary: 262k entries for gemma 3, 152k for qwen 2.5);
- `eval_sample_penalty_ms`: the same with the catalog's repetition penalty (qwen 2.5: 1.05), which llama.cpp
  applies with one hash lookup per vocabulary entry per token; gemma 3's is 1.0, which skips it;
- `danlu_ms` (filled in by the caller from `Timings.decode_tps`): the full `engine.generate` loop.
"""

from __future__ import annotations

import time


def _loop(llm, ids: list[int], n: int, sampler) -> float:
    """Milliseconds per token for n single-token decodes after the prompt `ids`, sampling with `sampler` if any."""
    llm.reset()
    llm.eval(ids)
    llm._sampler = sampler  # what Llama.generate builds once per call and Llama.sample uses
    token, start = ids[-1], time.perf_counter()
    for _ in range(n):
        if sampler is not None:
            token = llm.sample()
        llm.eval([token])
    return (time.perf_counter() - start) * 1000 / n


def per_token_ms(engine, ids: list[int], n: int, repeat_penalty: float = 1.0) -> dict:
    """eval alone, eval + greedy sampling, and eval + greedy with the model's repetition penalty, in ms per token."""
    llm = engine.llm
    try:
        return {"eval_ms": _loop(llm, ids, n, None),
                "eval_sample_ms": _loop(llm, ids, n, llm._init_sampler(temp=0.0, top_k=1)),
                "eval_sample_penalty_ms": _loop(llm, ids, n, llm._init_sampler(temp=0.0, top_k=1,
                                                                               repeat_penalty=repeat_penalty))}
    finally:
        llm._sampler = None
        llm.reset()
