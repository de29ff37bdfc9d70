"""Thinking in evaluation: a model's thinking mode, the switch a run asks for, how long a `gen` reply may be,
and a reply streamed, timed and split into its thinking and its answer.

A reasoning model writes "不是A，因为……" while it thinks; the official regexes would read that A. So `gen` reads
its answer from the content only, after the model's own reasoning parser (danlu/outputs/reasoning.py) took the
think block off, and it keeps the whole reply in the log. The reply is streamed through `engine.generate` so the
seconds until the think block closed are measured, not guessed. A reply cut inside its thinking (by the token
limit or the context) never reached an answer: it is counted wrong and flagged, never read for a letter.

A hybrid model (Qwen3) can be run with thinking on and off (`--thinking on|off|both`); a model that always
thinks (DeepSeek-R1 distills) or never does has no switch, and asking for one is a clear error instead of a
setting that silently does nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

from danlu.errors import DanluError

MODES = ("on", "off")  # what one run can be; "both" runs the two one after the other
SWITCHES = (*MODES, "both")
ANSWER_ALLOWANCE = 64  # tokens for the answer itself ("答案：B" and a sentence), after any thinking
DEFAULT_THINKING_BUDGET = 4096  # a thinking model the catalog says nothing about (a folder, a GGUF)
UNFINISHED = "思考未结束（记为错）/ thinking did not finish (counted wrong)"


def model_mode(loaded: Any) -> str:
    """"hybrid", "always" or "never": the catalog's word first, else what the model's template shows."""
    fmt = loaded.fmt
    if fmt is None:
        return "never"
    spec = loaded.resolved.spec
    declared = getattr(spec, "thinking", None) if spec is not None else None
    if declared and (declared != "never" or not fmt.reasoning):
        return declared
    return fmt.thinking


def check_switch(loaded: Any, switch: str | None, protocol: str) -> None:
    """Refuse a thinking switch the run cannot honour: an unknown value, a protocol that does not generate,
    a model whose thinking cannot be switched."""
    if switch is None:
        return
    if switch not in SWITCHES:
        raise DanluError(f"--thinking 只能是 on、off 或 both，不是 {switch!r} / --thinking must be on, off or both, "
                         f"not {switch!r}")
    if protocol != "gen":
        raise DanluError("--thinking 只用于 --protocol gen（ao、ppl 不生成文字，也就没有思考）/ --thinking applies to "
                         "--protocol gen only (ao and ppl generate nothing, so nothing thinks)")
    kind = model_mode(loaded)
    if kind == "always":
        raise DanluError("这个模型总是先思考再回答，不能开关思考：去掉 --thinking 即可（记为思考）/ this model always "
                         "thinks before it answers, its thinking cannot be switched: drop --thinking")
    if kind != "hybrid":
        raise DanluError("这个模型没有思考模式，不能开关思考：去掉 --thinking，或换用 Qwen3 这类混合思考模型 / this "
                         "model has no thinking mode to switch: drop --thinking, or use a hybrid model such as Qwen3")
    if not switch_changes_prompt(loaded.fmt):
        raise DanluError(f"对话格式 {loaded.fmt.name} 没有思考开关（enable_thinking 不改变提示）：请用带官方对话模板的权重 / "
                         f"prompt format {loaded.fmt.name} has no thinking switch (enable_thinking changes nothing in the "
                         "prompt): use weights that ship the model's own chat template")


def switch_changes_prompt(fmt: Any) -> bool:
    """Whether `enable_thinking` changes the prompt at all: a hybrid model rendered by a named fallback (ChatML for
    a Qwen3 GGUF without its template) would otherwise run "off" while still thinking."""
    from danlu.formats import to_text

    probe = [{"role": "user", "content": "1+1=?"}]
    return to_text(fmt.render(probe, True, enable_thinking=True)) != to_text(fmt.render(probe, True, enable_thinking=False))


def switch_value(thinking: str | None) -> bool | None:
    """The template's `enable_thinking` for a run: True, False, or None to leave the template's default."""
    return None if thinking is None else thinking == "on"


def thinks(loaded: Any, thinking: str | None) -> bool:
    """Whether a run's replies start with thinking (and so need the thinking budget)."""
    fmt = loaded.fmt
    if fmt is None or not fmt.reasoning or model_mode(loaded) == "never":
        return False
    return thinking != "off"


