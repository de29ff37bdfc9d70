"""A remote's structured stream as the text danlu's parsers read, and the request fields passed through to it.

OpenAI-compatible servers send thinking as `delta.reasoning_content` (llama-server, DeepSeek, LM Studio) or
`delta.reasoning` (Ollama, newer vLLM), and tool calls as `delta.tool_calls` fragments. `RemoteText` writes the
thinking inside `<think>…</think>` as it arrives and each finished call as a Hermes `<tool_call>` block at the
end, so the server's reasoning splitter ("think") and tool-call parser ("hermes") recover exactly what the
remote said, through the same path as a local model's reply.
"""

from __future__ import annotations

import json
from typing import Any

#: Request fields a client's call may pass to a remote as they are.
PASSED = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort")


def chat_extras(passthrough: dict[str, Any]) -> dict[str, Any]:
    """The passed-through fields the openai client takes as arguments, the rest in `extra_body`."""
    known = {k: v for k, v in passthrough.items() if k in PASSED and v is not None}
    extra = {k: v for k, v in passthrough.items() if k not in PASSED and v is not None}
    return {**known, **({"extra_body": extra} if extra else {})}


class RemoteText:
    """Feed each stream choice; get the text to show; `finish()` gives the tool-call blocks."""

    def __init__(self) -> None:
        self._thinking = False
        self._calls: dict[int, dict] = {}

    def delta(self, choice: Any) -> str:
        delta = getattr(choice, "delta", None)
        if delta is None:  # a text completion's choice
            return getattr(choice, "text", None) or ""
        out = ""
        reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
        if reasoning:
            out += ("" if self._thinking else "<think>\n") + reasoning
            self._thinking = True
        if delta.content:
            out += self._end_thinking() + delta.content
        for fragment in getattr(delta, "tool_calls", None) or []:
            self._add_call(fragment)
        return out

    def _end_thinking(self) -> str:
        if not self._thinking:
            return ""
        self._thinking = False
        return "\n</think>\n\n"

    def _add_call(self, fragment: Any) -> None:
        call = self._calls.setdefault(fragment.index or 0, {"name": "", "arguments": ""})
        function = getattr(fragment, "function", None)
        if function is not None:
            call["name"] += function.name or ""
            call["arguments"] += function.arguments or ""

    def finish(self) -> str:
        """What is left: the end of an unclosed think block, then each call as a Hermes block."""
        text = self._end_thinking()
        for index in sorted(self._calls):
            call = self._calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except ValueError:
                arguments = call["arguments"]  # broken JSON: the parser will hand it back as content
            text += "\n<tool_call>\n" + json.dumps({"name": call["name"], "arguments": arguments},
                                                   ensure_ascii=False) + "\n</tool_call>"
        return text
