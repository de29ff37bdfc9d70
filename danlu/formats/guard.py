"""The injection guard for chat templates: text that came from a client can never become a control token.

A chat template sees many strings a client wrote: message contents, tool definitions (names, descriptions,
JSON-schema text), the arguments of earlier tool calls, tool results, past reasoning. Wherever such a
string holds the text of a control token (`<|im_end|>`, `<start_of_turn>`, `[gMASK]`, …), `Guard.wrap`
brackets that text between two markers made of private-use characters and a per-render nonce, before the
template runs. Whatever the template then does with the string (trim it, split it on `</think>`, JSON-encode
it, move it into the system turn), the markers travel with the text. `Guard.restore` turns every bracketed
span of the rendering into plain content and drops the markers, so the tokenizer reads it as text.

Control tokens come from the engine's vocabulary when the caller knows them, plus the common shapes of
control markup (`<|…|>`, `<s>`, `[INST]`, …) as a second net. A string that ends with the start of a control
token (`…<|im_`) or begins with the end of one (`end|>…`) has that piece bracketed too, so two client
strings placed side by side cannot join into one. A template that cuts a marker in half (a `truncate`) is
refused rather than guessed at.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any

from danlu.errors import DanluError
from danlu.formats.base import Segment, markup, plain, tidy

#: Control markup shapes seen across model families, guarded even when the vocabulary is unknown.
CONTROL_SHAPES = (
    r"<\|[^|<>\s]{1,48}\|>",  # <|im_end|>, <|user|>, <|endoftext|>, <|start_header_id|>
    r"</?s>|<unk>|<pad>|<bos>|<eos>|<mask>|<sep>|<cls>|<s_\d+>",
    r"<(?:start|end)_of_turn>|<(?:start|end)_of_image>",
    r"\[/?INST\]|\[gMASK\]|\[sMASK\]|\[MASK\]|\[SEP\]|\[CLS\]|\[UNK\]|\[PAD\]|\[\|(?:Human|AI)\|\]",
    r"<｜[^｜]{1,48}｜>",  # DeepSeek's full-width bars: <｜User｜>, <｜end▁of▁sentence｜>
)
MIN_PARTIAL = 2  # a piece of a token this long at a string's edge is bracketed too


class Guard:
    """Brackets control text in client strings before rendering; reads the brackets back after."""

    def __init__(self, control_tokens: Iterable[str] = ()):
        tokens = sorted({t for t in control_tokens if t and not t.isspace()}, key=len, reverse=True)
        self.tokens = tokens
        literal = [re.escape(t) for t in tokens]
        self._pattern = re.compile("|".join([*literal, *CONTROL_SHAPES]))
        self._prefixes = {t[:n] for t in tokens for n in range(MIN_PARTIAL, len(t))} | {"<|", "<｜"}
        self._suffixes = {t[-n:] for t in tokens for n in range(MIN_PARTIAL, len(t))} | {"|>", "｜>"}
        self._longest = max((len(t) for t in tokens), default=2)
        nonce = str(secrets.randbelow(10**12))  # digits: unchanged by `upper`, `lower`, `title`
        self.open, self.close = f"\ue000{nonce}\ue001", f"\ue002{nonce}\ue003"
        self._span = re.compile(re.escape(self.open) + "(.*?)" + re.escape(self.close), re.S)

    # --- before rendering -------------------------------------------------------------------
    def wrap(self, value: Any) -> Any:
        """A copy of `value` (str, dict, list, nested) with every string's control text bracketed."""
        if isinstance(value, str):
            return self._wrap_text(value)
        if isinstance(value, dict):
            return {self.wrap(k) if isinstance(k, str) else k: self.wrap(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.wrap(v) for v in value]
        return value

    def _wrap_text(self, text: str) -> str:
        text = text.replace("\ue000", "").replace("\ue002", "")  # a client cannot write a marker
        head, body, tail = self._edges(text)
        body = self._pattern.sub(lambda m: self._bracket(m.group(0)), body)
        return (self._bracket(head) if head else "") + body + (self._bracket(tail) if tail else "")

    def _edges(self, text: str) -> tuple[str, str, str]:
        """A leading piece that ends some token and a trailing piece that starts one, split off."""
        head = next((text[:n] for n in range(min(self._longest, len(text)) - 1, MIN_PARTIAL - 1, -1)
                     if text[:n] in self._suffixes and not self._pattern.match(text)), "")
        rest = text[len(head):]
        tail = next((rest[-n:] for n in range(min(self._longest, len(rest)) - 1, MIN_PARTIAL - 1, -1)
                     if rest[-n:] in self._prefixes), "")
        return head, rest[: len(rest) - len(tail)], tail

    def _bracket(self, text: str) -> str:
        return f"{self.open}{text}{self.close}"

    # --- after rendering --------------------------------------------------------------------
    def restore(self, segments: list[Segment]) -> list[Segment]:
        """Bracketed spans become plain content (markers dropped); the rest keeps its kind."""
        out: list[Segment] = []
        for segment in segments:
            cursor = 0
            for match in self._span.finditer(segment.text):
                out.append(Segment(segment.text[cursor : match.start()], segment.control))
                out.append(plain(match.group(1)))
                cursor = match.end()
            out.append(Segment(segment.text[cursor:], segment.control))
        self._refuse_stray(out)
        return tidy(out)

    def unwrap(self, text: str) -> str:
        """The rendering as text, markers dropped (for display and comparisons)."""
        return self._span.sub(lambda m: m.group(1), text)

    def _refuse_stray(self, segments: list[Segment]) -> None:
        if any(mark in s.text for s in segments for mark in ("\ue000", "\ue001", "\ue002", "\ue003")):
            raise DanluError("对话模板截断了消息，无法安全地区分用户文字与控制符 / the chat template cut a message in a way "
                             "that hides which text is the client's: it cannot be rendered safely")


def as_markup(text: str) -> list[Segment]:
    """A whole rendering as markup (for a template that rewrote content): the guard's brackets then
    carry the safety alone."""
    return [markup(text)] if text else []
