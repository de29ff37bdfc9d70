"""Tool calls of the GLM family: a reply is one or more assistant turns, each a metadata line and a body.

The generation prompt ends with `<|assistant|>`; the model writes the metadata line first. An empty line means a
plain answer; a function name means the body is a call, and a later `<|assistant|>` starts the next turn
(`<|observation|>` is where the model stops to wait for the result):

- "chatglm3" (THUDM ChatGLM3-6B, PROMPT.md and modeling `process_response`): the body is a Python block,
  ```` ```python\\ntool_call(location="北京", unit="celsius")\\n``` ````. The keyword arguments are read with `ast`
  as literals only; nothing is evaluated.
- "glm4" (GLM-4-9B-chat, GLM-4-9B-0414, GLM-Z1-9B-0414; THUDM/GLM-4's `process_response`): the body is the
  arguments as a JSON object, `get_weather\\n{"city": "北京"}`.

The role tokens must reach the parser as text (`<|assistant|>`): they are control tokens a client can never
produce (formats/guard.py), so their presence in the output is the model's own.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from danlu.outputs.calls import ToolCallParser, compact_arguments, json_object, register_tool_parser
from danlu.outputs.scan import JsonObjectScanner, partial_suffix

ASSISTANT, OBSERVATION = "<|assistant|>", "<|observation|>"
MARKERS = (ASSISTANT, OBSERVATION)
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")  # OpenAI's name alphabet plus ChatGLM3's "/text-to-speech"
FENCE = "```"


class GlmTurnParser(ToolCallParser):
    """Metadata line, then a plain answer or a call body; subclasses say where a body ends and what it means."""

    META, PLAIN, CALL = "meta", "plain", "call"

    def __init__(self, tools: Iterable | None = None, *, seed: int | None = None):
        super().__init__(tools, seed=seed)
        self._state = self.META
        self._raw = ""  # the metadata line of the call being read, given back if the call is broken
        self._name = ""
        self._trim = False  # a plain turn's first text: drop the space the tokenizer put before it

    def _drain(self, final: bool) -> None:
        steps = {self.META: self._meta, self.PLAIN: self._plain, self.CALL: self._body}
        while self._buffer and steps[self._state](final):
            pass
        if final and self._state == self.CALL:
            self._content(self._raw + self._buffer)
            self._buffer = ""

    def _meta(self, final: bool) -> bool:
        newline = self._buffer.find("\n")
        line = self._buffer if newline < 0 else self._buffer[:newline]
        if newline < 0 and not final and self._may_be_name(line):
            return False
        name = line.strip()
        if newline < 0 or (name and not self._is_name(name)):
            self._state = self.PLAIN  # not a metadata line: the model answered straight away
            return True
        self._raw, self._buffer = self._buffer[: newline + 1], self._buffer[newline + 1:]
        if name:
            self._name, self._state = name, self.CALL
            self._start_body()
        else:
            self._state, self._trim = self.PLAIN, True
        return True

    def _plain(self, final: bool) -> bool:
        found = [(i, m) for m in MARKERS if (i := self._buffer.find(m)) >= 0]
        if not found:
            keep = 0 if final else partial_suffix(self._buffer, *MARKERS)
            self._plain_text(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return False
        index, marker = min(found)
        self._plain_text(self._buffer[:index])
        self._buffer, self._state = self._buffer[index + len(marker):], self.META
        return True

    def _plain_text(self, text: str) -> None:
        if self._trim:
            text = text.lstrip()
            self._trim = not text
        self._content(text)

    def _body(self, final: bool) -> bool:
        markers = [i for m in MARKERS if (i := self._buffer.find(m)) >= 0]
        limit = min(markers) if markers else len(self._buffer)
        end = self._body_end(self._buffer[:limit])
        if end is None and not markers:
            if not self._body_may_start(self._buffer):
                self._content(self._raw)
                self._state = self.PLAIN
                return True
            return False  # at the end of the reply, _drain gives the unfinished call back
        cut = end if end is not None else limit
        body, self._buffer = self._buffer[:cut], self._buffer[cut:]
        arguments = self._arguments(body) if end is not None else None
        if arguments is None:
            self._content(self._raw + body)
        else:
            self._call(self._name, arguments, self._raw + body)
        self._state = self.PLAIN
        return True

    def _may_be_name(self, text: str) -> bool:
        """Whether a metadata line still being written can become a function name (else stream it as content)."""
        text = text.lstrip()
        if not text:
            return True
        if not FUNCTION_NAME.fullmatch(text):
            return False
        return self.known is None or any(name.startswith(text) for name in self.known)

    def _is_name(self, text: str) -> bool:
        return FUNCTION_NAME.fullmatch(text) is not None and (self.known is None or text in self.known)

    # --- what differs between ChatGLM3 and GLM-4 ----------------------------------------------
    def _start_body(self) -> None:
        """A call body begins (reset any per-body scanning state)."""

    def _body_end(self, text: str) -> int | None:
        """Where the body in `text` ends, once it does."""
        raise NotImplementedError

    def _body_may_start(self, text: str) -> bool:
        """Whether `text` can still become a call body."""
        raise NotImplementedError

    def _arguments(self, body: str) -> dict | None:
        """The call's arguments, or None when the body is not a valid call."""
        raise NotImplementedError


@register_tool_parser("chatglm3")
class ChatGLM3Parser(GlmTurnParser):
    """`name\\n```python\\ntool_call(k=v, …)\\n```` turns."""

    def _body_end(self, text: str) -> int | None:
        opening_line_end = text.find("\n", max(text.find(FENCE), 0))
        if FENCE not in text or opening_line_end < 0:
            return None
        close = text.find("\n" + FENCE, opening_line_end)
        return None if close < 0 else close + 1 + len(FENCE)

    def _body_may_start(self, text: str) -> bool:
        text = text.lstrip()
        return text.startswith(FENCE) or FENCE.startswith(text)

    def _arguments(self, body: str) -> dict | None:
        lines = body.strip().split("\n")
        if len(lines) < 2 or not lines[0].startswith(FENCE) or lines[-1].strip() != FENCE:
            return None
        return tool_call_keywords("\n".join(lines[1:-1]))


def tool_call_keywords(code: str) -> dict | None:
    """The keyword arguments of `tool_call(k=v, …)` when every value is a JSON-like Python literal; else None.
    Parsed with `ast` only: names, calls and attribute access in values are refused, never evaluated."""
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "tool_call"):
        return None
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        return None
    try:
        arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    return arguments if compact_arguments(arguments) is not None else None  # sets, bytes, complex: not JSON


@register_tool_parser("glm4")
class Glm4Parser(GlmTurnParser):
    """`name\\n{json arguments}` turns."""

    def __init__(self, tools: Iterable | None = None, *, seed: int | None = None):
        super().__init__(tools, seed=seed)
        self._scanner, self._scanned = JsonObjectScanner(), 0

    def _start_body(self) -> None:
        self._scanner, self._scanned = JsonObjectScanner(), 0

    def _body_end(self, text: str) -> int | None:
        if self._scanned > len(text):
            return None
        end = self._scanner.feed(text[self._scanned:])
        if end is None:
            self._scanned = len(text)
            return None
        return self._scanned + end

    def _body_may_start(self, text: str) -> bool:
        text = text.lstrip()
        return not text or text.startswith("{")

    def _arguments(self, body: str) -> dict | None:
        return json_object(body.strip())
