"""Drafters: what proposes the tokens a target model then verifies in one batch (backends/speculative.py).

- `ModelDrafter`: a small model of the same vocabulary (qwen2.5-coder-0.5b for the 1.5B), one decode per
  drafted token on its own llama.cpp context, whose KV cache follows the conversation like the target's
  (longest common prefix kept, the rest decoded in one batch). It stops early when it is unsure (its top
  probability below `p_min`, as llama.cpp's `--draft-p-min`), since an unsure token is likely rejected.
- `NgramDrafter`: prompt lookup (llama.cpp's lookup, vLLM's `ngram`): find the latest earlier place where the
  last n tokens occurred (prompt or output so far, longest n first) and propose what followed. It costs
  nothing and pays when the answer repeats its input (editing, summarising, quoting code).

A drafter sees only committed tokens: `seq` is prompt + output so far, its last token not yet in the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import llama_cpp
import numpy as np

from danlu.errors import DanluError

from . import spec_sampling
from .base import GenerationParams, common_prefix
from .spec_sampling import Distribution


@dataclass(frozen=True)
class Draft:
    """Proposed tokens and, for a drafter that samples, the distribution each was drawn from."""

    tokens: list[int]
    proposals: list[Distribution] | None = None  # None: greedy picks, or proposals made with certainty


class Drafter(Protocol):
    name: str

    def propose(self, seq: Sequence[int], k: int, recent: Sequence[int], params: GenerationParams,
                rng: np.random.Generator) -> Draft: ...

    def close(self) -> None: ...


class ModelDrafter:
    """Drafts with a small llama.cpp model (a LlamaCppEngine loaded through danlu's loader)."""

    def __init__(self, engine, name: str, p_min: float = 0.6):
        self.engine, self.name, self.p_min = engine, name, p_min

    @classmethod
    def for_target(cls, target, engine, name: str) -> "ModelDrafter":
        """A drafter for `target`, refused (and closed) when the two vocabularies differ."""
        if not same_vocabulary(target, engine):
            engine.close()
            raise DanluError(f"草稿模型 {name} 的词表与目标模型不同，不能用于推测解码 / the draft model {name} has a "
                             f"different vocabulary from the target's: pick a model of the same family, or --draft ngram")
        return cls(engine, name)

    def propose(self, seq: Sequence[int], k: int, recent: Sequence[int], params: GenerationParams,
                rng: np.random.Generator) -> Draft:
        k = min(k, self.engine.n_ctx - len(seq))  # its own context holds seq and the drafted tokens
        if k <= 0:
            return Draft([])
        row = self._logits_after(list(seq))
        tokens: list[int] = []
        proposals: list[Distribution] = []
        while len(tokens) < k:
            token, confidence, q = self._pick(row, [*recent, *tokens], params, rng)
            tokens.append(token)
            if q is not None:
                proposals.append(q)
            if len(tokens) == k or confidence < self.p_min:
                break
            row = self._logits_after_one(token)
        return Draft(tokens, proposals or None)

    @staticmethod
    def _pick(row: np.ndarray, history: list[int], params: GenerationParams, rng: np.random.Generator):
        """(token, how sure the draft is of it, q or None under greedy)."""
        if params.temperature <= 0:
            scores = spec_sampling.penalised(row, history, params)
            token = int(np.argmax(scores))
            return token, float(1.0 / np.exp(scores - scores[token]).sum()), None
        q = spec_sampling.distribution(row, history, params)
        return q.sample(rng), q.top()[1], q

    def _logits_after(self, seq: list[int]) -> np.ndarray:
        """Bring the draft's KV cache to `seq` (reusing the common prefix) and read the next-token logits."""
        self.engine._sync(seq)
        return self._last_row()

    def _logits_after_one(self, token: int) -> np.ndarray:
        self.engine.llm.eval([token])
        return self._last_row()

    def _last_row(self) -> np.ndarray:
        llm = self.engine.llm
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))

    def close(self) -> None:
        self.engine.close()


@dataclass
class NgramDrafter:
    """Prompt lookup: the latest earlier occurrence of the last n tokens (n from n_max down to n_min). A short
    match says little about what comes next, so it proposes at most `per_match` tokens per matched token."""

    n_max: int = 12
    n_min: int = 5  # shorter matches were mostly wrong guesses in code edits: a wasted batch on a busy CPU
    per_match: int = 4
    name: str = "ngram"
    _seq: list[int] = field(default_factory=list)
    _index: dict[int, dict[tuple[int, ...], int]] = field(default_factory=dict)  # n → n-gram → where its follower is

    def propose(self, seq: Sequence[int], k: int, recent: Sequence[int], params: GenerationParams,
                rng: np.random.Generator) -> Draft:
        self._follow(seq)
        for n in range(self.n_max, self.n_min - 1, -1):
            if len(self._seq) <= n:
                continue
            start = self._index[n].get(tuple(self._seq[-n:]))
            if start is not None:
                return Draft(self._seq[start:start + min(k, self.per_match * n)])
        return Draft([])

    def _follow(self, seq: Sequence[int]) -> None:
        """Index the new tokens; a sequence that is not a continuation (a new conversation) is indexed anew."""
        seq = list(seq)
        if common_prefix(self._seq, seq) < len(self._seq):
            self._seq, self._index = [], {}
        for n in range(self.n_min, self.n_max + 1):
            self._index.setdefault(n, {})
        for i in range(len(self._seq), len(seq)):
            for n, table in self._index.items():
                if i >= n:
                    table[tuple(seq[i - n:i])] = i  # the n tokens before i are followed by seq[i]
        self._seq = seq

    def close(self) -> None:
        pass


def same_vocabulary(a, b) -> bool:
    """Two llama.cpp engines with the same tokens under the same ids (and the same end-of-generation ids)."""
    n = a.llm.n_vocab()
    if n != b.llm.n_vocab() or a.eos_token_ids() != b.eos_token_ids():
        return False
    text_a, text_b = (lambda i: llama_cpp.llama_vocab_get_text(a._vocab, i)), (lambda i: llama_cpp.llama_vocab_get_text(b._vocab, i))
    return all(text_a(i) == text_b(i) for i in range(n))
