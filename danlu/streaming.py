"""Turning a stream of token bytes into safe text: whole UTF-8 characters, stop strings cut cleanly.

A Chinese character is three UTF-8 bytes and byte-level tokenizers often split it across tokens;
decoding token by token yields U+FFFD (FastChat PR #1190). `TextStream` keeps the incomplete tail
bytes until the character is whole, and holds back any text that could still become a stop string,
so a caller never shows a stop marker or half a character. Every backend uses it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

#: The longest stop string, and all of a request's stop strings together, that a server accepts.
MAX_STOP_CHARS = 256
MAX_STOPS_TOTAL_CHARS = 2048


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

    def feed(self, piece: bytes) -> StreamPiece:
        """Add one token's bytes; returns the text that can be shown now."""
        if self._done:
            return StreamPiece("", True)
        self._held += self._decoder.decode(piece)
        return self._release()

    def flush(self) -> str:
        """End of generation: whatever is held (minus a partial character) is final."""
        if self._done:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        text, self._held = self._held, ""
        self._done = True
        return text

    def _release(self) -> StreamPiece:
        hit = self._first_stop()
        if hit is not None:
            text, self._held, self._done = self._held[:hit], "", True
            return StreamPiece(text, True)
        keep = self._possible_stop_prefix()
        text = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return StreamPiece(text)

    def _first_stop(self) -> int | None:
        positions = [i for i in (self._held.find(s) for s in self.stop if s) if i >= 0]
        return min(positions) if positions else None

    def _possible_stop_prefix(self) -> int:
        """Length of the longest tail of held text that starts some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._held)), longest, -1):
                if s.startswith(self._held[-n:]):
                    longest = n
                    break
        return longest
