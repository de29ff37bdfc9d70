"""Small text-scanning helpers shared by the streaming parsers: partial tags at a piece's end, whitespace edges,
an incremental JSON-object scanner that says where an object closes without parsing it twice per piece, and a
cursor that reads a small grammar off a growing text and tells "not yet" from "never"."""

from __future__ import annotations


def partial_suffix(text: str, *tags: str) -> int:
    """Length of the longest end of `text` that is a proper start of one of `tags` (0 if none): the part a
    streaming parser must hold back because the next piece may complete the tag."""
    longest = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), longest, -1):
            if text.endswith(tag[:size]):
                longest = size
                break
    return longest


def split_trailing_space(text: str) -> tuple[str, str]:
    """`text` cut into its body and its trailing whitespace."""
    body = text.rstrip()
    return body, text[len(body):]


class JsonObjectScanner:
    """Finds where a JSON object that starts at the first `{` of the fed text ends, piece by piece.

    It tracks only nesting, strings and escapes (no validation), so each character is looked at once however
    the text is cut; `json.loads` on the finished slice does the real parsing."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.started = False
        self.length = 0  # characters consumed so far

    def feed(self, text: str) -> int | None:
        """Consume `text`; the index in `text` just past the closing brace once the object ends, else None."""
        for index, char in enumerate(text):
            self.length += 1
            if self._step(char):
                return index + 1
        return None

    def _step(self, char: str) -> bool:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
            return False
        if char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
            self.started = True
        elif char in "}]":
            self.depth -= 1
        return self.started and self.depth == 0


class NeedMore(Exception):
    """The text read so far is a proper start of what the cursor was asked for: wait for the next piece."""


class NoMatch(Exception):
    """The text cannot be what the cursor was asked for, whatever comes next."""


class TextCursor:
    """Reads a small grammar off a text from `pos`, one element at a time. Each read either advances, raises
    `NeedMore` (the text ends inside the element) or `NoMatch`, so a caller can tell "partial" from "not this"
    without a regex engine that knows about partial input. Reads look at a bounded window, never the whole rest.
    The grammars it reads are deterministic: at most one of the options given to `one_of` can match."""

    def __init__(self, text: str, pos: int = 0, *, max_space: int = 128):
        self.text, self.pos, self.max_space = text, pos, max_space

    def one_of(self, options: tuple[str, ...], *, optional: bool = False) -> str | None:
        """The option the text continues with (consumed); None for an optional element that is absent."""
        for option in options:
            if self.text.startswith(option, self.pos):
                self.pos += len(option)
                return option
        rest = self.text[self.pos:self.pos + max(map(len, options))]
        if any(option.startswith(rest) for option in options):
            raise NeedMore
        if optional:
            return None
        raise NoMatch

    def literal(self, text: str) -> None:
        self.one_of((text,))

    def space(self) -> None:
        """Skip whitespace; the text must go on after it (a run longer than `max_space` is not a match)."""
        start, end = self.pos, min(len(self.text), self.pos + self.max_space + 1)
        while self.pos < end and self.text[self.pos].isspace():
            self.pos += 1
        if self.pos - start > self.max_space:
            raise NoMatch
        if self.pos == len(self.text):
            raise NeedMore

    def word(self, stop: str, accept, *, limit: int) -> str:
        """The characters before `stop` (which is not consumed), at least one and at most `limit`, none a
        backslash; `accept(word, complete)` judges them as they grow."""
        window = self.text[self.pos:self.pos + limit + 1]
        end = window.find(stop)
        word = window if end < 0 else window[:end]
        if "\\" in word or len(word) > limit or (end == 0) or not accept(word, end >= 0):
            raise NoMatch
        if end < 0:
            raise NeedMore
        self.pos += end
        return word
