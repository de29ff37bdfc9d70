"""Tool-call parsers, one per protocol, registered by name (`ChatFormat.tool_protocol` names one):

    parser = get_tool_parser("hermes")(tools=request_tools)   # a fresh state machine per reply
    for piece in pieces:
        parsed = parser.feed(piece)      # Parsed(content="…", calls=[ToolCallDelta, …])
    parsed = parser.flush()
    parser.calls                         # [ToolCall(id, name, arguments), …] for the non-streaming reply

Protocols:
- "hermes": `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`, several in a row (Qwen2.5, Qwen3, Hermes),
  and the fenced, tagged and `<function=…>` forms llama.cpp also accepts; in hermes_calls.py.
- "llama3-json": Llama 3.1 JSON calls, `{"name": …, "parameters": {…}}` at the start of the reply or after
  `<|python_tag|>`, several separated by whitespace or ";". JSON that does not start like a call is content.
- "chatglm3" and "glm4": the GLM family's `<|assistant|>{function name}\\n…` turns, in glm_calls.py.

The types, the base class and the registry are in calls.py; `parse_tool_calls` reads a whole reply at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from danlu.outputs.calls import (
    Parsed,
    ToolCall,
    ToolCallDelta,
    ToolCallParser,
    call_parts,
    get_tool_parser,
    json_object,
    register_tool_parser,
    tool_names,
    tool_parser_names,
)
from danlu.outputs.scan import JsonObjectScanner, partial_suffix

__all__ = [
    "Parsed", "ToolCall", "ToolCallDelta", "ToolCallParser", "get_tool_parser", "parse_tool_calls",
    "register_tool_parser", "tool_names", "tool_parser_names",
]


def parse_tool_calls(text: str, protocol: str, tools: Iterable | None = None,
                     *, seed: int | None = None) -> tuple[str, list[ToolCall]]:
    """A whole reply parsed at once: its content and its calls."""
    parser = get_tool_parser(protocol)(tools, seed=seed)
    whole = parser.feed(text) + parser.flush()
    return whole.content, list(parser.calls)


@register_tool_parser("llama3-json")
class Llama3JsonParser(ToolCallParser):
    """Llama 3.1's JSON calls. A call may begin where the reply begins, after `<|python_tag|>`, or right after
    another call; elsewhere JSON is content. The object is buffered until its braces close."""

    TAG = "<|python_tag|>"
    EXPECT, OBJECT, TEXT = "expect", "object", "text"

    def __init__(self, tools: Iterable | None = None, *, seed: int | None = None):
        super().__init__(tools, seed=seed)
        self._state = self.EXPECT
        self._raw = ""  # what was consumed for a call that may still turn out to be content
        self._scanner = JsonObjectScanner()
        self._scanned = 0

    def _drain(self, final: bool) -> None:
        steps = {self.EXPECT: self._expect, self.OBJECT: self._object, self.TEXT: self._text}
        while self._buffer and steps[self._state](final):
            pass
        if final:  # a call cut off before its braces closed is content as written
            self._content(self._raw + self._buffer)
            self._raw = self._buffer = ""

    def _expect(self, final: bool) -> bool:
        """Where a call may start: skip separators and the tag; "{" opens a call, anything else is text."""
        separators = " \t\r\n;" if self.calls else " \t\r\n"
        stripped = self._buffer.lstrip(separators)
        self._raw += self._buffer[: len(self._buffer) - len(stripped)]
        self._buffer = stripped
        if stripped.startswith(self.TAG):
            self._raw, self._buffer = self._raw + self.TAG, stripped[len(self.TAG):]
            return True
        if not stripped or (self.TAG.startswith(stripped) and not final):
            return False
        self._state = self.OBJECT if stripped.startswith("{") else self.TEXT
        if self._state == self.TEXT:
            self._give_back()
        self._scanner, self._scanned = JsonObjectScanner(), 0
        return True

    def _object(self, final: bool) -> bool:
        end = self._scanner.feed(self._buffer[self._scanned:])
        if end is None:
            self._scanned = len(self._buffer)
            if not _may_start_call(self._buffer):
                self._state = self.TEXT
                self._give_back()
                return True
            return False
        cut = self._scanned + end
        text, self._buffer = self._buffer[:cut], self._buffer[cut:]
        raw, self._raw = self._raw + text, ""
        parts = call_parts(json_object(text))
        called = parts is not None and self._call(*parts, raw)
        if parts is None:
            self._content(raw)
        self._state = self.EXPECT if called else self.TEXT
        return True

    def _text(self, final: bool) -> bool:
        found = self._buffer.find(self.TAG)
        if found < 0:
            keep = 0 if final else partial_suffix(self._buffer, self.TAG)
            cut = len(self._buffer) - keep
            self._content(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
            return False
        self._content(self._buffer[:found])
        self._buffer, self._state = self._buffer[found:], self.EXPECT
        return True

    def _give_back(self) -> None:
        """What was consumed as a possible call start is content after all."""
        self._content(self._raw)
        self._raw = ""


def _may_start_call(text: str) -> bool:
    """Whether `text` (starting at "{") can still be `{"name": …` or `{"type": …`."""
    rest = text[1:].lstrip()
    if not rest:
        return True
    if rest[0] != '"':
        return False
    key, closed, _ = rest[1:].partition('"')
    return key in ("name", "type") if closed else any(word.startswith(key) for word in ("name", "type"))


# The Hermes and GLM families' protocols register themselves on import.
from danlu.outputs import glm_calls as _glm_calls  # noqa: E402,F401
from danlu.outputs.hermes_calls import HermesParser  # noqa: E402,F401
