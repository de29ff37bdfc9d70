"""C-Eval / CMMLU evaluation: `run_evaluation(loaded, config)` plans, answers, scores, writes and stores.

The pieces: datasets.py (layouts, subjects, categories), protocols.py (ao, ppl, gen and the answer
regexes), run.py (the resumable loop), report.py (scores, table, chart, JSON, leaderboard),
lmeval.py (the same data as an lm-evaluation-harness task, for the agreement check), cli.py (typer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from danlu.chat import tokenize_segments
from danlu.errors import DanluError
from danlu.progress import Board

from . import report
from .datasets import Suite
from .protocols import AnswerOnly, Generate, Perplexity, wants_bos
from .run import EvalConfig, Plan, Prediction, PredictionLog, evaluate, few_shot_prefix, plan_questions, run_dir, write_config

__all__ = ["EvalConfig", "EvalOutcome", "engine_only", "make_protocol", "run_evaluation"]

#: Tokens kept free after the prompt: ao and ppl need one position (ppl: the option's tokens, ~20).
PROMPT_RESERVE = {"ao": 1, "ppl": 64, "gen": 64}


@dataclass
class EvalOutcome:
    """What a run produced: scores, every prediction, files written, and how fast the new answers came."""

    config: EvalConfig
    scores: report.Scores
    predictions: list[Prediction]
    folder: Path
    paths: dict[str, Path]
    answered_now: int
    elapsed_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def questions_per_s(self) -> float:
        return self.answered_now / self.elapsed_s if self.elapsed_s > 0 else 0.0


def engine_only(engine) -> SimpleNamespace:
    """A stand-in for `danlu.loader.Loaded` around a bare engine (bench, tests): enough for ao and ppl."""
    return SimpleNamespace(engine=engine, resolved=SimpleNamespace(spec=None), fmt=None)


def make_protocol(name: str, loaded, suite: Suite):
    """The protocol object for a loaded model (`danlu.loader.Loaded`)."""
    engine = loaded.engine
    if name == "ao":
        return AnswerOnly(engine, suite.answer_tail)
    if name == "ppl":
        return Perplexity(engine, suite.answer_tail)
    if name == "gen":
        return Generate(engine, _renderer(loaded), stop=_gen_stops(loaded))
    raise DanluError(f"未知的评测方式 {name!r}（可选 ao、ppl、gen）/ unknown protocol {name!r}: use ao, ppl or gen")


def _is_chat(loaded) -> bool:
    spec = loaded.resolved.spec
    return spec.chat if spec is not None else loaded.engine.capabilities.chat_template


def _renderer(loaded):
    """Chat models get the prompt as one user message in their template; base models get plain text."""
    engine = loaded.engine
    if _is_chat(loaded):
        return lambda prompt: tokenize_segments(engine, loaded.fmt.render([{"role": "user", "content": prompt}], True))
    return lambda prompt: engine.tokenize(prompt, add_bos=wants_bos(engine))


def _gen_stops(loaded) -> list[str]:
    spec = loaded.resolved.spec
    stops = list(loaded.fmt.stop_strings) + (list(spec.stop_strings) if spec else [])
    return stops if _is_chat(loaded) else stops + ["\n\n"]  # a base model goes on to invent the next question


def fit_to_context(plan: Plan, config: EvalConfig, engine, reserve: int) -> list[str]:
    """Drop shots from a subject whose longest prompt would not fit the context (CMMLU's rule); say so."""
    warnings = []
    for subject in plan.subjects:
        longest = max((plan.suite.question_text(q) for q in plan.questions[subject]), key=len, default="")
        shots = config.shots
        while shots > 0 and len(engine.tokenize(plan.prefixes[subject] + longest)) + reserve >= engine.n_ctx:
            shots -= 1
            plan.prefixes[subject] = few_shot_prefix(plan.suite, config, subject, shots)
        if shots < config.shots:
            warnings.append(f"{subject}: 上下文放不下 {config.shots} 个示例，改用 {shots} 个 / "
                            f"{config.shots} shots do not fit the context, used {shots}")
    return warnings


def run_evaluation(loaded, config: EvalConfig, home: Path, *, show_progress: bool = True,
                   db_path: Path | None = None) -> EvalOutcome:
    """Plan, answer (resuming a killed run), score, write report.md / chart.png / results.json, store."""
    plan = plan_questions(config)
    protocol = make_protocol(config.protocol, loaded, plan.suite)
    warnings = fit_to_context(plan, config, loaded.engine, PROMPT_RESERVE[config.protocol])
    folder = run_dir(home, config)
    write_config(folder, config)
    log = PredictionLog(folder / "predictions.jsonl")
    answered, start = _answer_all(plan, protocol, log, show_progress)
    elapsed = time.perf_counter() - start
    predictions = evaluate(plan, protocol, log)  # everything is logged now: this only reads it back
    scores = report.score(predictions, plan.suite)
    paths = report.write_outputs(folder, scores, predictions, plan.suite, config)
    if scores.n_questions:
        report.store(db_path or Path(home) / "danlu.db", config, scores)
    return EvalOutcome(config, scores, predictions, folder, paths, answered, elapsed, warnings)


def _answer_all(plan: Plan, protocol, log: PredictionLog, show_progress: bool) -> tuple[int, float]:
    """The loop behind a progress bar that shows questions per second; returns (answered now, start time)."""
    already = len([k for k in log.read() if k[0] in plan.questions])
    counted = [0]
    start = time.perf_counter()
    with Board(show_progress) as board:
        bar = board.count_bar(_rate_label(0.0), plan.total, completed=min(already, plan.total))

        def tick(_: Prediction) -> None:
            counted[0] += 1
            bar.advance(1)
            bar.update(description=_rate_label(counted[0] / max(time.perf_counter() - start, 1e-9)))

        evaluate(plan, protocol, log, on_answer=tick)
        bar.close()
    return counted[0], start


def _rate_label(rate: float) -> str:
    return f"评测 / eval {rate:.2f} 题/s q/s"
