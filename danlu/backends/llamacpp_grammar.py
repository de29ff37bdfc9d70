"""Constrained sampling on llama.cpp: a request's sampler chain with a Guide (danlu/outputs/guide.py) beside it.

A full grammar pass over a 151,936-token vocabulary on every token would cost more than the decode, so this
does what llama.cpp's common sampler does: the chain (penalties, top-k, top-p, min-p, temperature, draw) picks
from the raw logits, the grammar checks that one token, and only when it refuses are the logits masked and the
chain run again. The chosen token is then accepted by the chain (penalty history) and the guide. Without
penalties the chain keeps no history, so the first draw can be llama.cpp's own `llama_sampler_sample` (it
fills the candidates in C++, ~0.3 ms faster per token on a 152k vocabulary than numpy). Both engines
use it: backends/llamacpp_batched.py (one sampler per request, so requests with different grammars share a
batch) and backends/llamacpp.py.
"""

from __future__ import annotations

import ctypes
import warnings
from typing import Any, Callable, Collection

import llama_cpp
import numpy as np

from danlu.outputs.guide import Guide, Guides

TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])  # llama_token_data


def llama_guides(vocab: Any, ends: Collection[int], piece: Callable[[int], bytes],
                 tokenize: Callable[[str], list[int]]) -> Guides:
    """Guides over a llama.cpp vocabulary; `tokenize` must parse special tokens."""

    def make_tokenizer() -> Any:
        from llguidance.llamacpp import lltokenizer_from_vocab

        with warnings.catch_warnings():  # it asks llama_token_get_attr (deprecated) once per vocabulary entry
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(vocab, eos_token=sorted(ends))

    return Guides(make_tokenizer, ends, piece, tokenize)


class Candidates:
    """A llama_token_data_array over numpy storage, refilled from a row of logits before each draw."""

    def __init__(self, n_vocab: int):
        self.rows = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._columns = self.rows.view(np.float32).reshape(n_vocab, 3)  # plain floats: ~2x faster to fill
        self._ids = np.arange(n_vocab, dtype=np.intc).view(np.float32)
        self.array = llama_cpp.llama_token_data_array()

    def fill(self, logits: np.ndarray) -> None:
        self._columns[:, 0], self._columns[:, 1], self._columns[:, 2] = self._ids, logits, 0.0
        # samplers may repoint `data` and shrink `size`: reset both every time
        self.array.data = self.rows.ctypes.data_as(llama_cpp.llama_token_data_p)
        self.array.size, self.array.selected, self.array.sorted = len(self.rows), -1, False

    def draw(self, chain: Any) -> int:
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(self.array))
        return int(self.array.data[self.array.selected].id)


class ConstrainedSampler:
    """A sampler chain that keeps to a Guide; `complete` says the grammar has finished. `penalties`: the chain
    remembers accepted tokens, so a refused draw must not reach it."""

    def __init__(self, chain: Any, guide: Guide, n_vocab: int, penalties: bool = True):
        self.chain, self.guide, self.n_vocab, self.penalties = chain, guide, n_vocab, penalties
        self._candidates = Candidates(n_vocab)

    def sample(self, ctx: Any, index: int) -> int:
        """Draw the token after batch position `index` of context `ctx` (a llama_context pointer)."""
        if not self.guide.active or not self.penalties:  # llama.cpp's own draw (it accepts into the chain itself)
            token = llama_cpp.llama_sampler_sample(self.chain.sampler, ctx, index)
            if not self.guide.allows(token):
                token = self._draw(self._logits(ctx, index), masked=True)
        else:
            logits = self._logits(ctx, index)
            token = self._draw(logits, masked=False)
            if not self.guide.allows(token):
                token = self._draw(logits, masked=True)
            llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        self.guide.accept(token)
        return token

    def _logits(self, ctx: Any, index: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))

    def _draw(self, logits: np.ndarray, masked: bool) -> int:
        self._candidates.fill(logits)
        if masked:
            self.guide.mask(self._candidates.rows["logit"])
        return self._candidates.draw(self.chain.sampler)

    @property
    def complete(self) -> bool:
        return self.guide.complete

    def close(self) -> None:
        self.chain.close()


def has_penalties(params: Any) -> bool:
    """Whether make_sampler's chain for these GenerationParams keeps a token history."""
    return params.repetition_penalty != 1.0 or bool(params.presence_penalty) or bool(params.frequency_penalty)


def sample(sampler: Any, ctx: Any, index: int) -> int:
    """The next token from a plain chain (llama_cpp LlamaSampler) or a ConstrainedSampler."""
    if isinstance(sampler, ConstrainedSampler):
        return sampler.sample(ctx, index)
    return llama_cpp.llama_sampler_sample(sampler.sampler, ctx, index)


def grammar_complete(sampler: Any) -> bool:
    """Whether a request's grammar can take nothing more, so the reply ends now."""
    return isinstance(sampler, ConstrainedSampler) and sampler.complete
