"""C-Eval / CMMLU evaluation: `run_evaluation(loaded, config)` plans, answers, scores, writes and stores;
`run_thinking_modes(loaded, config)` runs a hybrid model's gen with thinking on, then off, and writes them
side by side.

The pieces: datasets.py (layouts, subjects, categories), protocols.py (ao, ppl, gen and the answer
regexes), thinking.py (thinking modes, gen's token limit, a reply split and timed), run.py (the resumable
loop), report.py (scores, table, chart, JSON, leaderboard), side_by_side.py (thinking on vs off),
lmeval.py (the same data as an lm-evaluation-harness task, for the agreement check), cli.py (typer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from danlu.chat import tokenize_segments
from danlu.errors import DanluError
from danlu.progress import Board

from . import report, side_by_side
from . import thinking as modes
from .datasets import Suite, get_suite
from .protocols import AnswerOnly, Generate, Perplexity, wants_bos
from .run import EvalConfig, Plan, Prediction, PredictionLog, evaluate, few_shot_prefix, plan_questions, run_dir, write_config

__all__ = ["EvalConfig", "EvalOutcome", "ThinkingComparison", "engine_only", "make_protocol", "run_evaluation",
           "run_thinking_modes"]

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


@dataclass
class ThinkingComparison:
    """A hybrid model's gen run with thinking on and off, and the side-by-side report of the two."""

    outcomes: dict[str, EvalOutcome]  # "on", "off"
    folder: Path
    paths: dict[str, Path]


def make_protocol(name: str, loaded, suite: Suite, *, thinking: str | None = None, max_tokens: int | None = None):
    """The protocol object for a loaded model (`danlu.loader.Loaded`). For gen, `thinking` ("on" / "off", None:
    the template's default) is the template's switch and `max_tokens` the thinking budget."""
    engine = loaded.engine
    if name == "ao":
        return AnswerOnly(engine, suite.answer_tail)
    if name == "ppl":
        return Perplexity(engine, suite.answer_tail)
    if name == "gen":
        return Generate(engine, _renderer(loaded, modes.switch_value(thinking)),
                        max_tokens=modes.gen_max_tokens(loaded, thinking, max_tokens), stop=_gen_stops(loaded),
                        splitter=modes.splitter_factory(loaded, thinking))
    raise DanluError(f"未知的评测方式 {name!r}（可选 ao、ppl、gen）/ unknown protocol {name!r}: use ao, ppl or gen")


def _is_chat(loaded) -> bool:
    spec = loaded.resolved.spec
    return spec.chat if spec is not None else loaded.engine.capabilities.chat_template


def _renderer(loaded, enable_thinking: bool | None = None):
    """Chat models get the prompt as one user message in their template (with the thinking switch when a run
    sets it); base models get plain text."""
    engine = loaded.engine
    options = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    if _is_chat(loaded):
        return lambda prompt: tokenize_segments(
            engine, loaded.fmt.render([{"role": "user", "content": prompt}], True, **options))
    return lambda prompt: engine.tokenize(prompt, add_bos=wants_bos(engine))


def _gen_stops(loaded) -> list[str]:
    spec = loaded.resolved.spec
    stops = list(loaded.fmt.stop_strings) + (list(spec.stop_strings) if spec else [])
    return stops if _is_chat(loaded) else stops + ["\n\n"]  # a base model goes on to invent the next question


def _longest_question(plan: Plan, subject: str) -> str:
    return max((plan.suite.question_text(q) for q in plan.questions[subject]), key=len, default="")


def fit_to_context(plan: Plan, config: EvalConfig, engine, reserve: int) -> list[str]:
    """Drop shots from a subject whose longest prompt would not fit the context (CMMLU's rule); say so."""
    warnings = []
    for subject in plan.subjects:
        longest = _longest_question(plan, subject)
        shots = config.shots
        while shots > 0 and len(engine.tokenize(plan.prefixes[subject] + longest)) + reserve >= engine.n_ctx:
            shots -= 1
            plan.prefixes[subject] = few_shot_prefix(plan.suite, config, subject, shots)
        if shots < config.shots:
            warnings.append(f"{subject}: 上下文放不下 {config.shots} 个示例，改用 {shots} 个 / "
                            f"{config.shots} shots do not fit the context, used {shots}")
    return warnings


