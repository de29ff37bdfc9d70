"""A conversation: history, prompt rendering, truncation, streaming replies, persistence.

Template markup is tokenized with special tokens on and message text with them off, so a user who
types `<|im_end|>` gets plain text, never a control token. The full prompt is re-rendered each turn;
the engine reuses the KV cache / recurrent state for the longest common token prefix, so only the
new turn is processed. When history outgrows the context, the oldest turns go first (the system
prompt stays) and the caller is told what was dropped — never a silent truncation (Ollama #2595).
A thinking model's reply is stored without its thinking (kept apart in `last_reasoning`), as Qwen3's
template drops past thinking anyway; `thinking` switches a hybrid model's template (`enable_thinking`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from danlu.backends.base import Chunk, Engine, GenerationParams
from danlu.errors import ContextOverflow
from danlu.formats import ChatFormat, Segment

#: After a truncation the prompt is cut to this share of the room left, so the next turns do not
#: each drop a message (and each re-read the whole history).
TRUNCATE_TO = 0.75


@dataclass
class Message:
    role: str  # system | user | assistant
    content: str

    def as_dict(self) -> dict:
        return {"role": self.role, "content": self.content}


@dataclass
class Prompt:
    """A rendered prompt: token ids, and how many old messages had to be dropped to fit."""

    ids: list[int]
    dropped: list[Message] = field(default_factory=list)


def tokenize_segments(engine: Engine, segments: list[Segment]) -> list[int]:
    """Markup with special tokens, content as plain text — the injection guard."""
    ids: list[int] = []
    for seg in segments:
        ids.extend(engine.tokenize(seg.text, special=seg.control))
    return ids


class Conversation:
    """One chat with one engine. `on_message` is called for each finished message (persistence)."""

    def __init__(self, engine: Engine, fmt: ChatFormat, params: GenerationParams, system: str | None = None,
                 on_message: Callable[[Message], None] | None = None, model_stops: tuple[str, ...] = (),
                 thinking: bool | None = None):
        self.engine, self.fmt, self.params = engine, fmt, params
        self.thinking = thinking  # None: the template's default; only a hybrid format takes the switch
        self.last_reasoning = ""
        self.model_stops = tuple(fmt.stop_strings) + tuple(model_stops)
        self.system = system
        self.history: list[Message] = []
        self.on_message = on_message or (lambda m: None)
        self.last_prompt: Prompt | None = None
        self.last_reply_ids: list[int] = []

    # --- rendering --------------------------------------------------------------------------
    def messages(self, history: list[Message] | None = None) -> list[dict]:
        msgs = [Message("system", self.system)] if self.system and self.fmt.supports_system else []
        return [m.as_dict() for m in msgs + (self.history if history is None else history)]

    def render(self, history: list[Message] | None = None) -> list[int]:
        options = {"enable_thinking": self.thinking} if self.thinking is not None and self.fmt.thinking == "hybrid" else {}
        return tokenize_segments(self.engine, self.fmt.render(self.messages(history), True, **options))

    def split_reply(self, text: str) -> tuple[str, str]:
        """(thinking, answer) of a reply, for formats whose models think aloud."""
        if not self.fmt.reasoning:
            return "", text
        from danlu.outputs.reasoning import strip_reasoning

        return strip_reasoning(text, self.fmt.reasoning, thinking=self.thinking is not False)

    def build_prompt(self) -> Prompt:
        """Render the history; drop the oldest turns while it does not leave room for a reply."""
        limited = self._format_limit()
        room = self.engine.n_ctx - self.reserve()
        ids = self.render()
        if len(ids) <= room:
            return Prompt(ids, limited)
        prompt = self._truncated(int(room * TRUNCATE_TO), room)
        return Prompt(prompt.ids, limited + prompt.dropped)

    def _format_limit(self) -> list[Message]:
        """Some models' reference code keeps only the last N utterances (gpt2-dialogbot 3, EVA2 8)."""
        limit = self.fmt.max_history_messages
        if not limit or len(self.history) <= limit:
            return []
        dropped, self.history = self.history[:-limit], self.history[-limit:]
        return dropped

    def reserve(self) -> int:
        return min(self.params.max_tokens, self.engine.n_ctx // 2)

    def _truncated(self, target: int, room: int) -> Prompt:
        kept = list(self.history)
        dropped: list[Message] = []
        ids = self.render(kept)
        while len(ids) > target and len(kept) > 1:
            dropped.extend(kept[: _turn_length(kept)])
            kept = kept[_turn_length(kept):]
            ids = self.render(kept)
        if len(ids) > room:
            raise ContextOverflow(
                f"这条消息有 {len(ids)} 个 token，上下文只有 {self.engine.n_ctx}（需为回复留 {self.reserve()}）/ "
                f"the message needs {len(ids)} tokens but the context is {self.engine.n_ctx} with "
                f"{self.reserve()} kept for the reply: shorten it, lower max_tokens, or load with a larger --ctx"
            )
        self.history = kept
        return Prompt(ids, dropped)

    # --- turns ------------------------------------------------------------------------------
    def send(self, text: str) -> Iterator[Chunk]:
        """Add a user message and stream the reply; the reply is stored when it ends."""
        user = Message("user", text)
        self.history.append(user)
        try:
            prompt = self.build_prompt()
        except ContextOverflow:
            self.history.pop()
            raise
        self.on_message(user)
        yield from self._reply(prompt)

    def retry(self) -> Iterator[Chunk]:
        """Drop the last reply and generate another for the same user message."""
        if self.history and self.history[-1].role == "assistant":
            self.history.pop()
        if not self.history or self.history[-1].role != "user":
            return iter(())
        return self._reply(self.build_prompt())

    def _reply(self, prompt: Prompt) -> Iterator[Chunk]:
        self.last_prompt = prompt
        params = replace(self.params, stop=_merge(self.model_stops, self.params.stop))
        parts: list[str] = []
        finish = "cancelled"
        self.last_reply_ids = []
        try:
            for chunk in self.engine.generate(prompt.ids, params):
                parts.append(chunk.text)
                self.last_reply_ids.extend(chunk.token_ids)
                finish = chunk.finish_reason or finish
                yield chunk
        finally:  # also on Ctrl-C / a closed generator: keep what was said
            self.last_reasoning, answer = self.split_reply("".join(parts))
            self._store_reply(self.fmt.postprocess(answer).strip(), finish)

    def continue_reply(self) -> Iterator[Chunk]:
        """ChatRWKV's +++: go on generating the last reply from where it stopped."""
        if not (self.last_prompt and self.history and self.history[-1].role == "assistant"):
            return
        ids = self.last_prompt.ids + self.last_reply_ids
        params = replace(self.params, stop=_merge(self.model_stops, self.params.stop))
        parts: list[str] = []
        try:
            for chunk in self.engine.generate(ids, params):
                parts.append(chunk.text)
                self.last_reply_ids.extend(chunk.token_ids)
                yield chunk
        finally:  # the caller rewrites the stored transcript (the message changed in place)
            self.history[-1].content += self.fmt.postprocess("".join(parts))

    def _store_reply(self, text: str, finish: str) -> None:
        if not text and finish == "cancelled":
            return
        reply = Message("assistant", text)
        self.history.append(reply)
        self.on_message(reply)

    def reset(self) -> None:
        self.history.clear()

    def load(self, messages: list[Message]) -> None:
        """Restore a saved conversation (system prompt included, if any)."""
        systems = [m.content for m in messages if m.role == "system"]
        self.system = systems[-1] if systems else self.system  # the latest /system wins
        self.history = [m for m in messages if m.role != "system"]


def _turn_length(history: list[Message]) -> int:
    """A turn is a user message and the assistant replies after it."""
    n = 1
    while n < len(history) and history[n].role != "user":
        n += 1
    return n


def _merge(model_stops: tuple[str, ...], user_stops: list[str]) -> list[str]:
    """User stop strings are added to the model's own, never substituted (FastChat #2282)."""
    return list(dict.fromkeys([*model_stops, *user_stops]))
