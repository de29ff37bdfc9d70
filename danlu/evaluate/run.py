"""Running an evaluation: subjects in order, questions in file order, every answer logged as it is made.

Resumable: each prediction is appended (and flushed) to a JSONL log keyed by subject and question id
under `DANLU_HOME/evals/<run key>/predictions.jsonl`; the run key hashes the model, data, suite, split,
protocol and shots (and, when set, the thinking mode and gen's thinking budget), so the same command after a
kill skips what is done. A line cut off by the kill
is ignored. Questions of one subject run back to back, so the few-shot prefix stays in the KV cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from danlu.errors import DanluError

from .datasets import Question, Suite, get_suite, list_subjects, load_questions


@dataclass(frozen=True)
class EvalConfig:
    """What one run evaluates; `model` is the label results are stored under."""

    model: str
    data: Path
    suite: str = "ceval"
    split: str = "val"
    protocol: str = "ao"
    shots: int = 5
    subjects: tuple[str, ...] = ()
    limit: int | None = None
    thinking: str | None = None  # gen on a hybrid model: "on" | "off" ("both" names the side-by-side report); None: the template's default
    max_tokens: int | None = None  # gen: the thinking budget instead of the catalog's

    def key(self) -> str:
        """Stable id for resuming: the same settings give the same log (limit and subjects excluded, so
        a run widened later reuses what is done). Runs without a thinking mode or budget keep their old keys."""
        fields = [self.model, str(Path(self.data).resolve()), self.suite, self.split, self.protocol, self.shots]
        extras = {name: value for name, value in (("thinking", self.thinking), ("max_tokens", self.max_tokens))
                  if value is not None}
        raw = json.dumps(fields + [extras] if extras else fields)
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.model.split("/")[-1])[:40]
        mode = f"-{THINKING_SLUGS[self.thinking]}" if self.thinking in THINKING_SLUGS else ""
        return (f"{slug}-{self.suite}-{self.split}-{self.protocol}{mode}-{self.shots}shot-"
                f"{hashlib.sha1(raw.encode()).hexdigest()[:8]}")


THINKING_SLUGS = {"on": "think", "off": "nothink", "both": "think-vs-nothink"}


@dataclass(frozen=True)
class Prediction:
    subject: str
    id: str
    pred: str | None
    answer: str | None
    scores: tuple[float, ...] = ()
    text: str = ""  # gen: the whole reply, thinking included
    # gen: where the reply's tokens and seconds went (evaluate/thinking.py GenStats); 0 for ao and ppl
    reasoning_tokens: int = 0
    reasoning_s: float = 0.0
    answer_tokens: int = 0
    total_s: float = 0.0
    thinking_unfinished: bool = False  # cut inside its thinking: counted wrong, never read for a letter

    @property
    def correct(self) -> bool:
        return self.answer is not None and self.pred == self.answer


@dataclass
class Plan:
    """The questions to ask, grouped by subject, with each subject's few-shot prefix."""

    suite: Suite
    subjects: list[str]
    questions: dict[str, list[Question]]
    prefixes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(qs) for qs in self.questions.values())


class PredictionLog:
    """Append-only JSONL of predictions; reading it back skips a torn last line."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[tuple[str, str], Prediction]:
        if not self.path.exists():
            return {}
        done: dict[tuple[str, str], Prediction] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[(row["subject"], row["id"])] = Prediction(**{**row, "scores": tuple(row.get("scores", ()))})
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # the line a kill cut in half
        return done

    def append(self, prediction: Prediction) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(prediction), ensure_ascii=False) + "\n")
            fh.flush()


def plan_questions(config: EvalConfig) -> Plan:
    """Read the CSVs: chosen subjects (all by default), the first `limit` questions of each."""
    suite = get_suite(config.suite)
    if config.split not in suite.splits:
        raise DanluError(f"{suite.name} 没有 {config.split} 划分 / has no split {config.split!r}: {', '.join(suite.splits)}")
    available = list_subjects(suite, config.data, config.split)
    missing = [s for s in config.subjects if s not in available]
    if missing:
        raise DanluError(f"数据里没有这些科目 / subjects not in the data: {', '.join(missing)}")
    subjects = list(config.subjects) or available
    questions = {s: load_questions(suite, config.data, config.split, s)[: config.limit] for s in subjects}
    plan = Plan(suite, subjects, questions)
    plan.prefixes = {s: few_shot_prefix(suite, config, s) for s in subjects}
    return plan


def few_shot_prefix(suite: Suite, config: EvalConfig, subject: str, shots: int | None = None) -> str:
    """The subject's header, then the first `shots` dev questions with their answers."""
    k = config.shots if shots is None else shots
    examples = load_questions(suite, config.data, "dev", subject)[:k] if k > 0 else []
    if len(examples) < k:
        raise DanluError(f"{subject} 的 dev 只有 {len(examples)} 题，不够 {k} 个示例 / dev has {len(examples)} questions, fewer than {k} shots")
    return suite.header(subject) + "".join(suite.shot_text(q) for q in examples)


def iter_pending(plan: Plan, done: dict) -> Iterator[tuple[str, Question]]:
    for subject in plan.subjects:
        for question in plan.questions[subject]:
            if (subject, question.id) not in done:
                yield subject, question


def evaluate(plan: Plan, protocol, log: PredictionLog,
             on_answer: Callable[[Prediction], None] = lambda p: None) -> list[Prediction]:
    """Answer every pending question (logging each at once) and return all predictions of the plan."""
    done = log.read()
    for subject, question in iter_pending(plan, done):
        text = plan.suite.question_text(question)
        answer = protocol.answer(plan.prefixes[subject], text, question)
        stats = asdict(answer.stats) if answer.stats is not None else {}
        prediction = Prediction(subject, question.id, answer.pred, question.answer, answer.scores, answer.text, **stats)
        log.append(prediction)
        done[(subject, question.id)] = prediction
        on_answer(prediction)
    return [done[(s, q.id)] for s in plan.subjects for q in plan.questions[s]]


def run_dir(home: Path, config: EvalConfig) -> Path:
    return Path(home) / "evals" / config.key()


def write_config(folder: Path, config: EvalConfig) -> None:
    """Keep the settings beside the log (for people reading the folder, and for the leaderboard)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(config), "data": str(Path(config.data).resolve()), "subjects": list(config.subjects),
                "updated": time.time()}
    (folder / "config.json").write_text(json.dumps(settings, ensure_ascii=False, indent=2), encoding="utf-8")
