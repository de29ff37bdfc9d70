"""Hermes tool calls ("hermes", Qwen2.5, Qwen3, Hermes): `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`,
and the "good bad" forms models write instead, the ones llama.cpp's Hermes-2-Pro parser accepts
(common/chat.cpp, `common_chat_parse_hermes_2_pro`):

- a call object `{"name": …, "arguments": …}` ("name" first), bare, or in a tag (`<function_call>`, `<tool>`,
  `<tools>`, `<response>`, `<json>`, `<xml>`, `<JSON>`, closed by its end tag), either one optionally in a fence
  (```` ``` ````, ```` ```json ```` or ```` ```xml ```` and a newline, closed by ```` ``` ````). A fenced `<tool_call>`
  block too. Qwen2.5-Coder-1.5B often answers ```` ```json\\n{"name": "get_weather", …}\\n``` ````.
- `<function=NAME>{arguments}</function>` and `<function name="NAME">{arguments}</function>`.

"parameters" is accepted for "arguments", and arguments written as a JSON string are decoded. A `<tool_call>`
block is read as before: whatever stands between the tags must be a call object. Any other form counts as a call
only when its object parses and its name is one of the request's tools (any name when no tools are given);
otherwise the whole text, fence and all, is content as written.

Text is held back only while it can still become a call: after `{"name": "` only while the name so far starts a
known tool's name, so a code block or a JSON answer streams on at once. A fence that opens no call starts a code
block; inside one a bare object is code (a Python dict in a snippet stays in the snippet), and the next fence ends it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from danlu.outputs.calls import ToolCallParser, call_parts, json_object, register_tool_parser
from danlu.outputs.scan import JsonObjectScanner, NeedMore, NoMatch, TextCursor, partial_suffix

FENCE = "```"
FENCES = ("```\n", "```json\n", "```xml\n")
TOOL_CALL = "<tool_call>"
TAGS = (TOOL_CALL, "<function_call>", "<tool>", "<tools>", "<response>", "<json>", "<xml>", "<JSON>")
FUNCTIONS = {"<function=": ">", '<function name="': '">'}  # opener → what ends the name
FUNCTION_CLOSE = "</function>"
MAX_NAME = 128  # a longer name is not a call (OpenAI allows 64 characters)
NEED_MORE = "need more"  # match_head / match_tail: the text so far is a proper start of the form

# Where a call may start: a fence, a tag, a bare object; inside a code block a bare object is code.
STARTS = re.compile(r"```|[<{]")
STARTS_IN_CODE = re.compile(r"```|<")


@dataclass(frozen=True)
class Head:
    """The opening of a call, read up to its body; offsets count from the call's first character."""

    kind: str  # JSON: the body is a call object; ARGUMENTS: the body is `name`'s arguments; TAGGED: up to `close`
    body: int  # where the body starts
    close: str  # the tag that follows the body ("" for none)
    fenced: bool  # whether "```" follows (after the close tag)
    name: str | None = None  # the function forms' name

    JSON, ARGUMENTS, TAGGED = "json", "arguments", "tagged"


def match_head(text: str, start: int, known: frozenset[str] | None) -> Head | str | None:
    """The call opening at `text[start:]`: a Head, NEED_MORE while the text may still become one, or None."""
    cursor = TextCursor(text, start)
    try:
        return _head(cursor, start, _name_judge(known))
    except NeedMore:
        return NEED_MORE
    except NoMatch:
        return None


def match_tail(text: str, pos: int, head: Head) -> int | str | None:
    """Where the call whose body ends at `pos` ends: past its close tag and closing fence (whitespace between
    allowed); NEED_MORE or None as in match_head."""
    cursor = TextCursor(text, pos)
    try:
        for needed, literal in ((head.close, head.close), (head.fenced, FENCE)):
            if needed:
                cursor.space()
                cursor.literal(literal)
    except NeedMore:
        return NEED_MORE
    except NoMatch:
        return None
    return cursor.pos


def _head(cursor: TextCursor, start: int, judge) -> Head:
    fenced = cursor.one_of(FENCES, optional=True) is not None
    if fenced:
        cursor.space()
    opener = cursor.one_of(TAGS if fenced else TAGS + tuple(FUNCTIONS), optional=True)
    if opener in FUNCTIONS:
        name = cursor.word(FUNCTIONS[opener][0], judge, limit=MAX_NAME)
        cursor.literal(FUNCTIONS[opener])
        return Head(Head.ARGUMENTS, _object_start(cursor) - start, FUNCTION_CLOSE, False, name)
    if opener == TOOL_CALL:
        return Head(Head.TAGGED, cursor.pos - start, "</" + TOOL_CALL[1:], fenced)
    body = _object_start(cursor)
    for literal in ('"name"', ":", '"'):
        cursor.space()
        cursor.literal(literal)
    cursor.word('"', judge, limit=MAX_NAME)
    return Head(Head.JSON, body - start, "</" + opener[1:] if opener else "", fenced)


