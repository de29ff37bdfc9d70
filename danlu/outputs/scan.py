"""Small text-scanning helpers shared by the streaming parsers: partial tags at a piece's end, whitespace edges,
and an incremental JSON-object scanner that says where an object closes without parsing it twice per piece."""

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
