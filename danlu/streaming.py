"""Turning a stream of token bytes into safe text: whole UTF-8 characters, stop strings cut cleanly.

A Chinese character is three UTF-8 bytes and byte-level tokenizers often split it across tokens;
decoding token by token yields U+FFFD (FastChat PR #1190). `TextStream` keeps the incomplete tail
bytes until the character is whole, and holds back any text that could still become a stop string,
so a caller never shows a stop marker or half a character. Every backend uses it.

Stops are matched as the text arrives: generation stops at the first character that completes a stop
string, and the text before that stop is what was said (when several stops end there, the longest is
cut). This does not depend on how tokens cut the text. Each stop has its own KMP automaton (`_Matcher`),
so a token costs work in proportion to its characters times the number of stops, never to the text
held back: it runs on a model's decode thread, and long stop strings must not stall the model.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from danlu.errors import DanluError

#: The longest one stop string may be, in characters; the server refuses longer ones with a 400.
MAX_STOP_CHARS = 256
#: A request's stop strings together, in characters (the server's 400 beyond it).
MAX_STOPS_TOTAL_CHARS = 2048
#: Room for the prompt format's and the model's own stops (a few short markers), added to a request's.
OWN_STOPS_ALLOWANCE = 512


@dataclass
class StreamPiece:
    """What a feed produced: text safe to show, and whether a stop string was hit."""

    text: str
    stopped: bool = False


@dataclass
class TextStream:
    """Incremental decoder + stop-string matcher for one generation."""

    stop: list[str] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    _held: str = ""
    _done: bool = False

    def __post_init__(self) -> None:
        check_stop_lengths(self.stop)
        self._matcher = _Matcher(self.stop)

    @property
    def steps(self) -> int:
        """Matcher steps taken so far (a cost that can be asserted on, unlike time)."""
        return self._matcher.steps

    def feed(self, piece: bytes) -> StreamPiece:
        """Add one token's bytes; returns the text that can be shown now."""
        if self._done:
            return StreamPiece("", True)
        new = self._decoder.decode(piece)
        text, start = self._held + new, self._matcher.scan(new)
        if start is not None:  # `start` counts from the beginning of `new`: a stop may begin in held text
            self._held, self._done = "", True
            return StreamPiece(text[: len(text) - len(new) + start], True)
        keep = self._matcher.longest_partial()  # < the longest stop: held text stays short
        self._held = text[len(text) - keep:]
        return StreamPiece(text[: len(text) - keep])

    def flush(self) -> str:
        """End of generation: whatever is held (minus a partial character) is final."""
        if self._done:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held, self._done = "", True
        return text


def check_stop_lengths(stops: list[str]) -> None:
    """A DanluError when one stop, or all of them together, are longer than the caps (the server checks a
    request's own stops first; this is the engine's defence when a caller did not)."""
    longest = max((len(s) for s in stops), default=0)
    total, limit = sum(len(s) for s in stops), MAX_STOPS_TOTAL_CHARS + OWN_STOPS_ALLOWANCE
    if longest > MAX_STOP_CHARS or total > limit:
        raise DanluError(f"停止词太长 / stop strings too long: the longest has {longest} characters, all together "
                         f"{total}; 每个最多 {MAX_STOP_CHARS}、合计最多 {limit} 个字符 / at most "
                         f"{MAX_STOP_CHARS} each and {limit} in all")


class _Matcher:
    """Every stop's KMP state: how long a prefix of that stop the text seen so far ends with."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self.failure = [_failure(s) for s in self.stops]
        self.matched = [0] * len(self.stops)
        self.steps = 0

    def scan(self, text: str) -> int | None:
        """Advance over `text`; where (relative to `text`) the first completed stop begins, or None."""
        if not self.stops:
            return None
        for i, char in enumerate(text):
            longest = 0
            for k in range(len(self.stops)):
                if self._advance(k, char) == len(self.stops[k]):
                    longest = max(longest, len(self.stops[k]))
            if longest:
                return i + 1 - longest
        return None

    def longest_partial(self) -> int:
        """Length of the longest tail of the text that starts some stop string (text to hold back)."""
        return max(self.matched, default=0)

    def _advance(self, k: int, char: str) -> int:
        stop, failure, m = self.stops[k], self.failure[k], self.matched[k]
        while m and stop[m] != char:  # amortised O(1): m falls at most as often as it rose
            m = failure[m - 1]
            self.steps += 1
        if stop[m] == char:
            m += 1
        self.steps += 1
        self.matched[k] = m
        return m


def _failure(stop: str) -> list[int]:
    """KMP failure function: for each prefix, the longest proper prefix that is also its suffix."""
    failure, m = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while m and stop[i] != stop[m]:
            m = failure[m - 1]
        if stop[i] == stop[m]:
            m += 1
        failure[i] = m
    return failure
