"""Thinking splitters: a model's reply cut into its reasoning (the think block) and its content (the answer).

One splitter per family, registered by name like the prompt formats; `ChatFormat.reasoning` names one:

    splitter = get_reasoning("think")()          # a fresh state machine per reply
    for piece in pieces:                          # text pieces as the engine decodes them
        part = splitter.feed(piece)               # Split(reasoning="…", content="…"), either may be ""
    part = splitter.flush()                       # the end of the reply: whatever was held back

Families:
- "think": `<think>…</think>` written by the model itself (Qwen3 hybrid, QwQ, GLM-Z1 when its template leaves the
  tag to the model). Text before the opening tag is content; only the first block is thinking, later tags are
  content as written.
- "r1": the reply starts inside the thinking because the template's generation prompt already wrote `<think>\\n`
  (DeepSeek-R1 distills, Qwen3-*-Thinking-2507, GLM-Z1-0414's `<|assistant|>\\n<think>`); an opening tag the
  model writes anyway is dropped.
- "rwkv-g1": RWKV-7 G1. Its think-mode prompt ends `Assistant: <think` (BlinkDL's model card and the rwkv pip
  README), so the reply starts inside the thinking with the `>` that completes the tag; the fake-think prompt
  (`Assistant: <think>\\n</think`, thinking off) leaves a `>` that completes the closing tag.

Rules shared by all families, as llama.cpp and vLLM apply them: whitespace at both ends of the reasoning is
trimmed, whitespace right after `</think>` is dropped from the content, so Qwen3's empty `<think>\\n\\n</think>\\n\\n`
yields no reasoning and leaves nothing in the content. A tag cut across pieces (even `<thi` + `nk>`) is held back
until it is whole or cannot be a tag any more.

A reply that never closes its think block (cut by max_tokens, or an R1 that never answers) is reasoning to the
end: `flush` does not turn it into content. vLLM's R1 parser does the same; llama.cpp has at times returned it as
content. Reasoning is what it is, the stream already sent it as reasoning and cannot take it back, and
evaluation must not read an unfinished thought as the answer.

Thinking budget: when the service has counted enough reasoning tokens it appends `splitter.closing_text` to the
generation as if the model wrote it (and feeds it to the splitter), so the model goes on to the answer, as
llama-server's `--reasoning-budget` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from danlu.registry import Registry
from danlu.outputs.scan import partial_suffix, split_trailing_space

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
BEFORE, INSIDE, AFTER = "before", "inside", "after"  # where the reply is relative to its think block


@dataclass(frozen=True)
class Split:
    """What a piece of the reply turned out to be: thinking, answer, or some of each."""

    reasoning: str = ""
    content: str = ""

    def __add__(self, other: Split) -> Split:
        return Split(self.reasoning + other.reasoning, self.content + other.content)


_REGISTRY: Registry[Callable[..., "ThinkSplitter"]] = Registry(("思考解析器", "reasoning parser"))


def register_reasoning(name: str) -> Callable:
    """Decorator: register a splitter factory (a class, usually) under `name`."""
    return lambda factory: _REGISTRY.add(name, factory)


def get_reasoning(name: str) -> Callable[..., ThinkSplitter]:
    """The splitter factory called `name`; call it (`thinking=False` when the prompt turned thinking off)."""
    return _REGISTRY.get(name)


def reasoning_names() -> list[str]:
    """Names of all registered reasoning splitters, sorted."""
    return _REGISTRY.names()


def strip_reasoning(text: str, name: str, *, thinking: bool = True) -> tuple[str, str]:
    """A whole reply split at once: (reasoning, content). Evaluation strips thinking before its answer regex."""
    splitter = get_reasoning(name)(thinking=thinking)
    whole = splitter.feed(text) + splitter.flush()
    return whole.reasoning, whole.content


@register_reasoning("think")
class ThinkSplitter:
    """`<think>…</think>` the model writes itself. Subclasses change where the reply starts and what the prompt
    already wrote (`lead`: text the model may begin with that only completes the prompt's tag, dropped)."""

    closing = f"\n{CLOSE_TAG}\n\n"  # what the service appends when the thinking budget is spent

    def __init__(self, *, thinking: bool = True):
        self._phase = BEFORE
        self._lead = ""
        self._trim_reasoning = False  # at the start of the think block: drop leading whitespace
        self._trim_content = False  # right after the block: drop leading whitespace
        self._held_space = ""  # reasoning's trailing whitespace, dropped if the block ends there
        self._buffer = ""
        self._parts: list[Split] = []
        self.thinking = thinking

    @property
    def in_reasoning(self) -> bool:
        """Whether the reply is inside its think block now (the service counts these tokens for the budget)."""
        return self._phase == INSIDE

    @property
    def closing_text(self) -> str:
        """The text that closes the think block now ("" outside it), without doubling a newline just written."""
        if not self.in_reasoning:
            return ""
        return self.closing.lstrip("\n") if self._held_space.endswith("\n") else self.closing

    def feed(self, text: str) -> Split:
        """One piece of the reply; returns what can be told apart so far."""
        self._buffer += text
        return self._drain(final=False)

    def flush(self) -> Split:
        """The reply ended: release what was held back (an unclosed block stays reasoning)."""
        part = self._drain(final=True)
        self._held_space = ""
        return part

    # --- the state machine --------------------------------------------------------------------
    def _drain(self, final: bool) -> Split:
        steps = {BEFORE: self._before, INSIDE: self._inside, AFTER: self._after}
        while self._buffer and (self._skip_lead(final) if self._lead else steps[self._phase](final)):
            pass
        parts, self._parts = self._parts, []
        return sum(parts, Split())

    def _skip_lead(self, final: bool) -> bool:
        text = self._buffer.lstrip() if self._phase == INSIDE else self._buffer
        if text.startswith(self._lead):
            self._buffer, self._lead = text[len(self._lead):], ""
        elif self._lead.startswith(text) and not final:
            return False  # could still be the lead: wait for the next piece
        else:
            self._lead = ""
        return True

    def _before(self, final: bool) -> bool:
        found = self._buffer.find(OPEN_TAG)
        if found >= 0:
            self._content(self._buffer[:found])
            self._enter(INSIDE, self._buffer[found + len(OPEN_TAG):])
            return True
        self._release(self._content, 0 if final else partial_suffix(self._buffer, OPEN_TAG))
        return False

    def _inside(self, final: bool) -> bool:
        found = self._buffer.find(CLOSE_TAG)
        if found >= 0:
            self._reasoning(self._buffer[:found])
            self._held_space = ""
            self._enter(AFTER, self._buffer[found + len(CLOSE_TAG):])
            return True
        self._release(self._reasoning, 0 if final else partial_suffix(self._buffer, CLOSE_TAG))
        return False

    def _after(self, final: bool) -> bool:
        self._release(self._content, 0)
        return False

    def _enter(self, phase: str, rest: str) -> None:
        self._phase, self._buffer = phase, rest
        self._trim_reasoning = phase == INSIDE
        self._trim_content = phase == AFTER

    def _release(self, sink: Callable[[str], None], keep: int) -> None:
        """Send all but the last `keep` characters (a possible partial tag) to `sink`."""
        cut = len(self._buffer) - keep
        sink(self._buffer[:cut])
        self._buffer = self._buffer[cut:]

    def _content(self, text: str) -> None:
        if self._trim_content:
            text = text.lstrip()
            self._trim_content = not text
        if text:
            self._parts.append(Split(content=text))

    def _reasoning(self, text: str) -> None:
        if self._trim_reasoning:
            text = text.lstrip()
            self._trim_reasoning = not text
        if text:
            body, self._held_space = split_trailing_space(self._held_space + text)
            if body:
                self._parts.append(Split(reasoning=body))


@register_reasoning("r1")
class R1Splitter(ThinkSplitter):
    """The reply starts inside the thinking (the prompt wrote `<think>\\n`); an opening tag is tolerated. With
    `thinking=False` (a prompt that closed the block itself) it reads the reply as "think" does."""

    def __init__(self, *, thinking: bool = True):
        super().__init__(thinking=thinking)
        if thinking:
            self._enter(INSIDE, "")
            self._lead = OPEN_TAG


@register_reasoning("rwkv-g1")
class RwkvG1Splitter(ThinkSplitter):
    """RWKV-7 G1: the think-mode prompt ends `Assistant: <think`, so the reply starts inside the thinking with
    the `>` that finishes the tag. With `thinking=False` the fake-think prompt (`<think>\\n</think`) leaves a `>`
    that finishes the closing tag; the reply is content, and a think block the model opens itself still counts.
    The budget's closing text has no blank line: RWKV chat uses "\\n\\n" to end a turn."""

    closing = f"\n{CLOSE_TAG}"
    THINK_PROMPT = "Assistant: <think"  # how a generation prompt for each mode ends (for the format renderer)
    NO_THINK_PROMPT = "Assistant: <think>\n</think"

    def __init__(self, *, thinking: bool = True):
        super().__init__(thinking=thinking)
        self._lead = ">"
        if thinking:
            self._enter(INSIDE, "")
        else:
            self._trim_content = True