def gen_warnings(plan: Plan, protocol, config: EvalConfig, loaded) -> list[str]:
    """What a gen run should know before it starts: a thinking budget that no reply can use, or a reply limit
    the context cannot hold (those replies stop at the context's end, and a thinking one counts as unfinished)."""
    if config.protocol != "gen":
        return []
    warnings = []
    if config.max_tokens is not None and not modes.thinks(loaded, config.thinking):
        warnings.append("--max-tokens 是思考预算，这次的回答不思考，用不上 / --max-tokens is the thinking budget, and "
                        "this run's replies do not think: it has no effect")
    longest = max((len(protocol.render(plan.prefixes[s] + _longest_question(plan, s))) for s in plan.subjects),
                  default=0)
    limit, n_ctx = protocol.params.max_tokens, loaded.engine.n_ctx
    if longest + limit > n_ctx:
        warnings.append(f"提示约 {longest} 个 token，加上回答上限 {limit} 超出上下文 {n_ctx}：回答会在上下文用尽处截断；"
                        f"请加大 --ctx 或减小 --max-tokens / a prompt of about {longest} tokens plus the reply limit "
                        f"{limit} exceeds the context {n_ctx}: replies stop where it runs out; raise --ctx or lower "
                        "--max-tokens")
    return warnings


def run_evaluation(loaded, config: EvalConfig, home: Path, *, show_progress: bool = True,
                   db_path: Path | None = None) -> EvalOutcome:
    """Plan, answer (resuming a killed run), score, write report.md / chart.png / results.json, store."""
    _check_gen_options(loaded, config)
    plan = plan_questions(config)
    protocol = make_protocol(config.protocol, loaded, plan.suite, thinking=config.thinking,
                             max_tokens=config.max_tokens)
    warnings = fit_to_context(plan, config, loaded.engine, PROMPT_RESERVE[config.protocol])
    warnings += gen_warnings(plan, protocol, config, loaded)
    folder = run_dir(home, config)
    write_config(folder, config)
    log = PredictionLog(folder / "predictions.jsonl")
    answered, start = _answer_all(plan, protocol, log, show_progress)
    elapsed = time.perf_counter() - start
    predictions = evaluate(plan, protocol, log)  # everything is logged now: this only reads it back
    scores = report.score(predictions, plan.suite)
    paths = report.write_outputs(folder, scores, predictions, plan.suite, config)
    if scores.n_questions:
        summary = modes.summarize(predictions) if config.protocol == "gen" else None
        report.store(db_path or Path(home) / "danlu.db", config, scores, summary)
    return EvalOutcome(config, scores, predictions, folder, paths, answered, elapsed, warnings)


def run_thinking_modes(loaded, config: EvalConfig, home: Path, *, show_progress: bool = True,
                       db_path: Path | None = None) -> ThinkingComparison:
    """gen with thinking on, then off, on the same questions (each run stored with its mode), then the side-by-side
    report in the folder of the config with `thinking="both"`. The thinking budget is the on run's: the off run
    is the plain `--thinking off` run (its key, its log)."""
    both = replace(config, thinking="both")
    modes.check_switch(loaded, "both", config.protocol)
    configs = {"on": replace(config, thinking="on"), "off": replace(config, thinking="off", max_tokens=None)}
    outcomes = {mode: run_evaluation(loaded, configs[mode], home, show_progress=show_progress, db_path=db_path)
                for mode in modes.MODES}
    folder = run_dir(home, both)
    write_config(folder, both)
    runs = {mode: (outcome.scores, outcome.predictions) for mode, outcome in outcomes.items()}
    paths = side_by_side.write_outputs(folder, runs, get_suite(config.suite), both)
    return ThinkingComparison(outcomes, folder, paths)


def _check_gen_options(loaded, config: EvalConfig) -> None:
    """The thinking switch and budget belong to gen; the switch only to a model that has one."""
    if config.thinking == "both":
        raise DanluError("thinking=\"both\" 是两次评测：请用 run_thinking_modes / thinking=\"both\" is two runs: use "
                         "run_thinking_modes")
    modes.check_switch(loaded, config.thinking, config.protocol)
    if config.max_tokens is not None and config.protocol != "gen":
        raise DanluError("--max-tokens 只用于 --protocol gen（思考预算）/ --max-tokens applies to --protocol gen only "
                         "(the thinking budget)")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise DanluError("--max-tokens 至少为 1 / --max-tokens must be at least 1")


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
