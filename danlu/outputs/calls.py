"""The vocabulary of tool-call parsing: calls, streaming deltas, the parser base class and the registry.

A parser is fed the reply's text piece by piece. It passes plain text through as content at once, buffers what
may be a call until the call is complete, and only then emits it: a `ToolCallDelta` with the call's index, id and
name (arguments ""), then its arguments, the shape OpenAI streams and the official SDK assembles. A call the model
got wrong (broken JSON, an unknown function, no end) goes back into the content verbatim; a parser never raises.
The protocols themselves are in hermes_calls.py (Hermes), tool_calls.py (Llama 3.1 JSON) and glm_calls.py
(ChatGLM3, GLM-4).
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from danlu.registry import Registry
from danlu.outputs.scan import split_trailing_space


@dataclass(frozen=True)
class ToolCall:
    """One complete call: `arguments` is a JSON object as compact text, Chinese kept as characters."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict:
        """The call as an OpenAI `message.tool_calls` entry."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolCallDelta:
    """A streaming fragment of call `index`: the first carries id and name, later ones argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict:
        """The fragment as an OpenAI `delta.tool_calls` entry."""
        function = {"arguments": self.arguments} if self.name is None else {"name": self.name, "arguments": ""}
        head = {"id": self.id, "type": "function"} if self.id is not None else {}
        return {"index": self.index, **head, "function": function}


@dataclass
class Parsed:
    """What a piece of the reply turned out to be: content text and call fragments, in that order."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)

    def __add__(self, other: Parsed) -> Parsed:
        return Parsed(self.content + other.content, [*self.calls, *other.calls])


def tool_names(tools: Iterable | None) -> frozenset[str] | None:
    """The function names in OpenAI tool definitions (or bare function dicts, or names); None when not given."""
    if tools is None:
        return None
    names = set()
    for tool in tools:
        if isinstance(tool, str):
            names.add(tool)
        elif isinstance(tool, dict):
            function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
            if isinstance(function.get("name"), str):
                names.add(function["name"])
    return frozenset(names)


class CallIds:
    """Call ids as OpenAI writes them: `call_` and 24 hex characters; a seed makes them repeatable for tests."""

    def __init__(self, seed: int | None = None):
        self._random = random.Random(seed) if seed is not None else None

    def next(self) -> str:
        if self._random is None:
            return "call_" + secrets.token_hex(12)
        return f"call_{self._random.getrandbits(96):024x}"


def compact_arguments(arguments: dict) -> str | None:
    """Arguments re-serialised compactly with Chinese intact; None if they are not JSON data."""
    try:
        return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def json_object(text: str) -> dict | None:
    """`text` as a JSON object, or None when it is anything else or broken."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def call_parts(obj: dict | None, *, name_key: str = "name") -> tuple[object, object] | None:
    """(name, arguments) from a call object; arguments may be under "arguments" or "parameters", may be a JSON
    string, and default to {} for a function without parameters."""
    if obj is None:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = json_object(arguments)
    return obj.get(name_key), arguments


class ToolCallParser:
    """Base of every protocol: content with the whitespace around calls trimmed, and call emission.

    Subclasses implement `_drain(final)`, which consumes `self._buffer` and reports through `_content(text)`
    and `_call(name, arguments, raw)`. Whitespace next to a valid call is dropped (so `\\n` between two calls is
    not sent as content); elsewhere it is passed on once the text after it shows it is not followed by a call."""

    def __init__(self, tools: Iterable | None = None, *, seed: int | None = None):
        self.known = tool_names(tools)
        self.calls: list[ToolCall] = []
        self._ids = CallIds(seed)
        self._buffer = ""
        self._out = Parsed()
        self._held_space = ""
        self._after_call = False

    def feed(self, text: str) -> Parsed:
        """One piece of the reply; returns the content and call fragments that are final so far."""
        self._buffer += text
        self._drain(final=False)
        return self._take()

    def flush(self) -> Parsed:
        """The reply ended: what is still buffered is decided now (an unfinished call becomes content)."""
        self._drain(final=True)
        if self._held_space and not self._after_call:
            self._out.content += self._held_space
        self._held_space = ""
        return self._take()

    def _drain(self, final: bool) -> None:
        raise NotImplementedError

    def _take(self) -> Parsed:
        out, self._out = self._out, Parsed()
        return out

    def _content(self, text: str) -> None:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if text:
            body, self._held_space = split_trailing_space(self._held_space + text)
            self._out.content += body

    def _call(self, name, arguments, raw: str) -> bool:
        """Emit a call if it is valid, else give `raw` back as content; whether it was a call."""
        text = compact_arguments(arguments) if isinstance(arguments, dict) else None
        if text is None or not self._known_name(name):
            self._content(raw)
            return False
        call = ToolCall(self._ids.next(), name, text)
        index = len(self.calls)
        self.calls.append(call)
        self._out.calls += [ToolCallDelta(index, call.id, name, ""), ToolCallDelta(index, arguments=text)]
        self._held_space, self._after_call = "", True
        return True

    def _known_name(self, name) -> bool:
        return isinstance(name, str) and bool(name) and (self.known is None or name in self.known)


_REGISTRY: Registry[Callable[..., ToolCallParser]] = Registry(("工具调用协议", "tool-call protocol"))


def register_tool_parser(name: str) -> Callable:
    """Decorator: register a parser class under the protocol's name."""
    return lambda factory: _REGISTRY.add(name, factory)


def get_tool_parser(name: str) -> Callable[..., ToolCallParser]:
    """The parser class for protocol `name`; call it with the request's `tools` (and a `seed` in tests)."""
    return _REGISTRY.get(name)


def tool_parser_names() -> list[str]:
    """Names of all registered tool-call protocols, sorted."""
    return _REGISTRY.names()