def _object_start(cursor: TextCursor) -> int:
    """Skip whitespace to the body's "{"; its position."""
    cursor.space()
    cursor.literal("{")
    return cursor.pos - 1


def _name_judge(known: frozenset[str] | None):
    """Whether a function name read so far may still be, or (complete) is, one of the request's tools."""

    def judge(word: str, complete: bool) -> bool:
        if known is None:
            return True
        return word in known if complete else any(name.startswith(word) for name in known)

    return judge


@register_tool_parser("hermes")
class HermesParser(ToolCallParser):
    """Hermes calls in every form above; everything else is content, streamed as soon as it cannot be a call."""

    TEXT, BODY, TAIL = "text", "body", "tail"

    def __init__(self, tools: Iterable | None = None, *, seed: int | None = None):
        super().__init__(tools, seed=seed)
        self._state = self.TEXT
        self._in_code = False  # inside a code block whose fence opened no call
        self._head: Head | None = None  # the call being read: the buffer starts at its first character
        self._scanner, self._scanned = JsonObjectScanner(), 0
        self._body_end = 0

    def _drain(self, final: bool) -> None:
        steps = {self.TEXT: self._text, self.BODY: self._body, self.TAIL: self._tail}
        while self._buffer and steps[self._state](final):
            pass

    def _text(self, final: bool) -> bool:
        """Pass content on up to the first place a call may start; hold only a possible fence at the end."""
        pos = 0
        while (found := self._next_start(pos)) is not None:
            if self._in_code and self._buffer.startswith(FENCE, found):  # the code block ends
                self._in_code, pos = False, found + len(FENCE)
                continue
            head = match_head(self._buffer, found, self.known)
            if head is None or (head == NEED_MORE and final):
                pos = self._skip_start(found)
                continue
            self._give_back(found)
            return head != NEED_MORE and self._open(head)
        tail = self._buffer[max(pos, len(self._buffer) - len(FENCE)):]
        self._give_back(len(self._buffer) - (0 if final else partial_suffix(tail, FENCE)))
        return False

    def _next_start(self, pos: int) -> int | None:
        found = (STARTS_IN_CODE if self._in_code else STARTS).search(self._buffer, pos)
        return None if found is None else found.start()

    def _skip_start(self, found: int) -> int:
        """Past a start that opens no call; a fence that opens none starts a code block."""
        if self._buffer.startswith(FENCE, found):
            self._in_code = True
            return found + len(FENCE)
        return found + 1

    def _open(self, head: Head) -> bool:
        self._head, self._state = head, self.BODY
        self._scanner, self._scanned = JsonObjectScanner(), head.body
        return True

    def _body(self, final: bool) -> bool:
        end = self._find_body_end()
        if end is None:
            if final:  # the model broke off inside the call: the text is given back as written
                self._give_back(len(self._buffer))
                self._state = self.TEXT
            return False
        self._body_end, self._state = end, self.TAIL
        return True

    def _find_body_end(self) -> int | None:
        """Where the body ends: the close tag of a `<tool_call>` block, else the object's closing brace."""
        if self._head.kind == Head.TAGGED:
            found = self._buffer.find(self._head.close, self._scanned)
            self._scanned = max(self._scanned, len(self._buffer) - len(self._head.close) + 1)
            return None if found < 0 else found
        end = self._scanner.feed(self._buffer[self._scanned:])
        if end is None:
            self._scanned = len(self._buffer)
            return None
        return self._scanned + end

    def _tail(self, final: bool) -> bool:
        end = match_tail(self._buffer, self._body_end, self._head)
        if end == NEED_MORE and not final:
            return False
        if end is None or end == NEED_MORE:  # not closed as it was opened: content, and read on after the body
            self._give_back(self._body_end)
            self._in_code = self._in_code or self._head.fenced
        else:
            self._finish(end)
        self._state = self.TEXT
        return True

    def _finish(self, end: int) -> None:
        raw, self._buffer = self._buffer[:end], self._buffer[end:]
        body = raw[self._head.body:self._body_end]
        if self._head.kind == Head.ARGUMENTS:
            arguments = json_object(body)
            parts = None if arguments is None else (self._head.name, arguments)
        else:
            parts = call_parts(json_object(body))
        if parts is None:
            self._content(raw)
        else:
            self._call(*parts, raw)

    def _give_back(self, end: int) -> None:
        """The buffer's first `end` characters are content."""
        self._content(self._buffer[:end])
        self._buffer = self._buffer[end:]
