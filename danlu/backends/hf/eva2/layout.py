"""The reference chat loop's two rules on token ids: which utterances the encoder sees, which tokens are banned.

From thu-coai/EVA (branch huggingface) src/eva_interactive.py and the defaults in src/arguments.py:
- the encoder input is the last 8 utterances, newest first, each kept only if the ones kept so far plus
  it plus one still fit in 128 tokens (an utterance that does not fit is skipped and older ones may
  still come in), each ending in `<sep>`, then `<s_0>`; the decoder starts from `<s_0>` too;
- `generate` runs with `min_length=2` (the decoder start counts: no `<sep>` as the first token),
  `no_repeat_ngram_size=3` over the reply and `encoder_no_repeat_ngram_size=3` over the encoder input
  (the reply repeats no 3-gram of itself or of the context), besides the sampling settings the catalog
  carries (temperature, top_p, beams, length_penalty, repetition_penalty).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

MAX_UTTERANCES = 8
MAX_CONTEXT_TOKENS = 128
NGRAM = 3
MIN_LENGTH = 2


def utterances(ids: Sequence[int], sep: int) -> list[list[int]]:
    """Split a rendered dialogue at `<sep>`; each utterance keeps its `<sep>` (a trailing rest is one more)."""
    result, current = [], []
    for token in ids:
        current.append(token)
        if token == sep:
            result.append(current)
            current = []
    return result + ([current] if current else [])


def reference_window(turns: list[list[int]]) -> list[int]:
    """eva_interactive.py's truncation: newest first over the last 8, keep what fits in 128 with the `<s_0>`."""
    kept: list[int] = []
    for utterance in reversed(turns[-MAX_UTTERANCES:]):
        if len(kept) + len(utterance) + 1 <= MAX_CONTEXT_TOKENS:
            kept = utterance + kept
    return kept


def encoder_input(ids: Sequence[int], sep: int, bos: int) -> list[int]:
    """What the encoder reads. A rendered chat ends in `<s_0>`: its utterances go through the reference window.
    Any other prompt (a raw completion, an evaluation context) is one utterance, kept whole, closed with
    `<sep>` and `<s_0>` the way the reference closes every utterance."""
    ids = list(ids)
    if ids and ids[-1] == bos:
        return reference_window(utterances(ids[:-1], sep)) + [bos]
    return ids + ([] if ids and ids[-1] == sep else [sep]) + [bos]


@dataclass
class ReferenceRules:
    """Tokens the reference's `generate` settings forbid after a decoder history (which starts with `<s_0>`)."""

    encoder_ids: Sequence[int]
    stop_ids: set[int]
    ngram: int = NGRAM
    min_length: int = MIN_LENGTH
    _context: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._context = _followers(self.encoder_ids, self.ngram)

    def banned(self, history: Sequence[int]) -> list[int]:
        history = list(history)
        banned = list(self.stop_ids) if len(history) < self.min_length else []
        if len(history) >= self.ngram - 1:
            prefix = tuple(history[len(history) - self.ngram + 1:])
            banned += self._context.get(prefix, [])
            banned += _followers(history, self.ngram).get(prefix, [])
        return banned


def _followers(ids: Sequence[int], n: int) -> dict[tuple[int, ...], list[int]]:
    """Every (n-1)-token prefix in `ids` and the tokens that followed it."""
    seen: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in range(len(ids) - n + 1):
        seen[tuple(ids[i:i + n - 1])].append(ids[i + n - 1])
    return seen
