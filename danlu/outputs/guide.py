"""A constraint at work during one generation: which next tokens it allows, what it has read, when it is done.

Engines sample as llama.cpp's common sampler does: draw from the normal chain first, ask `allows(token)` (a few
microseconds), and only when the grammar rejects the draw mask the whole vocabulary with `allowed_mask()` and
draw again; then `accept(token)`. Until the constraint's `after` text has been generated the guide is inactive
and allows everything. End-of-generation tokens are allowed exactly when the grammar is satisfied; `complete`
turns true once the grammar can take nothing more, and the engine ends the reply there ("stop").
The matcher is llguidance's; `Guides` builds its tokenizer once per engine (about a second for 150k tokens).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Collection

import numpy as np

from danlu.outputs.grammar import Constraint, grammar_error


class Matcher:
    """llguidance's matcher for one grammar over one vocabulary."""

    def __init__(self, tokenizer: Any, grammar: str):
        import llguidance

        self._tokenizer = tokenizer
        self._m = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self._m.is_error():
            raise grammar_error(self._m.get_error())

    def allows(self, token: int) -> bool:
        return self._m.validate_tokens([token]) == 1

    def consume(self, token: int) -> None:
        self._m.consume_token(token)  # only called with allowed tokens; a refusal leaves it in its error state

    def allowed(self) -> np.ndarray:
        """One bool per token id of the tokenizer's vocabulary."""
        bits = np.frombuffer(self._m.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, count=self._tokenizer.vocab_size, bitorder="little").view(bool)

    def accepting(self) -> bool:
        return self._m.is_accepting()

    def stopped(self) -> bool:
        return self._m.is_stopped()

    def feed_bytes(self, data: bytes) -> None:
        """Text generated in the same token as the trigger; what the grammar refuses of it is left out."""
        self._m.try_consume_tokens(self._tokenizer.tokenize_bytes(data))


class Guide:
    """One generation's constraint state; see the module docstring for how an engine drives it."""

    def __init__(self, matcher: Matcher, after: str | None, ends: Collection[int], piece: Callable[[int], bytes]):
        self.matcher, self.ends, self._piece = matcher, frozenset(ends), piece
        self._after = after.encode("utf-8") if after else b""
        self.active = not self._after
        self.complete = False
        self._seen = b""

    def allows(self, token: int) -> bool:
        if not self.active:
            return True
        if token in self.ends:
            return self.matcher.accepting()
        return self.matcher.allows(token)

    def allowed_mask(self, n: int) -> np.ndarray:
        """n bools (the logits' length, which may exceed the tokenizer's): what may come next."""
        allowed = np.zeros(n, dtype=bool)
        got = self.matcher.allowed()
        allowed[: min(n, len(got))] = got[:n]
        ends = [t for t in self.ends if t < n]
        allowed[ends] = self.matcher.accepting()
        if not allowed.any():  # a matcher in its error state allows nothing: end the reply rather than draw junk
            allowed[ends] = True
            self.complete = True
        return allowed

    def mask(self, logits: np.ndarray) -> None:
        """Disallowed tokens' logits to -inf, in place."""
        logits[~self.allowed_mask(len(logits))] = -np.inf

    def accept(self, token: int) -> None:
        if self.active:
            if token not in self.ends:
                self.matcher.consume(token)
            self.complete = self.complete or self.matcher.stopped()
            return
        self._watch(self._piece(token))

    def _watch(self, piece: bytes) -> None:
        """Before the trigger: look for it in what was generated (it may be split over tokens)."""
        start = max(0, len(self._seen) - len(self._after) + 1)
        self._seen += piece
        at = self._seen.find(self._after, start)
        if at < 0:
            self._seen = self._seen[-len(self._after):]
            return
        self.active, rest, self._seen = True, self._seen[at + len(self._after):], b""
        if rest:
            self.matcher.feed_bytes(rest)


class Guides:
    """Makes Guides for one engine. `make_tokenizer` builds llguidance's view of the vocabulary (slow, once);
    `tokenize(text)` parses special tokens, so a tool tag that is one token in this vocabulary is found."""

    def __init__(self, make_tokenizer: Callable[[], Any], ends: Collection[int], piece: Callable[[int], bytes],
                 tokenize: Callable[[str], list[int]]):
        self._make, self.ends, self._piece, self._tokenize = make_tokenizer, set(ends), piece, tokenize
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make()
            return self._tokenizer

    def start(self, constraint: Constraint) -> Guide:
        """A fresh Guide for one generation; a grammar that does not compile raises DanluError here."""
        tokenizer = self.tokenizer()
        grammar = constraint.grammar(lambda tag: self._special_id(tokenizer, tag))
        return Guide(Matcher(tokenizer, grammar), constraint.after, self.ends, self._piece)

    def _special_id(self, tokenizer: Any, tag: str) -> int | None:
        ids = self._tokenize(tag)
        return ids[0] if len(ids) == 1 and tokenizer.is_special_token(ids[0]) else None