def gen_max_tokens(loaded: Any, thinking: str | None, max_tokens: int | None = None) -> int:
    """A gen reply's token limit: the thinking budget (`max_tokens` when given, else the catalog's
    `thinking_budget`) plus the answer allowance when the reply thinks; the answer allowance alone otherwise, so
    both modes of a hybrid model get the same room for the answer itself."""
    if not thinks(loaded, thinking):
        return ANSWER_ALLOWANCE
    spec = loaded.resolved.spec
    budget = max_tokens or getattr(spec, "thinking_budget", None) or DEFAULT_THINKING_BUDGET
    return budget + ANSWER_ALLOWANCE


def splitter_factory(loaded: Any, thinking: str | None) -> Callable[[], Any] | None:
    """A fresh thinking splitter per reply (the format's reasoning parser), None for a model that does not think."""
    fmt = loaded.fmt
    if fmt is None or not fmt.reasoning:
        return None
    from danlu.outputs.reasoning import get_reasoning

    make, on = get_reasoning(fmt.reasoning), switch_value(thinking) is not False
    return lambda: make(thinking=on)


# --- one reply ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenStats:
    """Where one reply's tokens and seconds went. `reasoning_s` is the time from the request until the think
    block closed (all of `total_s` when it never closed, 0 when there was none)."""

    reasoning_tokens: int = 0
    reasoning_s: float = 0.0
    answer_tokens: int = 0
    total_s: float = 0.0
    thinking_unfinished: bool = False


@dataclass(frozen=True)
class Reply:
    text: str  # the whole reply as generated, thinking included
    content: str  # the answer part: what the regexes read
    stats: GenStats


class ReplyMeter:
    """Feeds a streamed reply to a thinking splitter and counts which side each chunk's tokens fell on. A chunk
    that opens or closes the think block counts as thinking (the tags are part of it)."""

    def __init__(self, splitter: Any | None, start: float):
        self.splitter, self.start = splitter, start
        self.pieces: list[str] = []
        self.content: list[str] = []
        self.reasoning_tokens = self.answer_tokens = 0
        self.closed_s: float | None = None

    def feed(self, text: str, n_tokens: int, now: float) -> None:
        self.pieces.append(text)
        if self.splitter is None:
            self.content.append(text)
            self.answer_tokens += n_tokens
            return
        was_inside = self.splitter.in_reasoning
        part = self.splitter.feed(text)
        self.content.append(part.content)
        touched = was_inside or bool(part.reasoning)
        if touched or self.splitter.in_reasoning:
            self.reasoning_tokens += n_tokens
        else:
            self.answer_tokens += n_tokens
        if touched and not self.splitter.in_reasoning and self.closed_s is None:
            self.closed_s = now - self.start

    def finish(self, now: float) -> Reply:
        unfinished = False
        if self.splitter is not None:
            self.content.append(self.splitter.flush().content)
            unfinished = self.splitter.in_reasoning
        total = now - self.start
        reasoning_s = total if unfinished else (self.closed_s or 0.0)
        stats = GenStats(self.reasoning_tokens, round(reasoning_s, 4), self.answer_tokens, round(total, 4), unfinished)
        return Reply("".join(self.pieces), "".join(self.content), stats)


def read_reply(engine: Any, ids: Sequence[int], params: Any, splitter: Any | None = None,
               clock: Callable[[], float] = time.perf_counter) -> Reply:
    """Generate one reply through the streaming primitive, split and timed as it comes."""
    meter = ReplyMeter(splitter, clock())
    for chunk in engine.generate(ids, params):
        meter.feed(chunk.text, len(chunk.token_ids), clock())
    return meter.finish(clock())


# --- many replies ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThinkingSummary:
    """Means per question over a run's replies, and how many were cut inside their thinking."""

    n: int
    reasoning_tokens: float
    reasoning_s: float
    answer_tokens: float
    total_s: float
    unfinished: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(predictions: Iterable[Any]) -> ThinkingSummary:
    """Mean thinking tokens and seconds (and answer tokens, total seconds) per question."""
    rows = list(predictions)
    n = len(rows)

    def mean(name: str) -> float:
        return round(sum(getattr(p, name) for p in rows) / n, 3) if n else 0.0

    return ThinkingSummary(n, mean("reasoning_tokens"), mean("reasoning_s"), mean("answer_tokens"), mean("total_s"),
                           sum(1 for p in rows if p.thinking_unfinished))
