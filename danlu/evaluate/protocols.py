"""How a model answers a four-option question: `ao`, `ppl` and `gen`, all on the Engine contract.

- `ao` (answer only, the official C-Eval/CMMLU protocol for base models): the official prompt, then
  the next-token logits of A/B/C/D at the last position; argmax. One forward pass per question. The
  full prompt is tokenized as one string (so tokens at the shot/question boundary are the ones the
  official code and lm-evaluation-harness get) and the engine reuses its KV cache for the longest
  common token prefix: questions of one subject share the few-shot prefix, which is decoded once.
- `ppl` (OpenCompass-style): one prompt per option with that option's text filled in after the answer
  cue; the option with the lowest perplexity (mean cross-entropy over the answer tokens, the prompt
  masked) wins. Scoring the letter instead would be `ao` again (one token, same distribution), so the
  option's content is scored, as OpenCompass does for cloze-style multiple choice.
- `gen` (chat models, remote endpoints): greedy generation, then the official extraction regexes on the
  answer: a thinking model's think block is taken off first by its reasoning parser (evaluate/thinking.py),
  and a reply cut inside its thinking names no option.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from danlu.backends.base import Engine, GenerationParams
from danlu.errors import DanluError

from .datasets import LETTERS, Question
from .thinking import ANSWER_ALLOWANCE, GenStats, read_reply

PROTOCOLS = ("ao", "ppl", "gen")


@dataclass(frozen=True)
class Answer:
    """A prediction (None when generated text named no option) and the per-option scores behind it."""

    pred: str | None
    scores: tuple[float, ...] = ()
    text: str = ""  # the generated reply, thinking included (gen only)
    stats: GenStats | None = None  # where the reply's tokens and seconds went (gen only)


def wants_bos(engine: Engine) -> bool:
    """Prepend BOS when the model has one (Gemma, Llama), as the official evaluators and HF tokenizers do."""
    return engine.bos_token_id() is not None


def continuation_ids(engine: Engine, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the way lm-evaluation-harness splits them: encode the whole string,
    cut at the context's length — so a merge across the boundary is seen, not hidden."""
    bos = wants_bos(engine)
    ctx = engine.tokenize(context, add_bos=bos)
    whole = engine.tokenize(context + continuation, add_bos=bos)
    if whole[: len(ctx)] != ctx:  # the boundary merged: score the continuation tokenized on its own
        return ctx, engine.tokenize(continuation)
    return ctx, whole[len(ctx):]


class AnswerOnly:
    """`ao`: next-token logits of the four letters after the official prompt."""

    name = "ao"

    def __init__(self, engine: Engine, answer_tail: str):
        if not engine.capabilities.logits:
            raise DanluError("该模型不提供 logits，请用 --protocol gen / this model gives no logits: use --protocol gen")
        self.engine = engine
        # The letter a model would write after the answer cue, as a token in that position
        # (a SentencePiece model with a dummy prefix would otherwise get "▁A" instead of "A").
        self.letter_ids = [continuation_ids(engine, answer_tail, letter)[1][0] for letter in LETTERS]

    def answer(self, prefix: str, question_text: str, question: Question) -> Answer:
        ids = self.engine.tokenize(prefix + question_text, add_bos=wants_bos(self.engine))
        logits = np.asarray(self.engine.next_token_logits(ids))
        scores = tuple(float(logits[i]) for i in self.letter_ids)
        return Answer(LETTERS[int(np.argmax(scores))], scores)


class Perplexity:
    """`ppl`: the option whose text after the answer cue has the lowest mean token cross-entropy."""

    name = "ppl"

    def __init__(self, engine: Engine, answer_tail: str):
        if not engine.capabilities.logits:
            raise DanluError("该模型不提供 logits，请用 --protocol gen / this model gives no logits: use --protocol gen")
        self.engine = engine

    def answer(self, prefix: str, question_text: str, question: Question) -> Answer:
        context = prefix + question_text
        scores = tuple(self._mean_loglik(context, option) for option in question.choices)
        return Answer(LETTERS[int(np.argmax(scores))], scores)

    def _mean_loglik(self, context: str, option: str) -> float:
        ctx, cont = continuation_ids(self.engine, context, option)
        if not cont:  # an empty option: nothing to score, never the best
            return float("-inf")
        return self.engine.loglikelihood(ctx, cont) / len(cont)


