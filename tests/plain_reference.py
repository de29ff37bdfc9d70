"""Plain llama.cpp decoding as a token list: the reference speculative decoding is compared with.

`LlamaCppEngine.generate` streams chunks whose token ids leave out tokens that produced no text of their
own (half a UTF-8 character), so the reference is taken from llama-cpp-python's `Llama.generate`, the loop
behind the engine, with the engine's own sampling settings, stop ids and budget.
"""

from __future__ import annotations


def plain_tokens(engine, ids, params, fresh: bool = True) -> list[int]:
    """The tokens plain decoding produces for `ids` (from an empty cache unless `fresh` is False)."""
    llm = engine.llm
    if fresh:
        llm.reset()
    speculator, engine.speculator = engine.speculator, None
    stops, out = engine.eos_token_ids() | set(params.stop_token_ids), []
    try:
        llm.set_seed(params.seed or 0)
        for token in llm.generate(list(ids), **engine._sampling(params)):
            if token in stops or engine.is_end_of_generation(token) or len(out) >= params.max_tokens:
                break
            out.append(token)
    finally:
        engine.speculator = speculator
        llm._requires_eval = True
    return out