class Generate:
    """`gen`: greedy generation of a reply, then `extract_answer` on its answer part. `render` turns the prompt
    into token ids (a chat template for chat models, plain text for base models); `splitter` makes a fresh
    thinking splitter per reply (None: the whole reply is the answer); `clock` times the reply."""

    name = "gen"

    def __init__(self, engine: Engine, render: Callable[[str], list[int]], max_tokens: int = ANSWER_ALLOWANCE,
                 stop: Sequence[str] = (), splitter: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.engine, self.render, self.splitter, self.clock = engine, render, splitter, clock
        self.params = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_k=1, seed=0, stop=list(stop))

    def answer(self, prefix: str, question_text: str, question: Question) -> Answer:
        splitter = self.splitter() if self.splitter else None
        reply = read_reply(self.engine, self.render(prefix + question_text), self.params, splitter, self.clock)
        pred = None if reply.stats.thinking_unfinished else extract_answer(reply.content)
        return Answer(pred, (), reply.text, reply.stats)


# --- answer extraction --------------------------------------------------------------------------
# C-Eval's answer-only patterns (code/evaluator_series/evaluators/chatgpt.py `extract_ans`), in order;
# the first pattern that matches anything decides, and its last match is the answer.
CEVAL_PATTERNS = [re.compile(p) for p in (
    r"^选([A-D])", r"^选项([A-D])", r"答案是\s?选?项?\s?([A-D])", r"答案为\s?选?项?\s?([A-D])",
    r"答案应为\s?选?项?\s?([A-D])", r"答案选\s?选?项?\s?([A-D])", r"答案是:\s?选?项?\s?([A-D])",
    r"答案应该是:\s?选?项?\s?([A-D])", r"正确的一项是\s?([A-D])", r"答案为:\s?选?项?\s?([A-D])",
    r"答案应为:\s?选?项?\s?([A-D])", r"答案:\s?选?项?\s?([A-D])", r"答案是：\s?选?项?\s?([A-D])",
    r"答案应该是：\s?选?项?\s?([A-D])", r"答案为：\s?选?项?\s?([A-D])", r"答案应为：\s?选?项?\s?([A-D])",
    r"答案：\s?选?项?\s?([A-D])",
)]
# CMMLU's `extract_choice` (src/mp_utils.py): single matches, then recursive, then weak, then "the only
# letter mentioned". CMMLU guesses at random when nothing matches; we return None (counted wrong),
# as C-Eval does, so a run is reproducible.
CMMLU_SINGLE = [(re.compile(p, re.M), g) for p, g in (
    (r"答案(选项)?(是|为)：? ?([ABCD])", 3), (r"答案(是|为)选项 ?([ABCD])", 2), (r"故?选择?：? ?([ABCD])", 1),
    (r"([ABCD]) ?选?项(是|为)?正确", 1), (r"正确的?选项(是|为) ?([ABCD])", 2), (r"答案(应该)?(是|为)([ABCD])", 3),
    (r"选项 ?([ABCD]) ?(是|为)?正确", 1), (r"选择答案 ?([ABCD])", 1), (r"答案?：?([ABCD])", 1),
    (r"([ABCD])(选?项)?是?符合题意", 1), (r"答案选项：? ?([ABCD])", 1), (r"答案(选项)?为(.*?)([ABCD])", 3),
)]
CMMLU_RECURSIVE = [re.compile(p, re.M) for p in (r"([ABCD])(.*?)当选", r"([ABCD])(.*?)正确")]
CMMLU_WEAK = re.compile(r"[^不]是：? ?([ABCD])", re.M)
ONLY_LETTER = re.compile(r"^[^ABCD]*([ABCD])[^ABCD]*$")


def extract_answer(text: str) -> str | None:
    """The option a reply names: C-Eval's rules first, then CMMLU's more lenient chain; None if neither."""
    text = text.strip()
    if not text:
        return None
    return _ceval_answer(text) or _cmmlu_answer(text)


def _ceval_answer(text: str) -> str | None:
    if text[0] in LETTERS:
        return text[0]
    for pattern in CEVAL_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def _cmmlu_answer(text: str) -> str | None:
    for pattern, group in CMMLU_SINGLE:
        match = pattern.search(text)
        if match:
            return match.group(group)
    for pattern in CMMLU_RECURSIVE:
        answer = _last_recursive(pattern, text)
        if answer:
            return answer
    match = CMMLU_WEAK.search(text) or ONLY_LETTER.match(text)
    return match.group(1) if match else None


def _last_recursive(pattern: re.Pattern, text: str) -> str | None:
    """CMMLU's recursive rule: keep matching inside the previous match (minus its first character)."""
    match, answer = pattern.search(text), None
    while match:
        answer = match.group(1)
        match = pattern.search(match.group(0)[1:])
    return answer
